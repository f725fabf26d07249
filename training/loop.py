"""The one training loop for teacher and students: a loss-layer graph fitted with an identity loss.

Each epoch: Keras' progress bar; validation loss (hard and soft parts); then the inference model
predicts the validation images, predictions are cropped back to 101x101 and scored; the best
epoch (by `monitor`) is saved atomically; history.csv is rewritten atomically. The last epoch's
scores are kept too (`val_last`: the best epoch is picked on the images that score it, the last is not).
With `lovasz_epochs` N > 0 the last N epochs train with the Lovasz hinge as the hard term.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import h5py
import keras
import numpy as np
import pandas as pd

from common import io
from common.cli import UserError
from data.pipeline import Batches
from distill.losses import IdentityLoss, LossPart
from metrics.segmentation import confusion_per_image, kaggle_per_image, score_masks
from models.predict import predict_probs
from models.registry import float32_copy


@dataclass
class TrainingData:
    """What one run trains and validates on: batches, the validation images and masks, the preprocessing spec."""

    train: Batches
    val: Batches
    val_x: np.ndarray  # preprocessed validation images (N, S, S, 1)
    val_masks: np.ndarray  # (N, 101, 101) bool, original pixels
    spec: dict


def evaluate_probs(probs: np.ndarray, masks: np.ndarray, threshold: float = 0.5) -> dict:
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


def last_epoch_scores(probs: np.ndarray, masks: np.ndarray, threshold: float) -> dict:
    """metrics.json's `val_last` and its per-image entries (`val_last_kaggle_per_image`, `val_last_counts_per_image`)."""
    return {"val_last": evaluate_probs(probs, masks, threshold), **per_image_scores(probs, masks, threshold, "val_last")}


THRESHOLD_GRID = np.round(np.arange(0.30, 0.71, 0.02), 2)  # 0.30, 0.32, ..., 0.70


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


class ValScore(keras.callbacks.Callback):
    """Score the inference model on validation images each epoch; keep the best; write history."""

    def __init__(self, infer_model, val_x, val_masks, spec, model_path: Path, history_path: Path, monitor: str, n_train: int):
        super().__init__()
        self.infer_model, self.val_x, self.val_masks, self.spec = infer_model, val_x, val_masks, spec
        self.model_path, self.history_path, self.monitor, self.n_train = model_path, history_path, monitor, n_train
        self.best, self.best_epoch, self.rows, self.wall = -np.inf, -1, [], 0.0
        self.last = None  # last_epoch_scores of the final epoch (fit's `epochs`), kept from its validation

    def on_epoch_begin(self, epoch, logs=None):
        self.t0, self.t_train = time.perf_counter(), None

    def on_test_begin(self, logs=None):  # validation starts: the training part of the epoch is over
        if self.t_train is None:
            self.t_train = time.perf_counter() - self.t0

    def on_epoch_end(self, epoch, logs=None):
        train_time = self.t_train if self.t_train is not None else time.perf_counter() - self.t0
        self.wall += time.perf_counter() - self.t0  # training + validation, summed over epochs (kept across --resume)
        bad = {k: v for k, v in (logs or {}).items() if k in ("loss", "val_loss") and not np.isfinite(v)}
        if bad:  # a diverged run must not be saved and reported as a result
            raise UserError(
                f"training diverged at epoch {epoch + 1}: {', '.join(f'{k} = {v}' for k, v in bad.items())} "
                "(lower --lr, or check --temperature and the data)"
            )
        probs = predict_probs(self.infer_model, self.val_x, self.spec)
        scores = evaluate_probs(probs, self.val_masks, self.spec["threshold"])
        if epoch + 1 == (self.params or {}).get("epochs"):  # the last epoch: keep its scores (no extra prediction)
            self.last = last_epoch_scores(probs, self.val_masks, self.spec["threshold"])
        logs = logs if logs is not None else {}
        logs.update({f"val_{k}": v for k, v in scores.items() if k != "n_images"})
        lr = self.model.optimizer.learning_rate
        row = {
            "epoch": epoch + 1,
            **{k: float(v) for k, v in logs.items()},
            "lr": float(np.asarray(lr)),
            "epoch_s": round(train_time, 2),
            "train_img_per_s": round(self.n_train / max(train_time, 1e-9), 1),
        }
        self.rows.append(row)
        improved = scores[self.monitor] > self.best
        if improved:
            self.best, self.best_epoch = scores[self.monitor], epoch + 1
            # the saved model is float32 whatever the training precision: what export and the Pi expect
            mixed = self.infer_model.dtype_policy.compute_dtype != "float32"
            io.save_model(float32_copy(self.infer_model) if mixed else self.infer_model, self.model_path)
        io.write_text(self.history_path, pd.DataFrame(self.rows).to_csv(index=False))
        print(
            f"  val mean_iou {scores['mean_iou']:.4f}  kaggle_map {scores['kaggle_map']:.4f}" + ("  (best, saved)" if improved else ""),
            flush=True,
        )
        save_checkpoint(
            self.model,
            self.history_path.parent,
            {"epoch": epoch + 1, "best": self.best, "best_epoch": self.best_epoch, "rows": self.rows, "wall_s": self.wall},
        )


