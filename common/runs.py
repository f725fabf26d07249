"""What teacher and student runs share: data and split set-up, the loss-layer graph, metrics.json."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import keras
import numpy as np

from common import io
from common.cli import UserError, check_range
from common.config import environment
from common.layers import DistillationLoss, TemperatureSigmoid
from common.metrics import kaggle_per_image
from common.train import evaluate_probs, predict_probs
from common.unet import logits_model
from data.pipeline import Batches, prep_images, prep_masks
from data.split import load_split, stratified_split
from data.tgs import TgsData, load_data


def validate_common(cfg) -> None:
    """Checks shared by teacher and student configs; each failure names the flag and value."""
    if cfg.monitor not in ("mean_iou", "kaggle_map", "salt_iou"):
        raise UserError(f"--monitor {cfg.monitor!r} must be mean_iou, kaggle_map or salt_iou")
    if cfg.upsample not in ("transpose", "bilinear"):
        raise UserError(f"--upsample {cfg.upsample!r} must be 'transpose' or 'bilinear'")
    if cfg.resize_mode not in ("pad", "resize"):
        raise UserError(f"--resize-mode {cfg.resize_mode!r} must be 'pad' or 'resize'")
    if cfg.depth < 1 or cfg.input_size % 2**cfg.depth or (cfg.resize_mode == "pad" and cfg.input_size < 101):
        raise UserError(f"--input-size {cfg.input_size} must be >= 101 (pad) and divisible by 2**depth = {2**max(cfg.depth, 0)}")
    for name in ("epochs", "batch_size", "base_filters"):
        if getattr(cfg, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    check_range("--lr", cfg.lr, 0, 1, lo_open=True)
    if getattr(cfg, "tensorboard", False):
        import importlib.util

        if importlib.util.find_spec("tensorflow") is None or importlib.util.find_spec("tensorboard") is None:
            raise UserError("--tensorboard needs the tensorflow and tensorboard packages (Keras writes its logs through tf.summary)")


def start_run(cfg, run_dir: Path, opts, split: dict | None = None) -> Path:
    """Claim the run dir (lock, --overwrite / --resume rules), set seeds, save config and split.

    Called after the inputs are checked, so bad input leaves no run dir behind."""
    run_dir = io.prepare_run_dir(run_dir, opts.overwrite, opts.resume)
    keras.utils.set_random_seed(cfg.seed)
    new = json.loads(json.dumps(dataclasses.asdict(cfg)))
    if opts.resume and (run_dir / "config.json").exists():
        old = json.loads((run_dir / "config.json").read_text())
        old.pop("environment", None)
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if diff:
            raise UserError(f"--resume with a different config than {run_dir / 'config.json'}: {', '.join(diff)}")
    if opts.resume and (run_dir / "metrics.json").exists():
        raise UserError(f"run {run_dir} is finished (metrics.json); nothing to resume")
    io.write_json(run_dir / "config.json", {**new, "environment": environment()})
    if split is not None:
        io.write_json(run_dir / "split.json", split)
    return run_dir


def load_split_data(data_path, split_file, val_fraction: float, split_seed: int, max_train: int = 0):
    """Load data, make or read the split. Returns (train, val, split); save the split with the run."""
    data = load_data(data_path)
    if data.masks is None or len(data) == 0:
        raise UserError(f"{data_path} holds no labelled images")
    if split_file:
        split = load_split(split_file)
    else:
        check_range("val_fraction", val_fraction, 0, 1, lo_open=True, hi_open=True)
        split = stratified_split(data.ids, data.masks, val_fraction, split_seed)
    train, val = data.subset(split["train"]), data.subset(split["val"])
    if max_train:
        train = train.subset(train.ids[:max_train])
    print(f"data: {len(train)} train / {len(val)} val images from {data.source}", flush=True)
    return train, val, split


def batches(train: TgsData, val: TgsData, spec: dict, batch_size: int, seed: int, flip: bool, unlabelled: TgsData | None = None,
            n_unlabelled: int = 0, cache=None, replicas: int = 1):
    """Training and validation batches; with a teacher cache, each carries the teacher's logits."""
    x, y = prep_images(train.images, spec), prep_masks(train.masks, spec)
    vx, vy = prep_images(val.images, spec), prep_masks(val.masks, spec)
    ux = prep_images(unlabelled.images, spec) if unlabelled is not None else None
    t = vt = ut = None
    if cache is not None:
        t, vt = cache.take(train.ids), cache.take(val.ids)
        ut = cache.take(unlabelled.ids) if unlabelled is not None else None
    tb = Batches(x, y, batch_size, shuffle=True, flip=flip, seed=seed, unlabelled_x=ux, n_unlabelled=n_unlabelled, t=t, unlabelled_t=ut,
                 multiple_of=replicas)
    vb = Batches(vx, vy, 64 * replicas, shuffle=False, flip=False, t=vt, multiple_of=replicas)
    return tb, vb, vx


def training_graph(model: keras.Model, loss: DistillationLoss, soft_teacher: keras.Model | None = None,
                   cached_teacher: bool = False) -> keras.Model:
    """{"image", "mask"[, "teacher_logits"]} -> loss layer [total, hard, soft]; `model` gives its `logits`.

    The soft target comes from the frozen soft teacher in the graph, or, with cached_teacher,
    from the cached teacher logits through the same sigmoid(logits / T).
    """
    shape = tuple(model.inputs[0].shape[1:])
    image = keras.Input(shape, name="image")
    mask = keras.Input(shape[:2] + (1,), name="mask")
    inputs = {"image": image, "mask": mask}
    z = logits_model(model)(image)
    parts = [mask, z]
    if cached_teacher:
        inputs["teacher_logits"] = keras.Input(shape[:2] + (1,), name="teacher_logits")
        parts.append(TemperatureSigmoid(loss.temperature, name="teacher_soft")(inputs["teacher_logits"]))
    elif soft_teacher is not None:
        parts.append(soft_teacher(image))
    return keras.Model(inputs, loss(parts), name="train_graph")


def final_metrics(model, val: TgsData, vx: np.ndarray, spec: dict) -> dict:
    """Validation metrics of the best model, plain and with horizontal-flip test-time augmentation."""
    p = predict_probs(model, vx, spec)
    pf = predict_probs(model, vx[:, :, ::-1], spec)[:, :, ::-1]
    t = spec["threshold"]
    return {
        "val": evaluate_probs(p, val.masks, t),
        "val_flip_tta": evaluate_probs((p + pf) / 2, val.masks, t),
        # per-image Kaggle scores in split order: paired comparisons between runs (experiments/)
        "val_ids": list(val.ids),
        "val_kaggle_per_image": np.round(kaggle_per_image(p > t, val.masks), 4).tolist(),
    }


def write_metrics(run_dir: Path, metrics: dict, t_start: float) -> None:
    metrics["wall_s"] = round(time.perf_counter() - t_start, 1)
    io.write_json(run_dir / "metrics.json", metrics)
    for f in ("checkpoint.weights.h5", "checkpoint.json"):  # the run is finished: nothing left to resume
        (run_dir / f).unlink(missing_ok=True)
    v = metrics["val"]
    print(f"done: val mean_iou {v['mean_iou']:.4f}  salt_iou {v['salt_iou']:.4f}  kaggle_map {v['kaggle_map']:.4f}  "
          f"({metrics['params']:,} params, best epoch {metrics['best_epoch']}, {metrics['train_img_per_s']} img/s) -> {run_dir}", flush=True)
