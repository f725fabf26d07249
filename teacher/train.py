"""Train the U-Net teacher on TGS Salt.

    python -m teacher.train --data ../shared/data/tgs-salt --out runs/unet16_teacher_s0
    KERAS_BACKEND=jax python -m teacher.train ... --devices 4 --batch-size 128   # data parallel over 4 GPUs
    # prints the config, Keras' per-epoch progress, "val mean_iou ... kaggle_map ..." per epoch and
    # "done: val mean_iou 0.8.. kaggle_map 0.7.. (1,94x,xxx params, best epoch N, xx img/s) -> RUN_DIR"

Writes RUN_DIR/config.json, split.json, history.csv, teacher.keras (the best epoch by validation mean IoU, +
teacher.keras.json, the preprocessing sidecar), teacher_last.keras (the last epoch, + its sidecar: soft targets
that no selection on the validation images flatters) and metrics.json. The loss is BCE from logits (or BCE + soft Dice), computed
by the same loss layer and graph builder that train the students (with lambda = 0, no teacher).
"""

from __future__ import annotations

from common.backend import choose_backend

choose_backend()

import time
from pathlib import Path

from common import io
from common.backend import set_precision
from common.cli import run
from common.config import parse_args, show
from common.devices import device_report
from common.distribute import data_parallel, describe
from distill.graph import build_training_graph
from models.registry import build_model
from pi.sidecar import make_spec, sidecar_path
from teacher.config import TeacherConfig, validate
from training.loop import fit

LAST = "teacher_last.keras"  # the last epoch's weights beside the best epoch's teacher.keras
from training.runs import batches, load_split_data, start_run, write_metrics
from training.scoring import final_metrics, logits_calibration


def main(argv=None) -> int:
    cfg, opts = parse_args(TeacherConfig, argv, __doc__, required=("data", "out"))
    validate(cfg)
    show(cfg)
    devices = device_report(cfg.accelerator)  # before the first epoch: the backend and what it trains on
    set_precision(cfg.precision)
    scope, parallel = data_parallel(cfg.devices, cfg.batch_size)  # before any model exists
    parallel["device_report"] = devices  # config.json records the backend's devices
    t0 = time.perf_counter()
    spec = make_spec(cfg.input_size, cfg.resize_mode)
    train, val, split = load_split_data(cfg.data, cfg.split_file, cfg.val_fraction, cfg.split_seed, cfg.max_train)
    run_dir = start_run(cfg, Path(cfg.out), opts, split, parallel)
    data = batches(train, val, spec, batch_size=cfg.batch_size, seed=cfg.seed, flip=cfg.flip, replicas=parallel["replicas"])
    with scope:
        model = build_model(cfg.arch, (cfg.input_size, cfg.input_size, 1), cfg.base_filters, cfg.depth, cfg.upsample, name=cfg.model_name)
        print(f"teacher: {model.name}, {model.count_params():,} params" + describe(parallel), flush=True)
        graph = build_training_graph(model, None, temperature=1.0, lam=0.0, dice=cfg.loss == "bce_dice", input_scale=spec["scale"])
        for name in ("teacher.keras", LAST):
            io.write_json(sidecar_path(run_dir / name), {**spec, "model_name": model.name})
        info = fit(graph, model, data, cfg, run_dir, "teacher.keras", opts.resume, last_name=LAST)
    metrics = {
        "model": model.name,
        "params": model.count_params(),
        "parallel": parallel,
        **info,
        **final_metrics(model, val, data.val_x, spec),
    }
    metrics["calibration"] = logits_calibration(model, data.val_x, val.masks, spec)
    write_metrics(run_dir, metrics, t0)
    return 0


if __name__ == "__main__":
    run(main)
