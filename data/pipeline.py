"""Preprocessing and batches for training.

Preprocessing is `pi.tgs_common.preprocess`, the same numpy code the Raspberry Pi runs, driven by
one spec dict (`pi.sidecar.make_spec`: input size, pad or resize) that is saved next to every model. Augmentation is a
horizontal flip only: seismic sections have an up and a down, so no vertical flips.
"""

from __future__ import annotations

import keras
import numpy as np

from pi.tgs_common import postprocess, preprocess


def prep_images(images: np.ndarray, spec: dict) -> np.ndarray:
    """uint8 (N, 101, 101) -> float32 (N, S, S, 1) in [0, 1]."""
    return preprocess(images, spec)


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
    """

    def __init__(self, x, y, batch_size=32, shuffle=True, flip=True, seed=0, unlabelled_x=None, n_unlabelled=0,
                 t=None, unlabelled_t=None, multiple_of=1, **kwargs):
        super().__init__(**kwargs)
        self.x, self.y, self.t = x, y, t
        # data-parallel replicas each need an equal share of every batch: the last, short batch is cut to a
        # multiple of the replica count (at most multiple_of - 1 images an epoch, a different few each epoch)
        self.n_used = len(x) - len(x) % multiple_of
        self.batch_size, self.shuffle, self.flip, self.seed = batch_size, shuffle, flip, seed
        self.ux, self.ut = unlabelled_x, unlabelled_t
        self.n_unlabelled = n_unlabelled if unlabelled_x is not None else 0
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
        """One batch, assembled image by image into preallocated arrays (one copy per image, flips included)."""
        idx = np.sort(self.perm[: self.n_used][i * self.batch_size : (i + 1) * self.batch_size])
        parts = [(self.x, self.y, self.t, idx)]
        if self.n_unlabelled:
            start = (i * self.n_unlabelled) % len(self.ux)
            uidx = np.sort(np.take(self.uperm, np.arange(start, start + self.n_unlabelled), mode="wrap"))
            parts.append((self.ux, None, self.ut, uidx))
        n = sum(len(p[3]) for p in parts)
        f = np.random.default_rng([self.seed, self.epoch, i]).random(n) < 0.5 if self.flip else np.zeros(n, bool)
        xb = np.empty((n,) + self.x.shape[1:], np.float32)
        yb = np.empty((n,) + self.y.shape[1:], np.float32)
        tb = np.empty((n,) + self.t.shape[2:], np.float32) if self.t is not None else None
        k = 0
        for x, y, t, ids in parts:
            for j in ids:
                flip = f[k]
                xb[k] = x[j, :, ::-1] if flip else x[j]
                if y is not None:
                    yb[k] = y[j, :, ::-1] if flip else y[j]
                else:
                    yb[k] = -1.0  # unlabelled: soft term only
                if tb is not None:
                    tb[k] = t[j, 1 if flip else 0]  # the teacher's output on the flipped image, already in flipped orientation
                k += 1
        feed = {"image": xb, "mask": yb}
        if tb is not None:
            feed["teacher_logits"] = tb
        return feed, np.zeros((n, 1), np.float32)

    def on_epoch_end(self):
        self.epoch += 1
        self._order()
