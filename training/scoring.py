"""Where a model is scored on labelled images: predict -> threshold -> per-image counts -> the reported metrics.

Training (each epoch's validation, metrics.json), evaluate.py and experiments.rescore score through these
functions, so every number is made the same way: the model's probabilities on the original 101x101 pixels
(`predict_probs`, `file_probs`), masks = probabilities > the sidecar's threshold, per image the Kaggle score
and the [tp, fp, fn, tn] pixel counts (`per_image_scores`, `per_image_csv`), and over the images mean IoU,
salt IoU and Kaggle mAP (`evaluate_probs`, `final_metrics`). The metric definitions, pure numpy, are
metrics.segmentation's.

Keras is imported by the functions that run a model only, when they run: the backend is chosen first
(common.backend), and evaluate.py scores a folder of predicted masks without it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from metrics.calibration import calibration
from metrics.segmentation import COUNTS, confusion_per_image, kaggle_per_image, score_masks
from pi.tgs_common import postprocess

THRESHOLD_GRID = np.round(np.arange(0.30, 0.71, 0.02), 2)  # 0.30, 0.32, ..., 0.70


# ---- a model's probabilities on the original pixels -------------------------------------------------


def predict_probs(model, x: np.ndarray, spec: dict, batch_size: int = 64) -> np.ndarray:
    """Model probabilities on the original 101x101 pixels, (N, 101, 101) float32, for preprocessed images x."""
    from models.predict import predict

    return postprocess(predict(model, x, batch_size), spec)


def keras_probs(path: Path, images) -> tuple[np.ndarray, float]:
    """A .keras file's probabilities on (N, 101, 101) uint8 images, through its sidecar's preprocessing; and its threshold."""
    from common.backend import choose_backend

    choose_backend()
    from data.pipeline import prep_images
    from models.files import load_keras_with_spec

    model, spec = load_keras_with_spec(path)
    return predict_probs(model, prep_images(images, spec), spec), spec["threshold"]


def tflite_probs(path: Path, images, threads: int) -> tuple[np.ndarray, float]:
    """A .tflite file's probabilities on (N, 101, 101) uint8 images (the Pi's runner); and its sidecar's threshold."""
    from models.files import TFLiteModel

    m = TFLiteModel(path, threads=threads)
    return m.predict_probs(images), float(m.spec.get("threshold", 0.5))


def file_probs(path: Path, images, threads: int = 2) -> tuple[np.ndarray, float]:
    """(probabilities, threshold) of a model file, .tflite (`threads` interpreter threads) or .keras."""
    return tflite_probs(path, images, threads) if Path(path).suffix == ".tflite" else keras_probs(path, images)


def logits_calibration(model, x: np.ndarray, masks: np.ndarray, spec: dict) -> dict:
    """metrics.calibration of the model's logits (its `logits` layer) on the original pixels of preprocessed images x."""
    from models.predict import predict
    from models.registry import logits_model

    return calibration(postprocess(predict(logits_model(model), x), spec), masks)


# ---- scores of probabilities --------------------------------------------------------------------------


def evaluate_probs(probs: np.ndarray, masks: np.ndarray, threshold: float = 0.5) -> dict:
    """n_images, mean_iou, salt_iou and kaggle_map (metrics.segmentation.score_masks) of the masks probs > threshold."""
    return score_masks(probs > threshold, masks)


def per_image_scores(probs: np.ndarray, masks: np.ndarray, threshold: float, prefix: str) -> dict:
    """metrics.json's per-image entries of one model, in split order (`val_ids`), for paired comparisons between runs:
    `{prefix}_kaggle_per_image` (the Kaggle score) and `{prefix}_counts_per_image` ([tp, fp, fn, tn] on the 101x101
    pixels, metrics.segmentation.confusion_per_image: pooled mean IoU and salt IoU of any resample of the images)."""
    pred = probs > threshold
    return {
        f"{prefix}_kaggle_per_image": np.round(kaggle_per_image(pred, masks), 4).tolist(),
        f"{prefix}_counts_per_image": confusion_per_image(pred, masks).tolist(),
    }


def per_image_csv(ids, pred: np.ndarray, masks: np.ndarray) -> str:
    """id,tp,fp,fn,tn,kaggle: one row per image of boolean masks (the counts and scores of `per_image_scores`)."""
    counts, kaggle = confusion_per_image(pred, masks), kaggle_per_image(pred, masks)
    rows = [",".join(("id", *COUNTS, "kaggle"))]
    rows += [f"{i},{','.join(map(str, c))},{k:.4f}" for i, c, k in zip(ids, counts.tolist(), kaggle)]
    return "\n".join(rows) + "\n"


