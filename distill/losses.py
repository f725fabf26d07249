"""The distillation loss: a registered Keras layer in the training graph, plus its identity loss and parts.

No Lambda, no closures: everything here reloads from `.keras` files with `safe_mode=True` once this
module is imported. Feature-distillation losses go beside `DistillationLoss`, each with its formula
and paper in the docstring and a numpy golden-value test (tests/test_losses.py).
"""

from __future__ import annotations

import keras
from keras import ops

SCALE_RULES = ("T", "T2", "1")
HARD_LOSSES = ("bce", "lovasz")


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


def lovasz_hinge(labels, logits):
    """Per-image binary Lovasz hinge (Berman, Rannen Triki & Blaschko, "The Lovasz-Softmax loss: A tractable
    surrogate for the optimization of the intersection-over-union measure in neural networks", CVPR 2018).

    For each image, over its labelled pixels i (label y_i in {0, 1}; pixels labelled -1 are left out):

        e_i  = 1 - z_i * (2 y_i - 1)                          hinge errors of the logits z
        pi   = the order that sorts e descending; g_k = y_pi(k)   (the labels in that order)
        J_k  = 1 - (G - sum_{j<=k} g_j) / (G + sum_{j<=k} (1 - g_j)),   G = sum_j g_j
        loss = sum_k relu(e_pi(k)) * (J_k - J_{k-1}),          J_0 = 0

    J_k - J_{k-1} is the gradient of the Lovasz extension of the Jaccard loss 1 - IoU(salt) at the
    sorted errors (Berman's `lovasz_grad`), so the loss is a convex, piecewise-linear surrogate of
    the image's salt IoU loss. An image without salt gets relu(max error) (J = 1 from the first pixel);
    an image without labelled pixels gets 0. Returns the (B,) per-image losses; Keras' loss reduction
    then takes the mean over the images of the batch (unlabelled images included, as zeros), as
    Berman's `lovasz_hinge(per_image=True, ignore=-1)` does.

    Unlabelled pixels get error -1 and label 0: they sort behind every positive error, so the terms
    with relu(e) > 0 see exactly the labelled pixels' cumulative sums; their own terms are 0. Ties do
    not matter (the sum over a tied block telescopes). keras.ops only: torch, jax and tensorflow.
    """
    n = 1
    for d in logits.shape[1:]:
        n *= int(d)
    z = ops.reshape(logits, (-1, n))
    y = ops.reshape(ops.cast(labels, z.dtype), (-1, n))
    labelled = y >= 0.0
    y = ops.where(labelled, y, 0.0)
    errors = ops.where(labelled, 1.0 - z * (2.0 * y - 1.0), -1.0)
    errors_sorted, perm = ops.top_k(errors, k=n, sorted=True)  # descending
    gt_sorted = ops.take_along_axis(y, perm, axis=-1)
    gts = ops.sum(gt_sorted, axis=-1, keepdims=True)
    intersection = gts - ops.cumsum(gt_sorted, axis=-1)
    union = gts + ops.cumsum(1.0 - gt_sorted, axis=-1)  # >= 1: the first term counts one pixel
    jaccard = 1.0 - intersection / union
    grad = ops.concatenate([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], axis=-1)
    return ops.sum(ops.relu(errors_sorted) * ops.stop_gradient(grad), axis=-1)


@keras.saving.register_keras_serializable(package="kdseg")
class DistillationLoss(keras.layers.Layer):
    """Per-sample distillation loss, output as a (batch, 3) tensor [total, hard, soft].

        total = (1 - lam) * hard + lam * s(T) * soft
        hard  = mean_pixels BCE(y_true, sigmoid(z))            (+ 1 - soft Dice if dice=True)
              or lovasz_hinge(y_true, z)                       (hard_loss="lovasz" while lovasz_on = 1)
        soft  = mean_pixels BCE(teacher_soft, sigmoid(z / T))

    z are the student logits; teacher_soft = sigmoid(z_teacher / T) comes from the head-swapped
    teacher. Both BCEs are computed from logits (stable for any z). The soft gradient w.r.t. z is
    (sigmoid(z/T) - teacher_soft) / T: zero when student and teacher logits agree. s(T) is "T"
    (the design card's rule), "T2" (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a
    Neural Network") or "1". lam = 0 is the hard-only baseline; then the teacher input may be
    omitted (inputs [y_true, z]) and soft is reported as 0.

    Inputs: [y_true (B,H,W,1) in [0,1], student logits (B,H,W,1)] + optionally [teacher_soft].
    Pixels where y_true < 0 are unlabelled: they count in the soft term only.

    hard_loss="lovasz" (the final phase of TGS Salt solutions): the layer holds a non-trainable scalar
    `lovasz_on`, 1 when built; while it is 1 the hard term is the Lovasz hinge, while 0 it is the BCE
    above. training.loop (--lovasz-epochs N) holds it at 0 until the last N epochs. It is saved with
    the training graph's weights (checkpoints); the inference model (student.keras) does not hold it.
    hard_loss="bce" (default) creates no variable: the graph is the one of earlier versions.
    """

    def __init__(self, lam: float = 0.9, temperature: float = 2.0, scale: str = "T", dice: bool = False, hard_loss: str = "bce", **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"lambda must be in [0, 1], got {lam}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if hard_loss not in HARD_LOSSES:
            raise ValueError(f"unknown hard loss {hard_loss!r}; choose one of {', '.join(HARD_LOSSES)}")
        self.lam, self.temperature, self.scale, self.dice = float(lam), float(temperature), scale, bool(dice)
        self.s = scale_factor(scale, temperature)
        self.hard_loss = hard_loss
        if hard_loss == "lovasz":
            self.lovasz_on = self.add_weight(shape=(), initializer="ones", trainable=False, name="lovasz_on")

    def _bce_hard(self, y, z, labelled, axes):
        n_lab = ops.maximum(ops.sum(labelled, axis=axes), 1.0)
        hard = ops.sum(bce_with_logits(y, z) * labelled, axis=axes) / n_lab
        if self.dice:
            p = ops.sigmoid(z) * labelled
            inter = ops.sum(p * y, axis=axes)
            hard = hard + 1.0 - (2.0 * inter + 1.0) / (ops.sum(p, axis=axes) + ops.sum(y * labelled, axis=axes) + 1.0)
        return hard

    def call(self, inputs):
        y_raw, z = inputs[0], inputs[1]
        labelled = ops.cast(y_raw >= 0.0, z.dtype)
        y = ops.maximum(y_raw, 0.0)
        axes = tuple(range(1, len(z.shape)))
        if self.hard_loss == "lovasz":  # one branch runs: no sort during the BCE epochs
            hard = ops.cond(self.lovasz_on > 0.5, lambda: lovasz_hinge(y_raw, z), lambda: self._bce_hard(y, z, labelled, axes))
        else:
            hard = self._bce_hard(y, z, labelled, axes)
        if len(inputs) > 2:
            soft = ops.mean(bce_with_logits(inputs[2], z / self.temperature), axis=axes)
        else:
            soft = ops.zeros_like(hard)
        total = (1.0 - self.lam) * hard + self.lam * self.s * soft
        return ops.stack([total, hard, soft], axis=-1)

    def compute_output_shape(self, input_shapes):
        return (input_shapes[0][0], 3)

    def get_config(self):
        config = {**super().get_config(), "lam": self.lam, "temperature": self.temperature, "scale": self.scale, "dice": self.dice}
        if self.hard_loss != "bce":  # the default graph's config stays as it was
            config["hard_loss"] = self.hard_loss
        return config


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
