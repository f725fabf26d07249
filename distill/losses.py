"""The distillation loss: a registered Keras layer in the training graph, plus its identity loss and parts.

No Lambda, no closures: everything here reloads from `.keras` files with `safe_mode=True` once this
module is imported. The feature-distillation losses (FitNets hints, attention transfer, channel-wise
distillation: --feature-loss) sit beside `DistillationLoss`, each with its formula and paper in the
docstring and a numpy golden-value test (tests/test_feature_kd.py); `AddFeatureTerm` adds them to the total.
"""

from __future__ import annotations

import keras
from keras import ops

from common.choices import FEATURE_LOSSES, HARD_LOSSES, SCALE_RULES


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


# ---------------------------------------------------------------- feature distillation (the teacher in the graph)
#
# Each layer takes [student feature (B, h, w, c_s), teacher feature (B, H, W, c_t)] (named stage outputs of
# both models, distill.graph) and returns the per-image loss (B,); Keras' mean over the batch then gives the
# papers' batch means. They need the teacher's features, so the teacher must run in the graph (--teacher, not
# --teacher-cache). The 1x1 adapters (FitNets, CWD) are trainable variables of the loss layer: they live in the
# training graph (and its checkpoints) only, never in the student that is saved and exported.


def resize_to(x, size):
    """x (B, h, w, c) bilinearly resized to `size` (H, W) (half-pixel centres, no antialiasing); x itself when h, w = H, W."""
    if tuple(x.shape[1:3]) == tuple(size):
        return x
    return ops.image.resize(x, tuple(int(s) for s in size), interpolation="bilinear", antialias=False, data_format="channels_last")


class _AdaptedFeatureLoss(keras.layers.Layer):
    """Shared by FitNets and CWD: a 1x1 conv (with bias) from the student's channels to the teacher's, made in build."""

    def build(self, input_shapes):
        s_shape, t_shape = input_shapes
        self.adapter = keras.layers.Conv2D(int(t_shape[-1]), 1, name="adapter", dtype=self.dtype_policy)
        self.adapter.build(tuple(s_shape))

    def adapt(self, inputs):
        """(adapted student feature resized to the teacher's size, teacher feature without gradient)."""
        s, t = inputs
        return resize_to(self.adapter(s), t.shape[1:3]), ops.stop_gradient(t)

    def compute_output_shape(self, input_shapes):
        return (input_shapes[0][0],)


@keras.saving.register_keras_serializable(package="kdseg")
class FitNetsLoss(_AdaptedFeatureLoss):
    """FitNets hint loss (Romero et al., ICLR 2015, "FitNets: Hints for Thin Deep Nets"), per image:

        loss = mean_{pixels, channels} (r(F_s) - F_t)^2,      r = 1x1 conv adapter (the paper's regressor)

    F_s is the student's feature (the "guided" layer), F_t the teacher's ("hint"); r maps the student's
    channels to the teacher's and is trained with the student (it is dropped afterwards). When the spatial
    sizes differ, r(F_s) is bilinearly resized to the teacher's. The paper trains the hint stage first and
    then the whole student with KD; here the hint is one more term of the loss, weighted by --feature-weight.
    Zero when r(F_s) = F_t.
    """

    def call(self, inputs):
        s, t = self.adapt(inputs)
        return ops.mean(ops.square(s - t), axis=(1, 2, 3))


@keras.saving.register_keras_serializable(package="kdseg")
class AttentionTransferLoss(keras.layers.Layer):
    """Attention transfer (Zagoruyko & Komodakis, ICLR 2017, "Paying More Attention to Attention: Improving
    the Performance of Convolutional Neural Networks via Attention Transfer"), per image:

        A(F)  = mean_c |F_c|^p  (p = 2), flattened over the H*W positions, Q = A / ||A||_2
        loss  = mean_{positions} (Q_s - Q_t)^2

    This is the paper's code (github.com/szagoruyko/attention-transfer, `at_loss`:
    (at(x) - at(y)).pow(2).mean() with at(x) = F.normalize(x.pow(p).mean(1).view(B, -1))): the squared
    distance averaged over positions, not the unsquared 2-norm of the paper's eq. 2. The paper weights it
    by beta / 2 with beta = 1000 (summed over layer pairs): --feature-weight plays that part. No adapter:
    the channel counts may differ. When the spatial sizes differ, the student's map A_s (before the
    normalisation) is bilinearly resized to the teacher's. Zero when F_s = F_t (or any positive multiple).
    """

    def __init__(self, p: float = 2.0, **kwargs):
        super().__init__(**kwargs)
        if not p > 0:
            raise ValueError(f"the attention power p must be > 0, got {p}")
        self.p = float(p)

    def attention(self, f):
        """A(F) = mean_c |F_c|^p, (B, H, W, 1)."""
        return ops.mean(ops.square(f) if self.p == 2.0 else ops.power(ops.abs(f), self.p), axis=-1, keepdims=True)

    @staticmethod
    def normalise(a):
        q = ops.reshape(a, (-1, int(a.shape[1]) * int(a.shape[2])))
        # F.normalize: q / max(||q||, eps), eps = 1e-12, as sqrt(max(||q||^2, eps^2)): a finite gradient at an all-zero map too
        return q / ops.sqrt(ops.maximum(ops.sum(ops.square(q), axis=-1, keepdims=True), 1e-24))

    def call(self, inputs):
        s, t = inputs
        a_t = self.attention(ops.stop_gradient(t))
        a_s = resize_to(self.attention(s), a_t.shape[1:3])
        return ops.mean(ops.square(self.normalise(a_s) - self.normalise(a_t)), axis=-1)

    def compute_output_shape(self, input_shapes):
        return (input_shapes[0][0],)

    def get_config(self):
        return {**super().get_config(), "p": self.p}