def last_epoch_scores(probs: np.ndarray, masks: np.ndarray, threshold: float) -> dict:
    """metrics.json's `val_last` and its per-image entries (`val_last_kaggle_per_image`, `val_last_counts_per_image`)."""
    return {"val_last": evaluate_probs(probs, masks, threshold), **per_image_scores(probs, masks, threshold, "val_last")}


def pick_threshold(probs: np.ndarray, masks: np.ndarray, grid=THRESHOLD_GRID) -> dict:
    """The mask threshold in `grid` with the highest Kaggle mAP; ties -> the one closest to 0.5 (then the lower).

    Kaggle mAP is compared exactly: each image scores k/10, so the sum of the k is an integer.
    Returns {"threshold", "kaggle_map", "mean_iou"} at that threshold. Picked on the images it is
    then scored on, the score flatters the model (see student.train).
    """
    grid = [float(t) for t in grid]
    tally = [int(np.round(kaggle_per_image(probs > t, masks) * 10).sum()) for t in grid]
    best = max(range(len(grid)), key=lambda i: (tally[i], -round(abs(grid[i] - 0.5) * 1e6), -grid[i]))
    t = grid[best]
    s = evaluate_probs(probs, masks, t)
    return {"threshold": t, "kaggle_map": s["kaggle_map"], "mean_iou": s["mean_iou"]}


def crossfit_threshold(probs: np.ndarray, masks: np.ndarray, grid=THRESHOLD_GRID) -> dict:
    """What a threshold picked on validation images is worth on images it was not picked on (two-fold cross-fitting).

    The images at even positions pick a threshold (pick_threshold) that scores the odd ones, and the odd pick
    scores the even ones; every image is scored once, at a threshold chosen without it. Returns
    {"kaggle_map", "mean_iou"} of those out-of-fold masks and "thresholds" [even pick, odd pick]. Unlike
    pick_threshold's own score, selection cannot inflate this one (it has half the images to pick with, so it
    can also understate what a threshold picked on all of them is worth)."""
    idx = np.arange(len(probs))
    folds = (idx[0::2], idx[1::2])
    picks = [pick_threshold(probs[f], masks[f], grid)["threshold"] for f in folds]
    pred = np.zeros(probs.shape, dtype=bool)
    pred[folds[1]] = probs[folds[1]] > picks[0]
    pred[folds[0]] = probs[folds[0]] > picks[1]
    s = evaluate_probs(pred.astype(np.float32), masks, 0.5)
    return {"kaggle_map": s["kaggle_map"], "mean_iou": s["mean_iou"], "thresholds": picks}


# ---- a run's final scores (metrics.json) --------------------------------------------------------------


def final_metrics(model, val, vx: np.ndarray, spec: dict, tune_threshold: bool = False) -> dict:
    """Validation metrics of the best model (val: data.tgs.TgsData, vx its preprocessed images), plain and with
    horizontal-flip test-time augmentation.

    tune_threshold: also `val_tuned_threshold` (pick_threshold: the threshold in 0.30..0.70 with the best
    validation Kaggle mAP, and its scores; its "crossfit" entry: the same pick made on half of the images and
    scored on the other half, crossfit_threshold); the other entries stay at spec["threshold"]."""
    p = predict_probs(model, vx, spec)
    pf = predict_probs(model, vx[:, :, ::-1], spec)[:, :, ::-1]
    t = spec["threshold"]
    out = {
        "val": evaluate_probs(p, val.masks, t),
        "val_flip_tta": evaluate_probs((p + pf) / 2, val.masks, t),
        # per-image Kaggle scores and pixel counts in split order: paired comparisons between runs (experiments/)
        "val_ids": list(val.ids),
        **per_image_scores(p, val.masks, t, "val"),
    }
    if tune_threshold:
        # chosen on the same validation images it is scored on: this score flatters the model
        out["val_tuned_threshold"] = pick_threshold(p, val.masks)
        # the same pick made on half the images and scored on the other half, both ways: not flattered
        out["val_tuned_threshold"]["crossfit"] = crossfit_threshold(p, val.masks)
    return out
