"""The student's training config: the shared training fields plus the distillation settings."""

from __future__ import annotations

import math
from dataclasses import dataclass

from common.cli import UserError, check_range
from distill.losses import SCALE_RULES
from training.config import TrainConfig, validate_common


@dataclass(frozen=True)
class DistillConfig(TrainConfig):
    base_filters: int = 4  # 4 -> 122 k params, 1/16 of the 1.94 M teacher
    teacher: tuple = ()  # trained teacher .keras file(s); several = an ensemble (mean logits)
    teacher_weights: tuple = ()  # ensemble weights, one per teacher (default equal); with --teacher-cache they must match the cache's
    teacher_cache: str = ""  # cached teacher logits (python -m teacher.cache): no teacher in the graph
    lam: float = 0.9  # weight of the soft term; 0 = hard-only baseline, 1 = soft only
    temperature: float | str = (
        2.0  # T: softens both teacher and student sigmoids; "auto" = the teacher's NLL-optimal T on the validation split
    )
    scale: str = "T"  # s(T): "T" (design card, sigmoid outputs), "T2" (Hinton), "1"
    unlabelled: tuple = ()  # folders (or .npz caches) of unlabelled images: soft term only
    n_unlabelled: int = 16  # unlabelled images added to each batch of `batch_size` labelled ones
    teacher_tta: bool = False  # with --teacher-cache: soft target from the flip-averaged cached logits (image and flipped image)
    lovasz_epochs: int = 0  # the last N of --epochs train with the Lovasz hinge as the hard term (BCE before); 0 = BCE throughout
    tune_threshold: bool = False  # after training, pick the mask threshold (0.30..0.70) with the best validation Kaggle mAP -> sidecar


def validate(cfg: DistillConfig) -> None:
    validate_common(cfg)
    check_range("--lam", cfg.lam, 0.0, 1.0)
    if cfg.temperature == "auto":
        if cfg.lam == 0:
            raise UserError("--temperature auto needs a teacher and --lam > 0 (it is the teacher's NLL-optimal temperature)")
    elif isinstance(cfg.temperature, str) or not (cfg.temperature > 0 and math.isfinite(cfg.temperature)):
        raise UserError(f"--temperature {cfg.temperature!r} must be a number > 0 or 'auto' (finite)")
    if cfg.scale not in SCALE_RULES:
        raise UserError(f"--scale {cfg.scale!r} must be one of {', '.join(SCALE_RULES)}")
    if cfg.lam > 0 and not (cfg.teacher or cfg.teacher_cache):
        raise UserError(f"--lam {cfg.lam} needs a --teacher or --teacher-cache (use --lam 0 for the baseline)")
    try:
        weights = [float(w) for w in cfg.teacher_weights]
    except ValueError:
        raise UserError(f"--teacher-weights {' '.join(cfg.teacher_weights)} must be numbers") from None
    if weights and (min(weights) < 0 or sum(weights) <= 0 or not all(math.isfinite(w) for w in weights)):
        raise UserError(f"--teacher-weights {' '.join(cfg.teacher_weights)} must be finite, non-negative and not all zero")
    if weights and len(weights) != len(cfg.teacher):
        raise UserError(f"--teacher-weights has {len(weights)} values for {len(cfg.teacher)} teacher(s)")
    if cfg.unlabelled and cfg.lam == 0:
        raise UserError("--unlabelled images need a teacher and --lam > 0: they enter the soft term only")
    if cfg.n_unlabelled < 0:
        raise UserError(f"--n-unlabelled must be >= 0, got {cfg.n_unlabelled}")
    if cfg.teacher_tta and not cfg.teacher_cache:
        raise UserError("--teacher-tta averages the cached teacher logits of each image and its flip: it needs --teacher-cache")
    if not 0 <= cfg.lovasz_epochs < cfg.epochs:
        raise UserError(f"--lovasz-epochs must be >= 0 and < --epochs {cfg.epochs} (the last N epochs), got {cfg.lovasz_epochs}")
    if cfg.lovasz_epochs and cfg.lam == 1:
        raise UserError("--lovasz-epochs changes the hard term, which has weight 1 - lam = 0 at --lam 1")
