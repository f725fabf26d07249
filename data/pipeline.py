"""Preprocessing and batches for training.

Preprocessing is `pi.tgs_common.preprocess`, the same numpy code the Raspberry Pi runs, driven by
one spec dict (`pi.sidecar.make_spec`: input size, pad or resize) that is saved next to every model. Augmentation is a
horizontal flip (seismic sections have an up and a down, so no vertical flips); `augment="strong"` adds shifts,
small zooms and brightness/contrast (data.augment), `mixup` mixes pairs of unlabelled images.
"""

from __future__ import annotations

import keras
import numpy as np

from common.choices import AUGMENTS
from data import augment as aug
from pi.tgs_common import postprocess, preprocess


def prep_images(images: np.ndarray, spec: dict) -> np.ndarray:
    """uint8 (N, 101, 101) -> float32 (N, S, S, 1) in [0, 1]."""
    return preprocess(images, spec)


def prep_images_unscaled(images: np.ndarray, spec: dict) -> np.ndarray:
    """uint8 (N, 101, 101) -> (N, S, S, 1) padded (uint8, a quarter of float32's bytes) or resized (float32), NOT scaled.

    What the training batches carry: the training graph scales by spec["scale"] on its way in
    (distill.graph, input_scale), which gives exactly prep_images' values for padded images.
    """
    x = preprocess(images, {**spec, "scale": 1.0})
    return x.astype(np.uint8) if spec.get("resize_mode", "pad") == "pad" else x


def prep_masks(masks: np.ndarray, spec: dict) -> np.ndarray:
    """bool (N, 101, 101) -> float32 (N, S, S, 1) targets, padded/resized exactly like the images."""
    return preprocess(masks.astype(np.uint8) * 255, spec)


def crop_probs(probs: np.ndarray, spec: dict) -> np.ndarray:
    """Model output (N, S, S, 1) -> (N, 101, 101) probabilities on the original pixels."""
    return postprocess(np.asarray(probs), spec)


