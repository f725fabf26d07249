"""Raspberry Pi latency of every student architecture, untrained (latency does not depend on the weights).

    python -m benchmarks.arch_latency --pi-python .venv-pi/bin/python litert/bin/python --threads 1,4 --runs 30
    # builds the models of experiments/configs/cpu_frontier.json's "model" axis (or --models ARCH:WIDTH[:DEPTH[:UPSAMPLE]] ...),
    # exports each to fp32 and int8 TFLite (export_tflite.convert, the same converter and Pi-runtime check; int8
    # calibrated on random images), times every file with pi/benchmark.py under each python (its TFLite runtime),
    # and prints one row per model: params, MMACs, fp32/int8 KB, median ms per runtime, format and thread count;
    # writes OUT/arch_latency.csv (default OUT: runs/arch_latency)

This is the latency half of the frontier before anything is trained (which shapes fit a latency budget); the
quality half comes from training them: experiments/configs/cpu_frontier.json and `python -m experiments.frontier`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from common import io
from common.cli import UserError, run
from common.config import HelpFormatter
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
    grids = json.loads(path.read_text())["grid"]
    out = []
    for g in grids if isinstance(grids, list) else [grids]:
        for m in g.get("model", []):
            m = {"arch": "unet", "base_filters": 4, "depth": 4, "upsample": "", **m}
            out += [m] if m not in out else []
    return out


def export_all(models: list[dict], out: Path, overwrite: bool) -> tuple[list[Path], dict]:
    sys.path.insert(0, str(ROOT))
    import export_tflite  # sets up TensorFlow (main chose its Keras backend)
    from models.registry import build_model

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
                export_tflite.convert(model, fmt, path, calib if fmt == "int8" else None, False)
            files.append(path)
    return files, params


def bench(files: list[Path], pythons: list[str], threads: str, runs: int, out: Path) -> pd.DataFrame:
    frames = []
    for i, py in enumerate(pythons):
        csv = out / f"bench_{i}.csv"
        cmd = [py, str(ROOT / "pi" / "benchmark.py"), "--models", *map(str, files), "--threads", threads, "--runs", str(runs)]
        p = subprocess.run([*cmd, "--csv", str(csv), "--overwrite"], capture_output=True, text=True)
        if p.returncode:
            raise UserError(f"pi/benchmark.py with {py} failed: {(p.stderr.strip().splitlines() or ['?'])[-1]}")
        frames.append(pd.read_csv(csv))
    return pd.concat(frames, ignore_index=True)


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
    os.environ["KERAS_BACKEND"] = "tensorflow"  # the TFLite converter needs TensorFlow's Keras backend
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
