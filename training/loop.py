"""The one training loop for teacher and students: a loss-layer graph fitted with an identity loss.

Each epoch: Keras' progress bar; validation loss (hard and soft parts); then the inference model
predicts the validation images, predictions are cropped back to 101x101 and scored (training.scoring); the best
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
from common.io import CKPT_STATE, CKPT_WEIGHTS
from data.pipeline import Batches
from distill.losses import IdentityLoss, LossPart
from models.registry import float32_copy
from training.scoring import evaluate_probs, last_epoch_scores, predict_probs


@dataclass
class TrainingData:
    """What one run trains and validates on: batches, the validation images and masks, the preprocessing spec."""

    train: Batches
    val: Batches
    val_x: np.ndarray  # preprocessed validation images (N, S, S, 1)
    val_masks: np.ndarray  # (N, 101, 101) bool, original pixels
    spec: dict


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
            save_float32(self.infer_model, self.model_path)
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


def compile_for_training(train_model, cfg, steps_per_epoch: int) -> None:
    """AdamW on a cosine schedule with a linear warm-up (the first tenth of the steps, from lr / 10), the identity loss,
    and the loss parts logged beside it (hard, soft, and feat with feature distillation)."""
    steps = cfg.epochs * steps_per_epoch
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


def epoch_callbacks(train_model, score: ValScore, cfg, run_dir: Path) -> list:
    """The Lovasz switch (with lovasz_epochs), the validation scoring `score`, then TensorBoard (with cfg.tensorboard)."""
    callbacks = [score]
    lovasz_epochs = getattr(cfg, "lovasz_epochs", 0)
    if lovasz_epochs:
        layer = train_model.get_layer("loss")
        if getattr(layer, "hard_loss", "bce") != "lovasz":
            raise ValueError("lovasz_epochs needs a training graph built with hard_loss='lovasz'")
        callbacks.insert(0, LovaszPhase(layer.lovasz_on, cfg.epochs - lovasz_epochs))
    if cfg.tensorboard:  # after ValScore, so the validation scores it adds to the epoch's logs are logged too
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run_dir / "tensorboard"), write_graph=False))
    return callbacks


def resume_state(train_model, score: ValScore, train_batches: Batches, cfg, run_dir: Path, resume: bool) -> tuple[int, float]:
    """With `resume` and a checkpoint: restore it into the model, `score` and the batches' epoch order, and return
    (epochs done, wall seconds so far); else (0, 0.0)."""
    state = load_checkpoint(train_model, run_dir) if resume else None
    if state is None:
        if resume:
            print("no checkpoint to resume from: starting at epoch 1", flush=True)
        return 0, 0.0
    start, score.best, score.best_epoch, score.rows = state["epoch"], state["best"], state["best_epoch"], state["rows"]
    score.wall = state.get("wall_s", 0.0)
    train_batches.epoch = start
    train_batches._order()
    print(f"resuming after epoch {start} of {cfg.epochs} (best {cfg.monitor} {score.best:.4f} at epoch {score.best_epoch})", flush=True)
    return start, score.wall


def save_float32(model, path: Path) -> None:
    """The saved model is float32 whatever the training precision: what export, the cache and the Pi expect."""
    mixed = model.dtype_policy.compute_dtype != "float32"
    io.save_model(float32_copy(model) if mixed else model, path)


def fit(
    train_model, infer_model, data: TrainingData, cfg, run_dir: Path, model_name: str, resume: bool = False, last_name: str = ""
) -> dict:
    """Train `train_model` (outputs [total, hard, soft] per sample, + feat with feature KD) and keep the best `infer_model`.

    With `last_name` the last epoch's `infer_model` is saved too (run_dir/last_name: a teacher's teacher_last.keras, so
    soft targets no selection flatters can be made from it); the student keeps only its best, its product.

    cfg gives epochs, lr, weight_decay, monitor and tensorboard (a training.config.TrainConfig),
    optionally lovasz_epochs (student.config.DistillConfig: the last N epochs train with the Lovasz
    hinge as the hard term; the graph's loss layer must be built with hard_loss="lovasz").
    Every epoch ends with a checkpoint (weights, optimizer, epoch, history); `resume` continues
    from it: the data order and flips are seeded per epoch, so the rest of the run is the same.
    Returns best_epoch, timings and the last epoch's validation scores (training.scoring.last_epoch_scores).
    """
    train_batches = data.train
    compile_for_training(train_model, cfg, len(train_batches))
    model_path = run_dir / model_name
    cb = ValScore(
        infer_model, data.val_x, data.val_masks, data.spec, model_path, run_dir / "history.csv", cfg.monitor, len(train_batches.x)
    )
    callbacks = epoch_callbacks(train_model, cb, cfg, run_dir)
    start, wall0 = resume_state(train_model, cb, train_batches, cfg, run_dir, resume)
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
    if last_name:
        save_float32(infer_model, run_dir / last_name)
    best = keras.saving.load_model(model_path)
    infer_model.set_weights(best.get_weights())
    return {
        "best_epoch": cb.best_epoch,
        "epochs": cfg.epochs,
        "train_wall_s": round(wall, 1),
        "train_img_per_s": round(float(np.median([r["train_img_per_s"] for r in cb.rows])), 1),
        **last,
    }
