"""Distil a frozen U-Net teacher into a small U-Net student (or train the hard-only baseline).

    python distill_train.py --data ../shared/data/tgs-salt --teacher runs/unet16_teacher_s0/teacher.keras \
        --lam 0.9 --temperature 2 --seed 0          # -> runs/unet4_from_unet16_T2_l0.9_sT_s0
    python distill_train.py --data ../shared/data/tgs-salt --lam 0 --seed 0   # baseline -> runs/unet4_baseline_s0
    python distill_train.py ... --temperature auto   # T = the teacher's NLL-optimal T on the validation split (printed)
    KERAS_BACKEND=jax python distill_train.py ... --devices 4 --batch-size 128   # data parallel over 4 GPUs
    # prints the config, per-epoch progress with loss, hard and soft parts, "val mean_iou ..." and
    # "done: val mean_iou ... kaggle_map ... (xx,xxx params, best epoch N, xx img/s) -> RUN_DIR"

The training graph joins the frozen soft teacher (input -> teacher logits -> sigmoid(logits/T)) and
the student on one input, takes the true mask as a second input and outputs the loss of a
`DistillationLoss` layer, compiled with an identity loss:

    loss = (1 - lam) * BCE(y, sigmoid(z)) + lam * s(T) * BCE(sigmoid(z_teacher/T), sigmoid(z/T))

lam = 0 is the baseline, trained through this same code and budget (the teacher is then left out of
the graph unless given, in which case the soft part is still logged). Only the student's inference
model (hard output) is saved: RUN_DIR/student.keras. The split defaults to the teacher run's
split.json, so the student is validated on images the teacher never trained on.
"""

from __future__ import annotations

from common.backend import choose_backend

choose_backend()

import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from common import io  # noqa: E402
from common.cli import UserError, check_range, run  # noqa: E402
from common.config import parse_args, show  # noqa: E402
from common.distribute import data_parallel, describe  # noqa: E402
from common.layers import SCALE_RULES, DistillationLoss  # noqa: E402
from common.runs import batches, final_metrics, load_split_data, start_run, training_graph, validate_common, write_metrics  # noqa: E402
from common.train import evaluate_probs, fit  # noqa: E402
from data.pipeline import crop_probs, make_spec  # noqa: E402
from data.tgs import TgsData, load_unlabelled  # noqa: E402
from student.model import build_student, inference_model  # noqa: E402
from teacher.cache import TeacherCache, teacher_logits  # noqa: E402
from teacher.calibration import calibration  # noqa: E402
from teacher.soft import load_teacher, soft_teacher  # noqa: E402


@dataclass(frozen=True)
class DistillConfig:
    data: str  # Kaggle TGS folder or .npz cache
    teacher: tuple = ()  # trained teacher .keras file(s); several = an ensemble (mean logits)
    teacher_weights: tuple = ()  # ensemble weights, one per teacher (default equal)
    teacher_cache: str = ""  # cached teacher logits (python -m teacher.cache): no teacher in the graph
    out: str = ""  # run dir; default runs/<name that says what the run is>
    lam: float = 0.9  # weight of the soft term; 0 = hard-only baseline, 1 = soft only
    temperature: float | str = 2.0  # T: softens both teacher and student sigmoids; "auto" = the teacher's NLL-optimal T on the validation split
    scale: str = "T"  # s(T): "T" (design card, sigmoid outputs), "T2" (Hinton), "1"
    base_filters: int = 4  # 4 -> 122 k params, 1/16 of the 1.94 M teacher
    depth: int = 4  # as the teacher
    upsample: str = "transpose"  # "bilinear" avoids Conv2DTranspose (int8-friendlier)
    input_size: int = 128  # must equal the teacher's input size
    resize_mode: str = "pad"  # must match the teacher's preprocessing
    unlabelled: tuple = ()  # folders of unlabelled images: soft term only
    n_unlabelled: int = 16  # unlabelled images added to each batch of `batch_size` labelled ones
    epochs: int = 30  # same budget for baseline and distilled students
    batch_size: int = 32
    lr: float = 2e-3  # AdamW peak, cosine schedule with 10% warm-up
    weight_decay: float = 1e-4
    val_fraction: float = 0.1  # used only when no split file is found
    split_seed: int = 0  # ditto
    split_file: str = ""  # default: the teacher run's split.json
    seed: int = 0  # student init, shuffling, flips: vary it, keep the split
    flip: bool = True  # horizontal flips only
    monitor: str = "mean_iou"  # validation metric that picks the best epoch
    tensorboard: bool = False  # also log each epoch to RUN_DIR/tensorboard (needs tensorflow + tensorboard)
    devices: int = 1  # data-parallel replicas (GPUs); jax or tensorflow backend; batch_size must be a multiple
    max_train: int = 0  # first N training images only (0 = all); for quick checks


