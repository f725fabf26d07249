"""Run directories and what teacher and student runs share: data and split set-up, batches, writing metrics.json.

A run dir holds config.json (the config, versions, backend and devices), split.json, history.csv,
the model and its sidecar, metrics.json (its scores: training.scoring). Run names and labels:
training/naming.py (RunSpec).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import keras

from common import io
from common.cli import UserError, check_range
from common.config import environment
from data.pipeline import Batches, prep_images, prep_images_unscaled, prep_masks
from data.split import load_split, stratified_split
from data.tgs import TgsData, load_data
from training.loop import TrainingData


def start_run(cfg, run_dir: Path, opts, split: dict | None = None, parallel: dict | None = None) -> Path:
    """Claim the run dir (lock, --overwrite / --resume rules), set seeds, save config and split.

    Called after the inputs are checked, so bad input leaves no run dir behind."""
    run_dir = io.prepare_run_dir(run_dir, opts.overwrite, opts.resume)
    keras.utils.set_random_seed(cfg.seed)
    new = json.loads(json.dumps(dataclasses.asdict(cfg)))
    if opts.resume and (run_dir / "config.json").exists():
        old = json.loads((run_dir / "config.json").read_text())
        old.pop("environment", None)
        # a field added since the run started is as it was then when it holds its default
        defaults = {f.name: f.default for f in dataclasses.fields(cfg) if f.default is not dataclasses.MISSING}
        old = {**{k: v for k, v in json.loads(json.dumps(defaults)).items() if k not in old}, **old}
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if diff:
            raise UserError(f"--resume with a different config than {run_dir / 'config.json'}: {', '.join(diff)}")
    if opts.resume and (run_dir / "metrics.json").exists():
        raise UserError(f"run {run_dir} is finished (metrics.json); nothing to resume")
    env = environment()
    if parallel is not None:
        env["replicas"] = parallel["replicas"]
        env["parallel_devices"] = [str(d) for d in parallel.get("devices", [])]
        env["devices"] = parallel.get("device_report")
    io.write_json(run_dir / "config.json", {**new, "environment": env})
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


def batches(
    train: TgsData,
    val: TgsData,
    spec: dict,
    batch_size: int,
    seed: int,
    flip: bool,
    unlabelled: TgsData | None = None,
    n_unlabelled: int = 0,
    cache=None,
    replicas: int = 1,
    augment: str = "flip",
    mixup: float = 0.0,
) -> TrainingData:
    """Training and validation batches; with a teacher cache, each carries the teacher's logits.

    augment and mixup (data.pipeline.Batches) shape the training batches only; validation batches are never augmented."""
    # batches carry unscaled images (uint8 when padded); the graph scales them (build_training_graph's input_scale)
    x, y = prep_images_unscaled(train.images, spec), prep_masks(train.masks, spec)
    vx, vy = prep_images(val.images, spec), prep_masks(val.masks, spec)
    ux = prep_images_unscaled(unlabelled.images, spec) if unlabelled is not None else None
    t = vt = ut = None
    if cache is not None:
        t, vt = cache.take(train.ids, train.images), cache.take(val.ids, val.images)
        # read per batch from the cache file: training memory does not grow with the unlabelled set's logits
        ut = cache.rows(unlabelled.ids, unlabelled.images) if unlabelled is not None else None
    tb = Batches(
        x,
        y,
        batch_size,
        shuffle=True,
        flip=flip,
        seed=seed,
        unlabelled_x=ux,
        n_unlabelled=n_unlabelled,
        t=t,
        unlabelled_t=ut,
        multiple_of=replicas,
        augment=augment,
        mixup=mixup,
    )
    vb = Batches(prep_images_unscaled(val.images, spec), vy, 64 * replicas, shuffle=False, flip=False, t=vt, multiple_of=replicas)
    return TrainingData(tb, vb, vx, val.masks, spec)


def peak_rss_mb() -> float | None:
    """This process's peak resident memory so far (MB; None where the OS does not say)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kb / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)  # bytes on macOS, KiB on Linux


def write_metrics(run_dir: Path, metrics: dict, t_start: float) -> None:
    metrics["wall_s"] = round(time.perf_counter() - t_start, 1)
    metrics["peak_rss_mb"] = peak_rss_mb()
    io.write_json(run_dir / "metrics.json", metrics)
    for f in (io.CKPT_WEIGHTS, io.CKPT_STATE):  # the run is finished: nothing left to resume
        (run_dir / f).unlink(missing_ok=True)
    v = metrics["val"]
    print(
        f"done: val mean_iou {v['mean_iou']:.4f}  salt_iou {v['salt_iou']:.4f}  kaggle_map {v['kaggle_map']:.4f}  "
        f"({metrics['params']:,} params, best epoch {metrics['best_epoch']}, {metrics['train_img_per_s']} img/s) -> {run_dir}",
        flush=True,
    )
