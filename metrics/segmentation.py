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


COUNTS = ("tp", "fp", "fn", "tn")  # the columns of confusion_per_image


def confusion_per_image(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per-image pixel counts (N, 4) int64, columns COUNTS = tp, fp, fn, tn (salt is the positive class).

    Summed over any subset of images they give that subset's pooled IoUs (`pooled_iou`): what a paired
    bootstrap of mean IoU resamples (experiments.results)."""
    pred, true = _as_bool(pred), _as_bool(true)
    if pred.shape != true.shape:
        raise ValueError(f"prediction shape {pred.shape} != truth shape {true.shape}")
    tp = (pred & true).sum(axis=(1, 2))
    fp = (pred & ~true).sum(axis=(1, 2))
    fn = (~pred & true).sum(axis=(1, 2))
    tn = pred[0].size - tp - fp - fn if len(pred) else fn
    return np.stack([tp, fp, fn, tn], axis=1).astype(np.int64)


def pooled_iou(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean_iou, salt_iou) from summed counts (..., 4): salt IoU tp/(tp+fp+fn), background IoU tn/(tn+fp+fn),
    mean IoU their average; an empty class (no pixel predicted or true) has IoU 1. Works on a batch (B, 4)."""
    c = np.asarray(counts, dtype=np.float64)
    tp, fp, fn, tn = c[..., 0], c[..., 1], c[..., 2], c[..., 3]
    with np.errstate(invalid="ignore", divide="ignore"):
        salt = np.where(tp + fp + fn > 0, tp / (tp + fp + fn), 1.0)
        bg = np.where(tn + fp + fn > 0, tn / (tn + fp + fn), 1.0)
    return (salt + bg) / 2, salt


def score_masks(pred: np.ndarray, true: np.ndarray) -> dict:
    """All metrics for boolean masks (N, H, W); H, W are the original image size."""
    pred, true = _as_bool(pred), _as_bool(true)
    counts = confusion_per_image(pred, true)
    mean_iou, salt = pooled_iou(counts.sum(axis=0))
    return {
        "n_images": int(len(pred)),
        "mean_iou": round(float(mean_iou), 6),
        "salt_iou": round(float(salt), 6),
        "kaggle_map": round(float(kaggle_per_image(pred, true).mean()), 6),
    }


def _as_bool(a) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 4 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        a = a[None]
    return a.astype(bool)
