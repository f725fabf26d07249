"""The student's latency: pi/benchmark.py run on .tflite files under a given python, its CSV read back and checked.

The one driver of pi/benchmark.py for the project's commands: benchmarks.arch_latency (untrained architectures) and
experiments.frontier (the trained students of a sweep) both time their exports with `run_pi_benchmark`, and the
frontier reads a CSV made on the board itself (--pi-csv) with the same `read_bench_csv`. It sits under student/ beside
student.export (what makes the files it times) because experiments and benchmarks are independent layers that cannot
import each other, and pi/ may import nothing of the project nor pandas; the CSV's columns are pi.bench_csv's, which
pi/benchmark.py writes with. pi/benchmark.py runs in a subprocess: the python given is the one with the TFLite
runtime to time (tflite-runtime cannot share a process with TensorFlow).
Keras-free: importing it loads neither Keras nor TensorFlow.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pandas as pd

from common.cli import UserError
from pi.bench_csv import CSV_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
BENCHMARK = ROOT / "pi" / "benchmark.py"


def call(cmd: list[str], what: str) -> str:
    """Run a project command from the repository root; its `error: ...` line (or last line) becomes a UserError that
    names `what`. Returns its stdout."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3")}
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        lines = [x for x in (p.stderr + "\n" + p.stdout).splitlines() if x.strip()]
        msg = next((x for x in reversed(lines) if x.startswith("error:")), lines[-1] if lines else "")
        raise UserError(f"{what} failed (exit {p.returncode}): {msg.removeprefix('error:').strip()}")
    return p.stdout


def read_bench_csv(path, what: str) -> pd.DataFrame:
    """A CSV of pi/benchmark.py --csv, checked: its columns and numbers; adds `file` (the model's file name)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist")
    try:
        df = pd.read_csv(path)
    except (ValueError, OSError) as e:
        raise UserError(f"{what} {path} is not a readable CSV: {e}") from None
    missing = [c for c in CSV_COLUMNS if c not in df.columns]
    if missing:
        raise UserError(f"{what} {path} lacks column(s) {', '.join(missing)}; expected {','.join(CSV_COLUMNS)} (pi/benchmark.py --csv)")
    if df.empty:
        raise UserError(f"{what} {path} has no rows")
    for c in ("threads", "median_ms"):
        if pd.to_numeric(df[c], errors="coerce").isna().any():
            raise UserError(f"{what} {path}: column {c} holds a value that is not a number")
    return df.assign(file=[Path(str(m)).name for m in df.model], threads=df.threads.astype(int))


def run_pi_benchmark(files, python: str, threads, runs: int, csv: Path) -> pd.DataFrame:
    """pi/benchmark.py on `files` under `python` (its TFLite runtime), at each of `threads` (ints), `runs` timed calls
    each; its CSV (written to `csv`, replaced) read back by read_bench_csv: one row per (file, threads)."""
    csv = Path(csv).resolve()
    cmd = [python, str(BENCHMARK), "--models", *map(str, files), "--threads", ",".join(map(str, threads))]
    call([*cmd, "--runs", str(runs), "--csv", str(csv), "--overwrite"], f"pi/benchmark.py with {python}")
    return read_bench_csv(csv, "benchmark CSV")
