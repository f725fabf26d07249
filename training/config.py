"""The training fields that teacher and student runs share: one frozen dataclass, one set of checks.

`teacher.train.TeacherConfig` and `student.config.DistillConfig` extend `TrainConfig`; each script
prints its config at start and saves it as RUN_DIR/config.json (with versions, backend and devices).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from common.choices import ACCELERATORS, DECODERS, MONITORS, PRECISIONS, RESIZE_MODES, arch_names, check_arch
from common.cli import UserError, check_range
from common.config import option
from training.naming import model_name


@dataclass(frozen=True)
class TrainConfig:
    data: str = option("Kaggle TGS folder or .npz cache from data.prepare")
    out: str = option("run dir: config, split, history, model, metrics", "")
    arch: str = option("architecture (common.choices, built by models.registry)", "unet", choices=arch_names)
    base_filters: int = option("width: filters of the first level, doubled at each level", 16)
    depth: int = option("poolings; the input size must be divisible by 2**depth", 4)
    upsample: str = option(
        'decoder x2: "transpose" or "bilinear" (int8-friendlier); "" = the architecture\'s default (unet: transpose, others: bilinear)',
        "",
        choices=("", *DECODERS),
    )
    input_size: int = option("model input side: 101 reflect-padded to 128 is divisible by 16, no interpolation", 128)
    resize_mode: str = option('"pad" keeps the original pixels (reflect padding); "resize" interpolates', "pad", choices=RESIZE_MODES)
    epochs: int = option(
        "training epochs (cosine schedule over all of them); the epoch that scores best on --monitor is kept, picked on the "
        "validation images themselves (which flatters it), and metrics.json's val_last scores the last epoch",
        30,
    )
    batch_size: int = option("labelled images per step; fits any GPU and a CPU", 32)
    lr: float = option("AdamW peak learning rate, cosine schedule with 10% warm-up", 2e-3)
    weight_decay: float = option("AdamW decoupled weight decay", 1e-4)
    val_fraction: float = option("coverage-stratified validation share (when no split file is used)", 0.1)
    split_seed: int = option("seed of the validation split: fixed across runs so teacher and students share one validation set", 0)
    split_file: str = option("reuse a saved split.json instead of making one", "")
    seed: int = option("seed of the weights, shuffling and flips: vary it, keep the split", 0)
    flip: bool = option("random horizontal flips (only: seismic has an up and a down)", True)
    monitor: str = option("validation metric that picks the best epoch", "mean_iou", choices=MONITORS)
    tensorboard: bool = option("also log each epoch to RUN_DIR/tensorboard (needs tensorflow + tensorboard)", False)
    devices: int = option("data-parallel replicas (GPUs); jax or tensorflow backend; --batch-size must be a multiple", 1)
    accelerator: str = option(
        "auto: refuse to train on the CPU when an NVIDIA GPU is present but unseen; gpu: require one; cpu: intended",
        "auto",
        choices=ACCELERATORS,
    )
    precision: str = option(
        "mixed_bfloat16: bfloat16 compute on GPUs (loss layer, teacher head and saved model in float32)", "float32", choices=PRECISIONS
    )
    max_train: int = option("use only the first N training images (0 = all); for quick checks", 0)

    @property
    def model_name(self) -> str:
        """The model's name in files and run names: arch + width (+ depth, decoder when not the defaults), e.g. unet4."""
        return model_name(self.arch, self.base_filters, self.depth, self.upsample)


def validate_common(cfg: TrainConfig) -> None:
    """Checks shared by teacher and student configs; each failure names the flag and value."""
    if cfg.arch not in arch_names():
        raise UserError(f"--arch {cfg.arch!r} is not an architecture; choose one of {', '.join(arch_names())}")
    if cfg.upsample and cfg.upsample not in DECODERS:
        raise UserError(f"--upsample {cfg.upsample!r} must be 'transpose' or 'bilinear'")
    try:
        check_arch(cfg.arch, (cfg.input_size, cfg.input_size, 1), cfg.base_filters, cfg.depth, cfg.upsample)
    except ValueError as e:
        raise UserError(f"--arch {cfg.arch} --base-filters {cfg.base_filters} --depth {cfg.depth}: {e}") from None
    if cfg.monitor not in MONITORS:
        raise UserError(f"--monitor {cfg.monitor!r} must be mean_iou, kaggle_map or salt_iou")
    if cfg.resize_mode not in RESIZE_MODES:
        raise UserError(f"--resize-mode {cfg.resize_mode!r} must be 'pad' or 'resize'")
    for name in ("epochs", "batch_size", "base_filters", "depth", "devices"):
        if getattr(cfg, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    for name in ("seed", "split_seed", "max_train"):
        if getattr(cfg, name) < 0:
            raise UserError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(cfg, name)}")
    if cfg.input_size % 2**cfg.depth or (cfg.resize_mode == "pad" and not 101 <= cfg.input_size <= 200):
        raise UserError(
            f"--input-size {cfg.input_size} must be divisible by 2**depth = {2**cfg.depth}"
            + (" and in [101, 200] (reflect padding of 101x101 images)" if cfg.resize_mode == "pad" else "")
        )
    check_range("--lr", cfg.lr, 0, 1, lo_open=True)
    if not math.isfinite(cfg.weight_decay) or cfg.weight_decay < 0:
        raise UserError(f"--weight-decay must be a finite number >= 0, got {cfg.weight_decay}")
    if cfg.accelerator not in ACCELERATORS:
        raise UserError(f"--accelerator {cfg.accelerator!r} must be one of {', '.join(ACCELERATORS)}")
    if cfg.precision not in PRECISIONS:
        raise UserError(f"--precision {cfg.precision!r} must be one of {', '.join(PRECISIONS)}")
    if cfg.tensorboard:
        import importlib.util

        if importlib.util.find_spec("tensorflow") is None or importlib.util.find_spec("tensorboard") is None:
            raise UserError("--tensorboard needs the tensorflow and tensorboard packages (Keras writes its logs through tf.summary)")