class LovaszPhase(keras.callbacks.Callback):
    """Sets the loss layer's `lovasz_on` at each epoch's start: 0 (BCE) before epoch `start` (0-based), 1 from it.

    Set from the epoch number, so a resumed run is in the right phase whatever the checkpoint held."""

    def __init__(self, switch, start: int):
        super().__init__()
        self.switch, self.start = switch, start

    def on_epoch_begin(self, epoch, logs=None):
        on = epoch >= self.start
        self.switch.assign(1.0 if on else 0.0)
        if epoch == self.start:
            print(f"epoch {epoch + 1}: the hard term is the Lovasz hinge from here on", flush=True)


CKPT_WEIGHTS, CKPT_STATE = "checkpoint.weights.h5", "checkpoint.json"


class _H5Bytes(BytesIO):
    """An in-memory `.weights.h5` file: Keras' save_weights takes a BytesIO (it checks the name's suffix through str())."""

    def __str__(self) -> str:
        return CKPT_WEIGHTS


def save_checkpoint(train_model, run_dir: Path, state: dict) -> None:
    """Weights and optimizer state of the training graph, then the epoch state (both atomic).

    The weights file is stamped with its epoch before it is renamed into place; the state file is
    written last and names the epoch, so a kill between the two leaves a weights file one epoch ahead
    of the state, which the resume check below refuses.

    HDF5 builds the file in memory and a plain write puts it on disk: a full disk then fails that write
    (common.io: `no space left writing PATH`), never HDF5's own, after which h5py's deallocators report the
    failed flush hundreds of times and its File.close can crash the process (SIGSEGV, seen on a full tmpfs).
    """
    buf = _H5Bytes()
    train_model.save_weights(buf)
    with h5py.File(buf, "a") as f:
        f.attrs["epoch"] = state["epoch"]
    with io.atomic_path(run_dir / CKPT_WEIGHTS, suffix=".weights.h5") as tmp:
        tmp.write_bytes(buf.getbuffer())
    io.write_json(run_dir / CKPT_STATE, state)


def load_checkpoint(train_model, run_dir: Path) -> dict | None:
    """Restore weights + optimizer from the last finished epoch; None when there is no checkpoint."""
    wpath, spath = run_dir / CKPT_WEIGHTS, run_dir / CKPT_STATE
    if not (wpath.exists() and spath.exists()):
        return None
    state = json.loads(spath.read_text())
    with h5py.File(wpath, "r") as f:
        if int(f.attrs.get("epoch", -1)) != state["epoch"]:
            raise UserError(f"checkpoint in {run_dir} is inconsistent (killed while saving?); start again with --overwrite")
    train_model.optimizer.build(train_model.trainable_variables)
    train_model.load_weights(wpath)
    return state


