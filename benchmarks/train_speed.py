"""Training-step speed per Keras backend: steady-state img/s and the one-time compile (first-step) time.

    OMP_NUM_THREADS=1 python -m benchmarks.train_speed --base-filters 16 4 --batch-size 32 128
    KERAS_BACKEND=jax python -m benchmarks.train_speed --backends jax --base-filters 16 --batch-size 32 128 --steps 50   # a GPU box
    OMP_NUM_THREADS=1 python -m benchmarks.train_speed --base-filters 4 8 --batch-size 32 --precision float32 mixed_bfloat16 \
        --jit-compile auto on          # the CPU table of docs/PERFORMANCE.md: backend x precision x XLA / torch.compile
    # prints one row per backend, precision, jit, model and batch size: first step (s), img/s, peak RSS; --json FILE keeps them
    OMP_NUM_THREADS=1 python -m benchmarks.train_speed --base-filters 4 8 --batch-size 32 --save-default
    # ... and saves the fastest float32 backend as this CPU's default (common/backend.py:choose_backend); prints
    # "saved tensorflow as this CPU's default backend (1.47x torch, float32) to ~/.config/seg-distill/backend.json"

Each row runs in a fresh process with KERAS_BACKEND set, training the hard-loss graph of
distill.graph (the baseline's graph: the student's own cost) on random images at the real input size
(128x128x1), AdamW, for --steps timed steps after 3 warm-up steps. Backends that are not installed
are skipped. The device is what the backend computes on (common.devices).
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

from common import io
from common.choices import PRECISIONS
from common.cli import UserError, run
from common.config import HelpFormatter
from training.naming import model_name

ROOT = Path(__file__).resolve().parents[1]
JIT = {"auto": "auto", "on": True, "off": False}  # --jit-compile -> Keras compile(jit_compile=)
NOTHING_TO_COMPARE = "--save-default compares backends: time two or more at --precision float32 --jit-compile auto"


def measure(
    arch: str,
    base_filters: int,
    depth: int,
    batch_size: int,
    steps: int,
    upsample: str = "",
    size: int = 128,
    precision: str = "float32",
    jit: str = "auto",
) -> dict:
    """In this process (backend already chosen): first-step and steady-state timings.

    The imports are here so that the parent process, which only starts one child per backend, loads no backend."""
    import resource

    from common.backend import pin_threads, set_precision

    pin_threads()  # before TensorFlow starts: its own thread pools ignore OMP_NUM_THREADS
    import keras
    import numpy as np

    set_precision(precision)

    from common.devices import backend_devices, describe
    from distill.graph import build_training_graph
    from distill.losses import IdentityLoss
    from models.registry import build_model

    keras.utils.set_random_seed(0)
    name = model_name(arch, base_filters, depth, upsample)  # the run dirs' name: unet4, unet6d3, unet4_bilinear
    model = build_model(arch, (size, size, 1), base_filters, depth, upsample or None, name=name)
    graph = build_training_graph(model)
    graph.compile(optimizer=keras.optimizers.AdamW(1e-3), loss=IdentityLoss(), jit_compile=JIT[jit])
    rng = np.random.default_rng(0)
    x = rng.random((batch_size, size, size, 1), np.float32)
    feed = {"image": x, "mask": (x > 0.5).astype(np.float32)}
    first, dt = time_steps(graph, feed, np.zeros((batch_size, 1), np.float32), steps)
    backend = keras.backend.backend()
    return {
        "backend": backend,
        "device": describe(backend_devices(backend)),
        "model": model.name,
        "params": model.count_params(),
        "batch_size": batch_size,
        "first_step_s": round(first, 2),
        "img_per_s": round(steps * batch_size / dt, 1),
        "steps": steps,
        "threads": os.environ.get("OMP_NUM_THREADS", ""),
        "precision": precision,
        "jit_compile": jit,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def time_steps(graph, feed: dict, dummy, steps: int) -> tuple[float, float]:
    """(first step's seconds, seconds of `steps` steps after 2 more warm-up steps) of graph.train_on_batch."""
    import numpy as np

    t0 = time.perf_counter()
    graph.train_on_batch(feed, dummy)
    first = time.perf_counter() - t0
    for _ in range(2):
        graph.train_on_batch(feed, dummy)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = graph.train_on_batch(feed, dummy)
    float(np.asarray(loss if not isinstance(loss, list) else loss[0]))  # wait for asynchronous backends
    return first, time.perf_counter() - t0


def measure_in_child(backend: str, args, one: list) -> dict | None:
    """One measurement in a fresh process with KERAS_BACKEND=backend (its row), or None after printing why it failed."""
    cmd = [sys.executable, "-m", "benchmarks.train_speed", "--arch", args.arch, "--steps", str(args.steps), "--upsample", args.upsample]
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    p = subprocess.run([*cmd, "--one", json.dumps(one)], cwd=ROOT, capture_output=True, text=True, env=env)
    if p.returncode:
        print(f"{backend:10s} {one[3]:14s} {one[4]:4s} failed: {(p.stderr.strip().splitlines() or ['?'])[-1][:150]}")
        return None
    return json.loads(p.stdout.strip().splitlines()[-1])


def fastest_backend(rows: list[dict]) -> tuple[str, dict]:
    """The backend whose float32 training steps (jit auto: what a plain run does) are fastest, and every backend's speed
    relative to the first one measured: the geometric mean of img/s over the (model, batch) pairs measured on every
    backend. UserError unless two backends or more were measured on a common pair."""
    plain = [r for r in rows if r["precision"] == "float32" and r["jit_compile"] == "auto"]
    backends = list(dict.fromkeys(r["backend"] for r in plain))
    speed = {(r["backend"], r["model"], r["batch_size"]): r["img_per_s"] for r in plain}
    pairs = list(dict.fromkeys((m, b) for (_, m, b) in speed if all((k, m, b) in speed for k in backends)))
    if len(backends) < 2 or not pairs:
        raise UserError(NOTHING_TO_COMPARE)
    geo = {k: math.exp(sum(math.log(speed[(k, m, b)]) for m, b in pairs) / len(pairs)) for k in backends}
    best = max(geo, key=geo.get)
    return best, {k: round(v / geo[backends[0]], 3) for k, v in geo.items()}


def save_default(rows: list[dict]) -> str:
    """Write the fastest backend (fastest_backend) for this CPU (common.backend.cpu_id) where choose_backend reads it."""
    from common.backend import cpu_id, saved_path

    best, ratios = fastest_backend(rows)
    path = saved_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    models = sorted({r["model"] for r in rows})
    record = {"backend": best, "cpu": cpu_id(), "relative_speed": ratios, "models": models, "saved": time.strftime("%Y-%m-%d")}
    io.write_json(path, {**record, "rows": rows})
    first = next(iter(ratios))
    return f"saved {best} as this CPU's default backend ({ratios[best]:.2f}x {first}, float32) to {path}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument(
        "--backends",
        nargs="+",
        default=["torch", "jax", "tensorflow"],
        help="Keras backends to time, each in its own process (not installed: skipped)",
    )
    ap.add_argument("--arch", default="unet", help="architecture (models.registry)")
    ap.add_argument("--base-filters", type=int, nargs="+", default=[16, 4], help="widths to time: one model each")
    ap.add_argument("--depth", type=int, default=4, help="poolings of every model timed")
    ap.add_argument("--upsample", default="", help="decoder upsampling (e.g. bilinear; default: the architecture's)")
    ap.add_argument("--batch-size", type=int, nargs="+", default=[32, 128], help="batch sizes to time: one row each")
    ap.add_argument("--steps", type=int, default=10, help="timed training steps (after 3 warm-up steps)")
    ap.add_argument(
        "--precision", nargs="+", default=["float32"], choices=PRECISIONS, help="compute dtypes to time (--precision of the scripts)"
    )
    ap.add_argument(
        "--jit-compile",
        nargs="+",
        default=["auto"],
        choices=tuple(JIT),
        help="Keras compile(jit_compile=): auto (XLA on jax; none on a CPU-only tensorflow or on torch), on (XLA on "
        "tensorflow, torch.compile on torch), off",
    )
    ap.add_argument("--json", default="", help="also write the rows to this file")
    ap.add_argument(
        "--save-default",
        action="store_true",
        help="save the fastest float32 backend as this CPU's default (common/backend.py:choose_backend; KERAS_BACKEND still wins)",
    )
    ap.add_argument("--one", default="", help=argparse.SUPPRESS)  # internal: one measurement in this process, JSON on stdout
    args = ap.parse_args(argv)
    if args.one:
        f, depth, b, precision, jit = json.loads(args.one)
        print(json.dumps(measure(args.arch, f, depth, b, args.steps, args.upsample, precision=precision, jit=jit)))
        return 0
    if args.steps < 1 or min(args.batch_size) < 1 or min(args.base_filters) < 1:
        raise UserError("--steps, --batch-size and --base-filters must be >= 1")
    installed = [b for b in args.backends if importlib.util.find_spec(b) is not None]
    if args.save_default and ("float32" not in args.precision or "auto" not in args.jit_compile or len(installed) < 2):
        raise UserError(NOTHING_TO_COMPARE)
    rows = []
    print(
        f"{'backend':10s} {'precision':14s} {'jit':4s} {'model':10s} {'batch':>5s} {'first step s':>12s} {'img/s':>7s} {'RSS MB':>7s}",
        flush=True,
    )
    for backend in args.backends:
        if importlib.util.find_spec(backend) is None:
            print(f"{backend:10s} (not installed: skipped)")
            continue
        for f, b, precision, jit in itertools.product(args.base_filters, args.batch_size, args.precision, args.jit_compile):
            r = measure_in_child(backend, args, [f, args.depth, b, precision, jit])
            if r is not None:
                rows.append(r)
                print(
                    f"{backend:10s} {precision:14s} {jit:4s} {r['model']:10s} {b:5d} {r['first_step_s']:12.2f} {r['img_per_s']:7.1f} "
                    f"{r['peak_rss_mb']:7d}",
                    flush=True,
                )
    if args.json:
        io.write_json(args.json, rows)
    if args.save_default:
        print(save_default(rows))
    return 0


if __name__ == "__main__":
    run(main)
