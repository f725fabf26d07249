"""Raspberry Pi latency of every student architecture, untrained (latency does not depend on the weights).

    python -m benchmarks.arch_latency --pi-python .venv-pi/bin/python litert/bin/python --threads 1,4 --runs 30
    # builds the models of experiments/configs/cpu_frontier.py's "model" axis (or --models ARCH:WIDTH[:DEPTH[:UPSAMPLE]] ...),
    # exports each to fp32 and int8 TFLite (student.export.convert, the same converter and Pi-runtime check as
    # export_tflite.py; int8 calibrated on random images), times every file with pi/benchmark.py under each python
    # (its TFLite runtime; student.latency.run_pi_benchmark, as the frontier does),
    # and prints one row per model: params, MMACs, fp32/int8 KB, median ms per runtime, format and thread count;
    # writes OUT/arch_latency.csv (default OUT: runs/arch_latency)

This is the latency half of the frontier before anything is trained (which shapes fit a latency budget); the
quality half comes from training them: experiments/configs/cpu_frontier.py and `python -m experiments.frontier`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from common import io
from common.backend import require_tensorflow
from common.cli import UserError, run
from common.config import HelpFormatter, read_config_file
from student.latency import run_pi_benchmark
from training.naming import model_name

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "experiments" / "configs" / "cpu_frontier.json"


def parse_model(text: str) -> dict:
    parts = text.split(":")
    try:
        m = {"arch": parts[0], "base_filters": int(parts[1]), "depth": int(parts[2]) if len(parts) > 2 else 4}
    except (IndexError, ValueError):
        raise UserError(f"--models {text!r} must be ARCH:WIDTH[:DEPTH[:UPSAMPLE]], e.g. sepunet:8 or unet:6:3") from None
    return {**m, "upsample": parts[3] if len(parts) > 3 else ""}


def config_models(path: Path) -> list[dict]:
    try:
        grids = read_config_file(path)["grid"]
    except (ValueError, KeyError) as e:
        raise UserError(f"--config {path}: {e}") from None
    out = []
    for g in grids if isinstance(grids, list) else [grids]:
        for m in g.get("model", []):
            m = {"arch": "unet", "base_filters": 4, "depth": 4, "upsample": "", **m}
            out += [m] if m not in out else []
    return out


def export_all(models: list[dict], out: Path, overwrite: bool) -> tuple[list[Path], dict]:
    from models.registry import build_model
    from student.export import convert  # main chose the tensorflow backend

    calib = np.random.default_rng(0).random((32, 128, 128, 1)).astype(np.float32)
    files, params = [], {}
    for m in models:
        name = model_name(**m)
        model = build_model(m["arch"], (128, 128, 1), m["base_filters"], m["depth"], m["upsample"] or None, name=name)
        params[name] = model.count_params()
        for fmt in ("fp32", "int8"):
            path = out / f"{name}_{fmt}.tflite"
            if overwrite or not path.exists():
                print(f"exporting {path.name}", flush=True)
                convert(model, fmt, path, calib if fmt == "int8" else None, False)
            files.append(path)
    return files, params


def bench(files: list[Path], pythons: list[str], threads: str, runs: int, out: Path) -> pd.DataFrame:
    """pi/benchmark.py's rows for every file, once per python (OUT/bench_<i>.csv)."""
    counts = threads.split(",")  # checked by pi/benchmark.py
    return pd.concat([run_pi_benchmark(files, py, counts, runs, out / f"bench_{i}.csv") for i, py in enumerate(pythons)], ignore_index=True)


def table(b: pd.DataFrame, params: dict) -> pd.DataFrame:
    b = b.assign(
        name=[f.rsplit("_", 1)[0] for f in b.model.str.removesuffix(".tflite")],
        fmt=[f.rsplit("_", 1)[1] for f in b.model.str.removesuffix(".tflite")],
    )
    rows = []
    for name, g in b.groupby("name", sort=False):
        r = {"model": name, "params": params[name], "mmacs": round(float(g[g.fmt == "int8"].macs.iloc[0]) / 1e6, 1)}
        r.update({f"{f}_kb": float(g[g.fmt == f].size_kb.iloc[0]) for f in ("fp32", "int8")})
        for x in g.itertuples():
            r[f"{x.fmt} {x.threads}t {x.runtime}"] = float(x.median_ms)
        rows.append(r)
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--models", nargs="+", default=None, help="ARCH:WIDTH[:DEPTH[:UPSAMPLE]] (default: the cpu_frontier preset's)")
    ap.add_argument("--pi-python", nargs="+", default=[sys.executable], help="pythons with a TFLite runtime (default: this one)")
    ap.add_argument("--threads", default="1,4", help="comma-separated TFLite interpreter thread counts")
    ap.add_argument("--runs", type=int, default=30, help="timed runs per file, runtime and thread count (pi/benchmark.py)")
    ap.add_argument(
        "--out",
        default=str(ROOT / "runs" / "arch_latency"),
        help="folder of the .tflite files and arch_latency.csv (default: the repo's runs/arch_latency)",
    )
    ap.add_argument("--overwrite", action="store_true", help="export again even where the .tflite files exist")
    args = ap.parse_args(argv)
    models = [parse_model(t) for t in args.models] if args.models else config_models(CONFIG)
    require_tensorflow()  # the TFLite converter needs TensorFlow's Keras backend
    from models.registry import check_arch

    for m in models:
        try:
            check_arch(m["arch"], (128, 128, 1), m["base_filters"], m["depth"], m["upsample"])
        except ValueError as e:
            raise UserError(f"--models: {e}") from None
    for py in args.pi_python:
        if not (Path(py).is_file() and os.access(py, os.X_OK)):
            raise UserError(f"--pi-python {py} is not an executable file")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files, params = export_all(models, out, args.overwrite)
    t = table(bench(files, args.pi_python, args.threads, args.runs, out), params)
    io.write_text(out / "arch_latency.csv", t.to_csv(index=False))
    with pd.option_context("display.width", 250, "display.max_columns", 50):
        print(t.to_string(index=False))
    print(f"wrote {out / 'arch_latency.csv'}")
    return 0


if __name__ == "__main__":
    run(main)
