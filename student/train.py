"""Distil a frozen teacher into a small student (or train the hard-only baseline): `python distill_train.py`.

See distill_train.py for the commands and what they print. Steps: check the config; make the soft
target's source (distill.teachers.TeacherLogits: in-graph teachers or a cache); read the data and
the split (the teacher run's split.json by default); build the student and the training graph
(distill.graph); fit (training.loop); score the student and its soft target; write metrics.json.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from common import io
from common.backend import set_precision
from common.cli import UserError, run
from common.config import parse_args, show
from common.devices import device_report
from common.distribute import data_parallel, describe
from data.tgs import TgsData, join_unlabelled, load_unlabelled
from distill.graph import build_training_graph, check_feature_layers
from distill.teachers import TeacherLogits
from metrics.calibration import calibration
from pi.sidecar import make_spec, sidecar_path
from student.config import DistillConfig, notes, validate
from student.model import build_student
from training.loop import fit
from training.naming import RunSpec, feature_pairs
from training.runs import batches, load_split_data, start_run, write_metrics
from training.scoring import evaluate_probs, final_metrics


def main(argv=None, doc: str = __doc__) -> int:
    cfg, opts = parse_args(
        DistillConfig, argv, doc, required=("data",), multi=("unlabelled", "teacher", "teacher_weights", "feature_layers")
    )
    validate(cfg)
    show(cfg)
    for line in notes(cfg):
        print(line, flush=True)
    # before any model exists (teachers included): with N devices every model lives in the data-parallel scope
    devices = device_report(cfg.accelerator)  # before the first epoch: the backend and what it trains on
    set_precision(cfg.precision)
    scope, parallel = data_parallel(cfg.devices, cfg.batch_size)
    parallel["device_report"] = devices  # config.json records the backend's devices
    if parallel["replicas"] > 1 and cfg.unlabelled and cfg.n_unlabelled % parallel["replicas"]:
        raise UserError(f"--n-unlabelled {cfg.n_unlabelled} must be a multiple of --devices {cfg.devices}")
    with scope:
        return distill(cfg, opts, parallel)


def soft_target_source(cfg: DistillConfig, spec: dict) -> TeacherLogits | None:
    """The one soft-target path: a cache, or the teacher file(s) in the graph; None for a baseline without a teacher."""
    weights = [float(w) for w in cfg.teacher_weights] or None
    if cfg.teacher_cache and cfg.lam > 0:
        return TeacherLogits.from_cache(cfg.teacher_cache, spec, cfg.teacher, weights, tta=cfg.teacher_tta)
    if cfg.teacher:
        return TeacherLogits.from_models(cfg.teacher, weights, cfg.input_size)
    return None


def unlabelled_images(folders, labelled=()) -> TgsData | None:
    """The --unlabelled images as one set, each id once; ids of the labelled images (`labelled`) refused (data.tgs.join_unlabelled)."""
    return join_unlabelled([load_unlabelled(u) for u in folders], labelled)


def distill(cfg: DistillConfig, opts, parallel: dict) -> int:
    t0 = time.perf_counter()
    spec = make_spec(cfg.input_size, cfg.resize_mode)
    source = soft_target_source(cfg, spec)
    if cfg.feature_loss:  # the matched stages exist in both models, checked before the run dir exists (a throwaway student)
        check_feature_layers(build_student(cfg), source.feature_teacher(), feature_pairs(cfg.feature_layers))
        print(f"feature distillation: {cfg.feature_loss}, weight {cfg.feature_weight:g}, layers {' '.join(cfg.feature_layers)}", flush=True)
    split_file = cfg.split_file
    first = Path(source.paths[0]) if source is not None and source.paths else None
    if first is None and source is not None and source.cache is not None and source.cache.meta["teachers"]:
        first = Path(source.cache.meta["teachers"][0]["path"])
    if not split_file and first is not None and (first.parent / "split.json").exists():
        split_file = str(first.parent / "split.json")
    train, val, split = load_split_data(cfg.data, split_file, cfg.val_fraction, cfg.split_seed, cfg.max_train)
    unlabelled = unlabelled_images(cfg.unlabelled, (train, val))
    if unlabelled is not None:
        print(f"unlabelled: {len(unlabelled)} images, {cfg.n_unlabelled} per batch (soft term only)", flush=True)
    cache = source.cache if source is not None else None
    data = batches(
        train,
        val,
        spec,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        flip=cfg.flip,
        unlabelled=unlabelled,
        n_unlabelled=cfg.n_unlabelled,
        cache=cache,
        replicas=parallel["replicas"],
        augment=cfg.augment,
        mixup=cfg.mixup,
    )
    n_unl = len(unlabelled) if unlabelled is not None else 0
    name = RunSpec.from_config(cfg, source.label if source is not None else "", unlabelled_count=n_unl).name
    run_dir = start_run(cfg, Path(cfg.out or Path("runs") / name), opts, split, parallel)
    metrics = {**train_student(cfg, opts, run_dir, source, data, val, parallel, n_unl), "unlabelled_images": n_unl}
    write_metrics(run_dir, metrics, t0)
    return 0


def train_student(
    cfg: DistillConfig, opts, run_dir: Path, source: TeacherLogits | None, data, val: TgsData, parallel: dict, n_unlabelled: int = 0
) -> dict:
    """Build the student and its training graph, fit, and score it and its soft target."""
    spec = data.spec
    # the soft target's own score and calibration on the validation split (reported next to the student's)
    t_logits = source.val_logits(data.val_x, data.val.t, spec) if source is not None else None
    cal = calibration(t_logits, val.masks) if source is not None else None
    T = cfg.temperature
    if T == "auto":  # validation labels pick one scalar, as temperature scaling does (see the README)
        T = cal["best_temperature"]
        print(f"temperature auto: T = {T:g} (the soft target's NLL-optimal temperature on the {len(val)} validation images)", flush=True)
    student = build_student(cfg)
    print(
        f"student: {student.name}, {student.count_params():,} params; teacher: "
        + (source.describe() if source else "none")
        + describe(parallel),
        flush=True,
    )
    graph = student_graph(cfg, student, source, T, spec)
    io.write_json(sidecar_path(run_dir / "student.keras"), {**spec, "model_name": student.name})
    info = fit(graph, student, data, cfg, run_dir, "student.keras", opts.resume)
    spec_run = RunSpec.from_config(
        cfg, source.label if source is not None else "", resolved_temperature=float(T), unlabelled_count=n_unlabelled
    )
    metrics = {
        "model": student.name,
        "params": student.count_params(),
        "run": run_dir.name,
        "label": spec_run.label,
        "parallel": parallel,
        "temperature": T,
        **info,
        **final_metrics(student, val, data.val_x, spec, cfg.tune_threshold),
    }
    if cfg.tune_threshold:
        # The threshold is picked on the validation images that val_tuned_threshold then scores, so that
        # score flatters the model (an optimistic estimate); "val" stays at the default threshold 0.5.
        # The sidecar carries it to evaluate.py, export_tflite.py's .tflite sidecars and the Pi (pi/runner.py).
        tuned = metrics["val_tuned_threshold"]
        io.write_json(sidecar_path(run_dir / "student.keras"), {**spec, "threshold": tuned["threshold"], "model_name": student.name})
        print(f"threshold tuned on the validation split: {tuned} (written to the sidecar)", flush=True)
    if source is not None:
        metrics["teacher"] = {**teacher_entry(cfg, source), "val": soft_target_scores(t_logits, val, spec), "calibration": cal}
    return metrics


def student_graph(cfg: DistillConfig, student, source: TeacherLogits | None, temperature: float, spec: dict):
    """The training graph of `student`: hard term (the Lovasz hinge in the last --lovasz-epochs, training.loop), soft term
    from `source` at `temperature`, and the feature term with --feature-loss."""
    return build_training_graph(
        student,
        source,
        temperature=temperature,
        lam=cfg.lam,
        scale=cfg.scale,
        input_scale=spec["scale"],
        hard_loss="lovasz" if cfg.lovasz_epochs else "bce",
        # --feature-loss: the adapters live in the graph only; `student` (saved as student.keras) is unchanged
        feature_loss=cfg.feature_loss,
        feature_weight=cfg.feature_weight,
        feature_layers=feature_pairs(cfg.feature_layers),
    )


def teacher_entry(cfg: DistillConfig, source: TeacherLogits) -> dict:
    """metrics.json's "teacher": where the soft target came from (its scores are added beside: soft_target_scores)."""
    where = {"cache": str(source.cache.path)} if source.cache is not None else {"params": sum(t.count_params() for t in source.models)}
    return {
        **where,
        "label": source.label,
        "kind": source.kind,
        "paths": list(cfg.teacher),
        "n_teachers": source.n_teachers,
        "weights": source.weights,
    }


def soft_target_scores(t_logits: np.ndarray, val: TgsData, spec: dict) -> dict:
    """The soft target's own validation scores: its probabilities sigmoid(logits) at the run's threshold."""
    return evaluate_probs(1 / (1 + np.exp(-t_logits)), val.masks, spec["threshold"])


if __name__ == "__main__":
    run(main)
