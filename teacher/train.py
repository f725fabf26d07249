"""Train the U-Net teacher on TGS Salt.

    python -m teacher.train --data ../shared/data/tgs-salt --out runs/unet16_teacher_s0
    KERAS_BACKEND=jax python -m teacher.train ... --devices 4 --batch-size 128   # data parallel over 4 GPUs
    # prints the config, Keras' per-epoch progress, "val mean_iou ... kaggle_map ..." per epoch and
    # "done: val mean_iou 0.8.. kaggle_map 0.7.. (1,94x,xxx params, best epoch N, xx img/s) -> RUN_DIR"

Writes RUN_DIR/config.json, split.json, history.csv, teacher.keras (+ teacher.keras.json, the
preprocessing sidecar) and metrics.json. The loss is BCE from logits (or BCE + soft Dice), computed
by the same loss layer that trains the students (with lambda = 0).
"""

from __future__ import annotations

from common.backend import choose_backend

choose_backend()

import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

from common import io  # noqa: E402
from common.cli import UserError, run  # noqa: E402
from common.config import parse_args, show  # noqa: E402
from common.distribute import data_parallel, describe  # noqa: E402
from common.layers import DistillationLoss  # noqa: E402
from common.runs import batches, final_metrics, load_split_data, start_run, training_graph, validate_common, write_metrics  # noqa: E402
from common.train import fit  # noqa: E402
from common.unet import build_unet  # noqa: E402
from data.pipeline import make_spec  # noqa: E402
from teacher.calibration import calibration, teacher_val_logits  # noqa: E402


@dataclass(frozen=True)
class TeacherConfig:
    data: str  # Kaggle TGS folder or .npz cache from data.prepare
    out: str  # run dir: config, split, history, model, metrics
    base_filters: int = 16  # 16 -> 1.94 M params, the classic Kaggle Keras U-Net size
    depth: int = 4  # poolings; the input size must be divisible by 2**depth
    upsample: str = "transpose"  # "transpose" (classic) or "bilinear" (int8-friendlier)
    input_size: int = 128  # 101 reflect-padded to 128: divisible by 16, no interpolation
    resize_mode: str = "pad"  # "pad" keeps the original pixels; "resize" interpolates
    loss: str = "bce"  # "bce" or "bce_dice"; BCE teachers distil better (shared/REFERENCE.md)
    epochs: int = 30  # best epoch is kept, so more is safe, only slower
    batch_size: int = 32  # fits any GPU and a CPU
    lr: float = 2e-3  # AdamW peak, cosine schedule with 10% warm-up
    weight_decay: float = 1e-4  # AdamW decoupled decay
    val_fraction: float = 0.1  # coverage-stratified validation share
    split_seed: int = 0  # fixed across runs so teacher and students share one validation set
    split_file: str = ""  # reuse a saved split.json instead of making one
    seed: int = 0  # weights, shuffling and flips
    flip: bool = True  # horizontal flips only: seismic has an up and a down
    monitor: str = "mean_iou"  # validation metric that picks the best epoch
    tensorboard: bool = False  # also log each epoch to RUN_DIR/tensorboard (needs tensorflow + tensorboard)
    devices: int = 1  # data-parallel replicas (GPUs); jax or tensorflow backend; batch_size must be a multiple
    max_train: int = 0  # use only the first N training images (0 = all); for quick checks


def validate(cfg: TeacherConfig) -> None:
    validate_common(cfg)
    if cfg.loss not in ("bce", "bce_dice"):
        raise UserError(f"--loss {cfg.loss!r} must be 'bce' or 'bce_dice'")


def main(argv=None) -> int:
    cfg, opts = parse_args(TeacherConfig, argv, __doc__)
    validate(cfg)
    show(cfg)
    scope, parallel = data_parallel(cfg.devices, cfg.batch_size)  # before any model exists
    t0 = time.perf_counter()
    spec = make_spec(cfg.input_size, cfg.resize_mode)
    train, val, split = load_split_data(cfg.data, cfg.split_file, cfg.val_fraction, cfg.split_seed, cfg.max_train)
    run_dir = start_run(cfg, Path(cfg.out), opts, split)
    tb, vb, vx = batches(train, val, spec, cfg.batch_size, cfg.seed, cfg.flip, replicas=parallel["replicas"])
    with scope:
        model = build_unet((cfg.input_size, cfg.input_size, 1), cfg.base_filters, cfg.depth, cfg.upsample, name=f"unet{cfg.base_filters}")
        print(f"teacher: {model.name}, {model.count_params():,} params"
              + describe(parallel), flush=True)
        graph = training_graph(model, DistillationLoss(lam=0.0, temperature=1.0, dice=cfg.loss == "bce_dice", name="loss"))
        io.write_json(run_dir / "teacher.keras.json", {**spec, "model_name": model.name})
        info = fit(graph, model, tb, vb, vx, val.masks, spec, run_dir, "teacher.keras", cfg.epochs, cfg.lr, cfg.weight_decay, cfg.monitor,
                   opts.resume, cfg.tensorboard)
    metrics = {"model": model.name, "params": model.count_params(), "parallel": parallel, **info, **final_metrics(model, val, vx, spec)}
    metrics["calibration"] = calibration(teacher_val_logits(model, vx, spec), val.masks)
    write_metrics(run_dir, metrics, t0)
    return 0


if __name__ == "__main__":
    run(main)
