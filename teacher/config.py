"""The teacher's training config: the shared training fields plus its loss (Keras-free, so the sweep checks a preset's
"teacher" section with this same validate before anything trains)."""

from __future__ import annotations

from dataclasses import dataclass

from common.choices import TEACHER_LOSSES
from common.cli import UserError
from common.config import option
from training.config import TrainConfig, validate_common


@dataclass(frozen=True)
class TeacherConfig(TrainConfig):
    base_filters: int = option(
        "width: filters of the first level, doubled at each level (16: 1.94 M params, the classic Kaggle Keras U-Net)", 16
    )
    loss: str = option(
        '"bce" or "bce_dice" (BCE + soft Dice); BCE teachers distil better (shared/REFERENCE.md)', "bce", choices=TEACHER_LOSSES
    )


def validate(cfg: TeacherConfig) -> None:
    validate_common(cfg)
    if cfg.loss not in TEACHER_LOSSES:
        raise UserError(f"--loss {cfg.loss!r} must be one of {', '.join(TEACHER_LOSSES)}")