class Batches(keras.utils.PyDataset):
    """Shuffled, flipped batches of {"image", "mask"[, "teacher_logits"]} for the loss-layer graph.

    Optional unlabelled images join every batch (`n_unlabelled` per batch) with mask -1, which
    the loss layer counts in the soft term only. With cached teacher logits `t` (N, 2, S, S, 1):
    view 0 for the image, view 1 for its flip, so a flipped image gets the teacher's output on
    the flipped image. The target is a dummy: the model outputs its loss.

    augment="strong" (data.augment.strong): after the flips, every image is shifted, zoomed and
    jittered, each labelled mask warped with its image; images then travel as float32 grey levels.
    mixup > 0 (data.augment.mixup): each batch's unlabelled images are mixed in pairs with weights
    ~ Beta(mixup, mixup). Neither can follow cached teacher logits (the cache holds only the image and
    its flip), so both refuse `t`. augment="flip" with mixup 0 gives the batches of earlier versions, byte for byte.
    """

    def __init__(
        self,
        x,
        y,
        batch_size=32,
        shuffle=True,
        flip=True,
        seed=0,
        unlabelled_x=None,
        n_unlabelled=0,
        t=None,
        unlabelled_t=None,
        multiple_of=1,
        augment="flip",
        mixup=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if augment not in AUGMENTS:
            raise ValueError(f"augment {augment!r} must be one of {', '.join(AUGMENTS)}")
        if (augment != "flip" or mixup) and (t is not None or unlabelled_t is not None):
            raise ValueError("strong augmentation and mixup need the teacher in the graph: cached logits hold only the image and its flip")
        self.augment, self.mixup = augment, float(mixup)
        self.x, self.t = x, t
        # masks are 0/1 after reflect padding: int8 (a quarter of float32's bytes); resized masks keep their fractions
        y = y.astype(np.int8) if ((y == 0) | (y == 1)).all() else y.astype(np.float32)
        self.y = y
        # data-parallel replicas each need an equal share of every batch: the last, short batch is cut to a
        # multiple of the replica count (at most multiple_of - 1 images an epoch, a different few each epoch)
        self.n_used = len(x) - len(x) % multiple_of
        self.batch_size, self.shuffle, self.flip, self.seed = batch_size, shuffle, flip, seed
        self.ux, self.ut = unlabelled_x, unlabelled_t
        self.n_unlabelled = n_unlabelled if unlabelled_x is not None else 0
        # Every array as "views": row 2j + v is image j (v = 0) or its horizontal flip (v = 1), so a batch is
        # one contiguous gather per array (np.take of 2 * idx + flipped), no strided flip pass. Images and
        # masks are flipped here once; the teacher's view 1 is already its output on the flipped image.
        self.x_views = _views(x, flip)
        self.y_views = _views(y, flip)
        # the unflipped arrays as strided views of the views: no second copy of the images is kept
        self.x, self.y = self.x_views[:: 2 if flip else 1], self.y_views[:: 2 if flip else 1]
        self.t_views = _rows(t)
        # the unlabelled set can be large (18,000 images): its images are kept once (flipped per batch), and its teacher
        # logits may be rows with .gather(rows, out) (distill.cache.CachedRows) that read each batch's rows from the cache file, never all of them
        self.ut_views = unlabelled_t if hasattr(unlabelled_t, "gather") else _rows(unlabelled_t)
        self.epoch = 0
        self._order()

    def _order(self):
        self.rng = np.random.default_rng([self.seed, self.epoch])
        self.perm = self.rng.permutation(len(self.x)) if self.shuffle else np.arange(len(self.x))
        if self.n_unlabelled:
            self.uperm = self.rng.permutation(len(self.ux))

    def __len__(self):
        return int(np.ceil(self.n_used / self.batch_size))

    def __getitem__(self, i):
        """One batch: one contiguous gather per array into preallocated arrays (flips are precomputed views).

        Images travel as stored (uint8 when padded: the graph scales them), masks as int8 (0, 1, -1 =
        unlabelled), teacher logits as float16; the graph's float32 inputs convert them exactly.
        """
        idx = np.sort(self.perm[: self.n_used][i * self.batch_size : (i + 1) * self.batch_size])
        nl = len(idx)
        uidx = None
        if self.n_unlabelled:
            start = (i * self.n_unlabelled) % len(self.ux)
            uidx = np.sort(np.take(self.uperm, np.arange(start, start + self.n_unlabelled), mode="wrap"))
        n = nl + (len(uidx) if uidx is not None else 0)
        rng = np.random.default_rng([self.seed, self.epoch, i])  # flips, then any strong augmentation and mixup
        f = rng.random(n) < 0.5 if self.flip else np.zeros(n, bool)
        rows = 2 * idx + f[:nl] if self.flip else idx
        xb = np.empty((n,) + self.x.shape[1:], self.x.dtype)
        yb = np.empty((n,) + self.y.shape[1:], self.y.dtype)
        np.take(self.x_views, rows, axis=0, out=xb[:nl])
        np.take(self.y_views, rows, axis=0, out=yb[:nl])
        if uidx is not None:
            np.take(self.ux, uidx, axis=0, out=xb[nl:])
            if self.flip:
                fu = nl + np.flatnonzero(f[nl:])
                xb[fu] = xb[fu, :, ::-1]
            yb[nl:] = -1  # unlabelled: soft term only
        if self.augment == "strong":
            xb, yb = aug.strong(xb, yb, rng, nl)
        if self.mixup and n > nl:
            xb = aug.mixup(xb, nl, self.mixup, rng)[0]
        feed = {"image": xb, "mask": yb}
        if self.t is not None:
            tb = np.empty((n,) + self.t.shape[2:], self.t.dtype)
            np.take(self.t_views, 2 * idx + f[:nl], axis=0, out=tb[:nl])
            if uidx is not None:
                _gather(self.ut_views, 2 * uidx + f[nl:], tb[nl:])
            feed["teacher_logits"] = tb
        return feed, np.zeros((n, 1), np.float32)

    def on_epoch_end(self):
        self.epoch += 1
        self._order()


def _rows(t):
    """Cached teacher logits (N, 2, S, S, 1) as rows (2N, S, S, 1), row 2j + v = image j's view v; None stays None."""
    return np.ascontiguousarray(t).reshape((-1,) + t.shape[2:]) if t is not None else None


def _gather(src, rows, out: np.ndarray) -> None:
    """out[i] = src's row rows[i]: an in-memory array (`_rows`) or rows read on demand (`.gather`, distill.cache.CachedRows)."""
    if hasattr(src, "gather"):
        src.gather(rows, out)
    else:
        np.take(src, rows, axis=0, out=out)


def _views(a: np.ndarray, flip: bool) -> np.ndarray:
    """(N, H, W, C) -> (2N, H, W, C) with row 2j + 1 the horizontal flip of row 2j (or `a` itself without flips)."""
    if not flip:
        return a
    return np.stack([a, a[:, :, ::-1]], axis=1).reshape((-1,) + a.shape[1:])