def run_name(cfg: DistillConfig, teacher_name: str) -> str:
    student = f"unet{cfg.base_filters}"
    if cfg.lam == 0:
        return f"{student}_baseline_s{cfg.seed}"
    extra = ("_unl" if cfg.unlabelled else "") + ("_cache" if cfg.teacher_cache else "")
    T = "auto" if cfg.temperature == "auto" else f"{cfg.temperature:g}"
    return f"{student}_from_{teacher_name}_T{T}_l{cfg.lam:g}_s{cfg.scale}{extra}_s{cfg.seed}"


def validate(cfg: DistillConfig) -> None:
    validate_common(cfg)
    check_range("--lam", cfg.lam, 0.0, 1.0)
    if cfg.temperature == "auto":
        if cfg.lam == 0:
            raise UserError("--temperature auto needs a teacher and --lam > 0 (it is the teacher's NLL-optimal temperature)")
    elif isinstance(cfg.temperature, str) or not cfg.temperature > 0:
        raise UserError(f"--temperature {cfg.temperature!r} must be a number > 0 or 'auto'")
    if cfg.scale not in SCALE_RULES:
        raise UserError(f"--scale {cfg.scale!r} must be one of {', '.join(SCALE_RULES)}")
    if cfg.lam > 0 and not (cfg.teacher or cfg.teacher_cache):
        raise UserError(f"--lam {cfg.lam} needs a --teacher or --teacher-cache (use --lam 0 for the baseline)")
    try:
        [float(w) for w in cfg.teacher_weights]
    except ValueError:
        raise UserError(f"--teacher-weights {' '.join(cfg.teacher_weights)} must be numbers") from None
    if cfg.teacher_weights and len(cfg.teacher_weights) != len(cfg.teacher):
        raise UserError(f"--teacher-weights has {len(cfg.teacher_weights)} values for {len(cfg.teacher)} teacher(s)")
    if cfg.unlabelled and cfg.lam == 0:
        raise UserError("--unlabelled images need a teacher and --lam > 0: they enter the soft term only")
    if cfg.n_unlabelled < 0:
        raise UserError(f"--n-unlabelled must be >= 0, got {cfg.n_unlabelled}")


def main(argv=None) -> int:
    cfg, opts = parse_args(DistillConfig, argv, __doc__, required=("data",), multi=("unlabelled", "teacher", "teacher_weights"))
    validate(cfg)
    show(cfg)
    # before any model exists (teachers included): with N devices every model lives in the data-parallel scope
    scope, parallel = data_parallel(cfg.devices, cfg.batch_size)
    if parallel["replicas"] > 1 and cfg.unlabelled and cfg.n_unlabelled % parallel["replicas"]:
        raise UserError(f"--n-unlabelled {cfg.n_unlabelled} must be a multiple of --devices {cfg.devices}")
    with scope:
        return distill(cfg, opts, parallel)


