"""The student's training config: the shared training fields plus the distillation settings."""

from __future__ import annotations

import math
from dataclasses import dataclass

from common.choices import AUGMENTS, FEATURE_LOSSES, SCALE_RULES
from common.cli import UserError, check_range
from common.config import option
from training.config import TrainConfig, validate_common
from training.naming import DEFAULT_FEATURE_LAYERS, feature_pairs


@dataclass(frozen=True)
class DistillConfig(TrainConfig):
    out: str = option(
        "run dir: config, split, history, model, metrics (default: runs/RUN_NAME, e.g. runs/unet4_from_unet16_T2_l0.9_sT_s0)", ""
    )
    base_filters: int = option("width: filters of the first level, doubled at each level (4: 122 k params, 1/16 of the unet16 teacher)", 4)
    teacher: tuple = option("trained teacher .keras file(s); several = an ensemble (mean logits)", ())
    teacher_weights: tuple = option(
        "ensemble weights, one per --teacher (default equal); with --teacher-cache they must match the cache's", ()
    )
    teacher_cache: str = option("cached teacher logits (python -m teacher.cache): no teacher in the graph", "")
    lam: float = option("lambda, the weight of the soft term; 0 = hard-only baseline, 1 = soft only", 0.9)
    temperature: float | str = option(
        'T: softens both teacher and student sigmoids; "auto" = the teacher\'s NLL-optimal T on the validation split', 2.0
    )
    scale: str = option('s(T), the soft term\'s factor: "T" (sigmoid outputs), "T2" (Hinton), "1"', "T", choices=SCALE_RULES)
    unlabelled: tuple = option("folders (or .npz caches) of unlabelled images: soft term only", ())
    n_unlabelled: int = option("unlabelled images added to each batch of --batch-size labelled ones", 16)
    teacher_tta: bool = option("with --teacher-cache: soft target from the flip-averaged cached logits (image and flipped image)", False)
    lovasz_epochs: int = option("the last N of --epochs train with the Lovasz hinge as the hard term (BCE before); 0 = BCE throughout", 0)
    tune_threshold: bool = option(
        "after training, pick the mask threshold (0.30..0.70) with the best validation Kaggle mAP -> the model's sidecar", False
    )
    # feature distillation (distill.losses): needs the teacher in the graph (--teacher, one model; a cache holds no features)
    feature_loss: str = option(
        '"" = off; "fitnets" (hints, 1x1 adapter, MSE), "at" (attention transfer), "cwd" (channel-wise, tau 4); needs one --teacher',
        "",
        choices=("", *FEATURE_LOSSES),
    )
    feature_weight: float = option("weight of the feature term added to the total loss", 1.0)
    feature_layers: tuple = option(
        "STUDENT_LAYER:TEACHER_LAYER pairs of stage names (enc{i}_out, mid_out, dec{i}_out, head_out)", DEFAULT_FEATURE_LAYERS
    )
    augment: str = option(
        '"flip": horizontal flips (earlier versions); "strong": + shifts, zoom, brightness/contrast (data.augment)',
        "flip",
        choices=AUGMENTS,
    )
    mixup: float = option("alpha of Beta(alpha, alpha) mixup of pairs of unlabelled images (soft term only); 0 = off", 0.0)


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
    check_augment(cfg)
    check_feature_kd(cfg)


def notes(cfg: DistillConfig) -> list[str]:
    """Lines printed under the config: settings that run, but that a user may not want together."""
    out = []
    if cfg.lovasz_epochs and cfg.monitor == "mean_iou":
        out.append(
            "note: --lovasz-epochs with --monitor mean_iou: the Lovasz finish raises Kaggle mAP and can lower mean IoU, so the kept "
            "best epoch may be one from before the finish; --monitor kaggle_map keeps the finish "
            "in the running, and metrics.json's val_last scores the last epoch either way"
        )
    return out


def check_augment(cfg: DistillConfig) -> None:
    """--augment and --mixup: known values, and the teacher in the graph (Beyer et al. 2022: the teacher sees the student's view)."""
    if cfg.augment not in AUGMENTS:
        raise UserError(f"--augment {cfg.augment!r} must be one of {', '.join(AUGMENTS)}")
    if not (math.isfinite(cfg.mixup) and cfg.mixup >= 0):
        raise UserError(f"--mixup must be a finite number >= 0 (the Beta distribution's alpha; 0 = off), got {cfg.mixup}")
    if cfg.mixup and not cfg.unlabelled:
        raise UserError("--mixup mixes pairs of unlabelled images: it needs --unlabelled")
    if cfg.mixup and cfg.n_unlabelled < 2:
        raise UserError(f"--mixup mixes pairs of a batch's unlabelled images: it needs --n-unlabelled >= 2, got {cfg.n_unlabelled}")
    if cfg.teacher_cache and cfg.lam > 0:  # the cache is the soft target (student.train.soft_target_source)
        for flag, on in (("--augment strong", cfg.augment == "strong"), ("--mixup", bool(cfg.mixup))):
            if on:
                raise UserError(f"{flag} needs the teacher in the graph (a cache holds only the image and its flip); drop --teacher-cache")


def check_feature_kd(cfg: DistillConfig) -> None:
    """--feature-loss, --feature-weight, --feature-layers (the layer names are checked against the models in student.train)."""
    if cfg.feature_loss:
        if cfg.feature_loss not in FEATURE_LOSSES:
            raise UserError(f"--feature-loss {cfg.feature_loss!r} must be one of {', '.join(FEATURE_LOSSES)} (or '' for none)")
        if cfg.teacher_cache:
            raise UserError("--feature-loss needs the teacher's features, so the teacher in the graph (--teacher), not --teacher-cache")
        if not cfg.teacher:
            raise UserError("--feature-loss needs a --teacher (in the graph: feature distillation matches its features)")
        if len(cfg.teacher) > 1:
            raise UserError(f"--feature-loss needs one --teacher in the graph, not an ensemble of {len(cfg.teacher)}")
        try:
            feature_pairs(cfg.feature_layers)
        except ValueError as e:
            raise UserError(str(e)) from None
        if not cfg.feature_layers:
            raise UserError("--feature-layers needs at least one STUDENT_LAYER:TEACHER_LAYER pair")
    elif cfg.feature_weight != 1.0:
        raise UserError(f"--feature-weight {cfg.feature_weight:g} weighs the feature term: it needs --feature-loss")
    if not (math.isfinite(cfg.feature_weight) and cfg.feature_weight >= 0):
        raise UserError(f"--feature-weight must be a finite number >= 0, got {cfg.feature_weight}")