def fit(train_model, infer_model, data: TrainingData, cfg, run_dir: Path, model_name: str, resume: bool = False) -> dict:
    """Train `train_model` (outputs [total, hard, soft] per sample, + feat with feature KD) and keep the best `infer_model`.

    cfg gives epochs, lr, weight_decay, monitor and tensorboard (a training.config.TrainConfig),
    optionally lovasz_epochs (student.config.DistillConfig: the last N epochs train with the Lovasz
    hinge as the hard term; the graph's loss layer must be built with hard_loss="lovasz").
    Every epoch ends with a checkpoint (weights, optimizer, epoch, history); `resume` continues
    from it: the data order and flips are seeded per epoch, so the rest of the run is the same.
    Returns best_epoch, timings and the last epoch's validation scores (last_epoch_scores).
    """
    train_batches = data.train
    steps = cfg.epochs * len(train_batches)
    warmup = max(1, steps // 10)
    schedule = keras.optimizers.schedules.CosineDecay(
        cfg.lr / 10, max(1, steps - warmup), alpha=0.01, warmup_target=cfg.lr, warmup_steps=warmup
    )
    train_model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=schedule, weight_decay=cfg.weight_decay),
        loss=IdentityLoss(),
        # a 4th column (distill.losses.AddFeatureTerm): the feature-distillation loss, logged as "feat"
        metrics=[LossPart(1, "hard"), LossPart(2, "soft")] + ([LossPart(3, "feat")] if train_model.outputs[0].shape[-1] == 4 else []),
    )
    model_path = run_dir / model_name
    cb = ValScore(
        infer_model, data.val_x, data.val_masks, data.spec, model_path, run_dir / "history.csv", cfg.monitor, len(train_batches.x)
    )
    callbacks = [cb]
    lovasz_epochs = getattr(cfg, "lovasz_epochs", 0)
    if lovasz_epochs:
        layer = train_model.get_layer("loss")
        if getattr(layer, "hard_loss", "bce") != "lovasz":
            raise ValueError("lovasz_epochs needs a training graph built with hard_loss='lovasz'")
        callbacks.insert(0, LovaszPhase(layer.lovasz_on, cfg.epochs - lovasz_epochs))
    if cfg.tensorboard:  # after ValScore, so the validation scores it adds to the epoch's logs are logged too
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run_dir / "tensorboard"), write_graph=False))
    start, wall0 = 0, 0.0
    state = load_checkpoint(train_model, run_dir) if resume else None
    if state is not None:
        start, cb.best, cb.best_epoch, cb.rows = state["epoch"], state["best"], state["best_epoch"], state["rows"]
        wall0 = cb.wall = state.get("wall_s", 0.0)
        train_batches.epoch = start
        train_batches._order()
        print(f"resuming after epoch {start} of {cfg.epochs} (best {cfg.monitor} {cb.best:.4f} at epoch {cb.best_epoch})", flush=True)
    elif resume:
        print("no checkpoint to resume from: starting at epoch 1", flush=True)
    t0 = time.perf_counter()
    if start < cfg.epochs:
        train_model.fit(
            train_batches,
            validation_data=data.val,
            epochs=cfg.epochs,
            initial_epoch=start,
            callbacks=callbacks,
            verbose=1 if sys.stdout.isatty() else 2,
        )
    wall = wall0 + time.perf_counter() - t0
    last = cb.last
    if last is None:  # resumed after the final epoch's checkpoint: infer_model holds that epoch's weights
        last = last_epoch_scores(predict_probs(infer_model, data.val_x, data.spec), data.val_masks, data.spec["threshold"])
    best = keras.saving.load_model(model_path)
    infer_model.set_weights(best.get_weights())
    rows = cb.rows
    return {
        "best_epoch": cb.best_epoch,
        "epochs": cfg.epochs,
        "train_wall_s": round(wall, 1),
        "train_img_per_s": round(float(np.median([r["train_img_per_s"] for r in rows])), 1),
        **last,
    }
