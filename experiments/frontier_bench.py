"""The frontier's latency (experiments.frontier): every exported .tflite timed by pi/benchmark.py under each python
given (student.latency, the driver benchmarks.arch_latency uses too)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from experiments.frontier_table import FORMATS
from student.latency import run_pi_benchmark


def run_benchmarks(plans: list[dict], pythons: list[str], threads: list[int], runs: int, out: Path) -> list[pd.DataFrame]:
    """pi/benchmark.py on every exported .tflite (the plans of frontier_export), once per python; its CSVs
    (OUT/bench_<i>.csv), read back and checked."""
    files = [(p["dir"] / f"{p['model']}_{f}.tflite").resolve() for p in plans for f in FORMATS]
    benches = []
    for i, py in enumerate(pythons):
        print(f"benchmarking {len(files)} file(s) with {py} (threads {threads}, {runs} runs)", flush=True)
        benches.append(run_pi_benchmark(files, py, threads, runs, out / f"bench_{i}.csv"))
    return benches