def distill(cfg: DistillConfig, opts, parallel: dict) -> int:
    t0 = time.perf_counter()
    spec = make_spec(cfg.input_size, cfg.resize_mode)
    cache = None
    if cfg.teacher_cache and cfg.lam > 0:
        cache = TeacherCache(cfg.teacher_cache)
        cache.check(cfg.teacher, spec)
        teachers, teacher_name = [], cache.meta["spec"].get("model_name", "cached")
        first_teacher = Path(cache.meta["teachers"][0]["path"]) if cache.meta["teachers"] else None
    else:
        teachers = [load_teacher(t) for t in cfg.teacher] if cfg.lam > 0 or cfg.teacher else []
        for path, t in zip(cfg.teacher, teachers):
            t_shape = tuple(t.inputs[0].shape[1:])
            if t_shape != (cfg.input_size, cfg.input_size, 1):
                raise UserError(f"teacher {path} takes input {t_shape}, student --input-size {cfg.input_size} gives "
                                f"{(cfg.input_size, cfg.input_size, 1)}")
        teacher_name = "_".join(t.name for t in teachers) or "none"
        first_teacher = Path(cfg.teacher[0]) if cfg.teacher else None
    split_file = cfg.split_file
    if not split_file and first_teacher is not None and (first_teacher.parent / "split.json").exists():
        split_file = str(first_teacher.parent / "split.json")
    train, val, split = load_split_data(cfg.data, split_file, cfg.val_fraction, cfg.split_seed, cfg.max_train)
    unlabelled = None
    if cfg.unlabelled:
        parts = [load_unlabelled(u) for u in cfg.unlabelled]
        unlabelled = TgsData(sum((p.ids for p in parts), []), np.concatenate([p.images for p in parts]), None,
                             np.concatenate([p.depths for p in parts]))
        print(f"unlabelled: {len(unlabelled)} images, {cfg.n_unlabelled} per batch (soft term only)", flush=True)
    tb, vb, vx = batches(train, val, spec, cfg.batch_size, cfg.seed, cfg.flip, unlabelled, cfg.n_unlabelled, cache, parallel["replicas"])
    run_dir = start_run(cfg, Path(cfg.out or Path("runs") / run_name(cfg, teacher_name)), opts, split)
    metrics = train_student(cfg, opts, run_dir, spec, teachers, teacher_name, cache, tb, vb, vx, val, parallel)
    write_metrics(run_dir, metrics, t0)
    return 0


def soft_target_val_logits(cache, teachers, weights, vb, vx, spec) -> np.ndarray:
    """The soft target's logits on the validation images, original 101x101 pixels."""
    if cache is not None:
        return crop_probs(vb.t[:, 0, ..., 0].astype(np.float32), spec)
    return crop_probs(teacher_logits(teachers, vx, weights=weights), spec)


def train_student(cfg, opts, run_dir, spec, teachers, teacher_name, cache, tb, vb, vx, val, parallel) -> dict:
    """Build the student and its training graph, fit, and score it and its soft target."""
    weights = [float(w) for w in cfg.teacher_weights] or None
    has_target = cache is not None or bool(teachers)
    # the soft target's own score and calibration on the validation split (reported next to the student's)
    t_logits = soft_target_val_logits(cache, teachers, weights, vb, vx, spec) if has_target else None
    cal = calibration(t_logits, val.masks) if has_target else None
    T = cfg.temperature
    if T == "auto":  # validation labels pick one scalar, as temperature scaling does (see the README)
        T = cal["best_temperature"]
        print(f"temperature auto: T = {T:g} (the soft target's NLL-optimal temperature on the {len(val)} validation images)", flush=True)
    student = build_student((cfg.input_size,) * 2 + (1,), cfg.base_filters, cfg.depth, T, cfg.upsample,
                            name=f"unet{cfg.base_filters}")
    infer = inference_model(student)
    soft_t = soft_teacher(teachers, T, weights) if teachers else None
    print(f"student: {student.name}, {infer.count_params():,} params; teacher: "
          + (f"cache {cfg.teacher_cache}" if cache is not None else (f"{teacher_name}, {soft_t.count_params():,} params" if soft_t else "none"))
          + describe(parallel), flush=True)
    loss = DistillationLoss(cfg.lam, T, cfg.scale, name="loss")
    graph = training_graph(student, loss, soft_t, cached_teacher=cache is not None)
    io.write_json(run_dir / "student.keras.json", {**spec, "model_name": infer.name})
    info = fit(graph, infer, tb, vb, vx, val.masks, spec, run_dir, "student.keras", cfg.epochs, cfg.lr, cfg.weight_decay, cfg.monitor,
               opts.resume, cfg.tensorboard)
    metrics = {"model": infer.name, "params": infer.count_params(), "run": run_dir.name, "parallel": parallel, "temperature": T,
               **info, **final_metrics(infer, val, vx, spec)}
    if has_target:
        source = {"cache": cfg.teacher_cache} if cache is not None else {"params": sum(t.count_params() for t in teachers)}
        metrics["teacher"] = {**source, "paths": list(cfg.teacher), "n_teachers": len(cfg.teacher) or len(cache.meta["teachers"]),
                              "val": evaluate_probs(1 / (1 + np.exp(-t_logits)), val.masks, spec["threshold"]), "calibration": cal}
    return metrics


if __name__ == "__main__":
    run(main)
