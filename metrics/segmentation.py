"""Segmentation metrics on the original 101x101 pixels (never on padding).

- mean_iou:  two-class (background, salt) IoU over all pixels of the set, averaged over classes.
- salt_iou:  salt-class IoU over all pixels of the set.
- kaggle_map: TGS competition metric. Per image: both empty -> 1; exactly one empty -> 0;
  else mean over t in 0.50, 0.55, ..., 0.95 of [IoU > t]. Averaged over images.
"""

from __future__ import annotations

import numpy as np

THRESHOLDS = np.round(np.arange(0.5, 1.0, 0.05), 2)  # 0.50, 0.55, ..., 0.95


def kaggle_per_image(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per-image Kaggle score for boolean masks of shape (N, H, W)."""
    pred, true = _as_bool(pred), _as_bool(true)
    inter = (pred & true).sum(axis=(1, 2))
    union = (pred | true).sum(axis=(1, 2))
    p_empty, t_empty = ~pred.any(axis=(1, 2)), ~true.any(axis=(1, 2))
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    score = (iou[:, None] > THRESHOLDS[None, :]).mean(axis=1)
    score = np.where(p_empty & t_empty, 1.0, score)
    score = np.where(p_empty ^ t_empty, 0.0, score)
    return score


def score_masks(pred: np.ndarray, true: np.ndarray) -> dict:
    """All metrics for boolean masks (N, H, W); H, W are the original image size."""
    pred, true = _as_bool(pred), _as_bool(true)
    if pred.shape != true.shape:
        raise ValueError(f"prediction shape {pred.shape} != truth shape {true.shape}")
    tp = int((pred & true).sum())
    fp = int((pred & ~true).sum())
    fn = int((~pred & true).sum())
    tn = int(pred.size - tp - fp - fn)
    salt = tp / (tp + fp + fn) if tp + fp + fn else 1.0
    bg = tn / (tn + fp + fn) if tn + fp + fn else 1.0
    return {
        "n_images": int(len(pred)),
        "mean_iou": round((salt + bg) / 2, 6),
        "salt_iou": round(salt, 6),
        "kaggle_map": round(float(kaggle_per_image(pred, true).mean()), 6),
    }


def _as_bool(a) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 4 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        a = a[None]
    return a.astype(bool)