@keras.saving.register_keras_serializable(package="kdseg")
class ChannelWiseLoss(_AdaptedFeatureLoss):
    """Channel-wise distillation (Shu, Liu, Gao, Yan & Shen, ICCV 2021, "Channel-wise Knowledge Distillation
    for Dense Prediction"), per image:

        P_c(F) = softmax over the H*W positions of F_c / tau          (one distribution per channel c)
        loss   = tau^2 / C * sum_c KL(P_c(F_t) || P_c(r(F_s)))         (KL summed over the positions)

    r is a 1x1 conv adapter from the student's channels to the teacher's C (trained with the student,
    dropped afterwards); when the spatial sizes differ, r(F_s) is bilinearly resized to the teacher's.
    Keras' mean over the N images of a batch gives the authors' code (mmrazor ChannelWiseDivergence):
    sum(KL) * tau^2 / (C * N). tau = 4 is the paper's default. Zero when r(F_s) = F_t.
    """

    def __init__(self, tau: float = 4.0, **kwargs):
        super().__init__(**kwargs)
        if not tau > 0:
            raise ValueError(f"the temperature tau must be > 0, got {tau}")
        self.tau = float(tau)

    def call(self, inputs):
        s, t = self.adapt(inputs)
        n, c = int(t.shape[1]) * int(t.shape[2]), int(t.shape[-1])
        log_ps = ops.log_softmax(ops.reshape(s, (-1, n, c)) / self.tau, axis=1)
        log_pt = ops.log_softmax(ops.reshape(t, (-1, n, c)) / self.tau, axis=1)
        kl = ops.sum(ops.exp(log_pt) * (log_pt - log_ps), axis=(1, 2))
        return kl * (self.tau**2 / c)

    def get_config(self):
        return {**super().get_config(), "tau": self.tau}


def feature_loss_layer(kind: str, name: str) -> keras.layers.Layer:
    """The loss layer of --feature-loss `kind` (FEATURE_LOSSES), in float32 under mixed precision too."""
    layers = {"fitnets": FitNetsLoss, "at": AttentionTransferLoss, "cwd": ChannelWiseLoss}
    if kind not in layers:
        raise ValueError(f"unknown feature loss {kind!r}; choose one of {', '.join(FEATURE_LOSSES)}")
    return layers[kind](name=name, dtype="float32")


@keras.saving.register_keras_serializable(package="kdseg")
class AddFeatureTerm(keras.layers.Layer):
    """[total, hard, soft] (DistillationLoss) and the feature losses (B,) each -> (B, 4) [total + w * feat, hard, soft, feat].

    feat = the sum of the feature losses (one per matched layer pair), unweighted; training.loop logs it
    as the LossPart "feat". Only in graphs with feature distillation: the others keep three columns.
    """

    def __init__(self, weight: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        if not weight >= 0:
            raise ValueError(f"the feature weight must be >= 0, got {weight}")
        self.weight = float(weight)

    def call(self, inputs):
        parts, feats = inputs[0], inputs[1:]
        feat = feats[0]
        for f in feats[1:]:
            feat = feat + f
        return ops.concatenate([parts[:, :1] + self.weight * feat[:, None], parts[:, 1:3], feat[:, None]], axis=-1)

    def compute_output_shape(self, input_shapes):
        return (input_shapes[0][0], 4)

    def get_config(self):
        return {**super().get_config(), "weight": self.weight}


@keras.saving.register_keras_serializable(package="kdseg")
class IdentityLoss(keras.losses.Loss):
    """The model already outputs its loss (column 0 of DistillationLoss); y_true is ignored."""

    def call(self, y_true, y_pred):
        return y_pred[:, 0]


@keras.saving.register_keras_serializable(package="kdseg")
class LossPart(keras.metrics.Mean):
    """Mean of one column of the training graph's output (1 = hard part, 2 = soft part, 3 = feature part: AddFeatureTerm)."""

    def __init__(self, index: int = 1, name: str = "hard", **kwargs):
        super().__init__(name=name, **kwargs)
        self.index = int(index)

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(y_pred[:, self.index], sample_weight=sample_weight)

    def get_config(self):
        return {**super().get_config(), "index": self.index}
