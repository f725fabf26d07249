"""The distillation loss: a registered Keras layer in the training graph, plus its identity loss and parts.

No Lambda, no closures: everything here reloads from `.keras` files with `safe_mode=True` once this
module is imported. Feature-distillation losses go beside `DistillationLoss`, each with its formula
and paper in the docstring and a numpy golden-value test (tests/test_losses.py).
"""

from __future__ import annotations

import keras
from keras import ops

SCALE_RULES = ("T", "T2", "1")


def scale_factor(rule: str, temperature: float) -> float:
    """s(T): "T" (design card rule for sigmoid outputs), "T2" (Hinton et al. 2015), "1"."""
    if rule == "T":
        return float(temperature)
    if rule == "T2":
        return float(temperature) ** 2
    if rule == "1":
        return 1.0
    raise ValueError(f"unknown s(T) rule {rule!r}; choose one of {', '.join(SCALE_RULES)}")


def bce_with_logits(target, logits):
    """Elementwise BCE(target, sigmoid(logits)), stable for any logit: max(z,0) - z*t + log1p(exp(-|z|))."""
    return ops.maximum(logits, 0.0) - logits * target + ops.log1p(ops.exp(-ops.abs(logits)))


@keras.saving.register_keras_serializable(package="kdseg")
class DistillationLoss(keras.layers.Layer):
    """Per-sample distillation loss, output as a (batch, 3) tensor [total, hard, soft].

        total = (1 - lam) * hard + lam * s(T) * soft
        hard  = mean_pixels BCE(y_true, sigmoid(z))            (+ 1 - soft Dice if dice=True)
        soft  = mean_pixels BCE(teacher_soft, sigmoid(z / T))

    z are the student logits; teacher_soft = sigmoid(z_teacher / T) comes from the head-swapped
    teacher. Both BCEs are computed from logits (stable for any z). The soft gradient w.r.t. z is
    (sigmoid(z/T) - teacher_soft) / T: zero when student and teacher logits agree. s(T) is "T"
    (the design card's rule), "T2" (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a
    Neural Network") or "1". lam = 0 is the hard-only baseline; then the teacher input may be
    omitted (inputs [y_true, z]) and soft is reported as 0.

    Inputs: [y_true (B,H,W,1) in [0,1], student logits (B,H,W,1)] + optionally [teacher_soft].
    Pixels where y_true < 0 are unlabelled: they count in the soft term only.
    """

    def __init__(self, lam: float = 0.9, temperature: float = 2.0, scale: str = "T", dice: bool = False, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"lambda must be in [0, 1], got {lam}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.lam, self.temperature, self.scale, self.dice = float(lam), float(temperature), scale, bool(dice)
        self.s = scale_factor(scale, temperature)

    def call(self, inputs):
        y, z = inputs[0], inputs[1]
        labelled = ops.cast(y >= 0.0, z.dtype)
        y = ops.maximum(y, 0.0)
        axes = tuple(range(1, len(z.shape)))
        n_lab = ops.maximum(ops.sum(labelled, axis=axes), 1.0)
        hard = ops.sum(bce_with_logits(y, z) * labelled, axis=axes) / n_lab
        if self.dice:
            p = ops.sigmoid(z) * labelled
            inter = ops.sum(p * y, axis=axes)
            hard = hard + 1.0 - (2.0 * inter + 1.0) / (ops.sum(p, axis=axes) + ops.sum(y * labelled, axis=axes) + 1.0)
        if len(inputs) > 2:
            soft = ops.mean(bce_with_logits(inputs[2], z / self.temperature), axis=axes)
        else:
            soft = ops.zeros_like(hard)
        total = (1.0 - self.lam) * hard + self.lam * self.s * soft
        return ops.stack([total, hard, soft], axis=-1)

    def compute_output_shape(self, input_shapes):
        return (input_shapes[0][0], 3)

    def get_config(self):
        return {**super().get_config(), "lam": self.lam, "temperature": self.temperature, "scale": self.scale, "dice": self.dice}


@keras.saving.register_keras_serializable(package="kdseg")
class IdentityLoss(keras.losses.Loss):
    """The model already outputs its loss (column 0 of DistillationLoss); y_true is ignored."""

    def call(self, y_true, y_pred):
        return y_pred[:, 0]


@keras.saving.register_keras_serializable(package="kdseg")
class LossPart(keras.metrics.Mean):
    """Mean of one column of the DistillationLoss output (1 = hard part, 2 = soft part)."""

    def __init__(self, index: int = 1, name: str = "hard", **kwargs):
        super().__init__(name=name, **kwargs)
        self.index = int(index)

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(y_pred[:, self.index], sample_weight=sample_weight)

    def get_config(self):
        return {**super().get_config(), "index": self.index}
