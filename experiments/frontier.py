"""Quality against Raspberry Pi latency: the frontier of the student architectures of a sweep.

    python -m experiments.frontier runs/cpu_grid --pi-csv pi.csv
    # exports each student model once (fp32 + int8, SWEEP_DIR/frontier/exports/<model>/), times every .tflite with
    # pi/benchmark.py (--threads, --runs; once per --pi-python), writes SWEEP_DIR/frontier/frontier.csv and frontier.png,
    # and prints one row per (model, setting):
    # model, setting, n seeds, params, MMACs, int8 KB, int8 ms per thread count, kaggle_map mean ± std,
    # paired d_kaggle vs the reference model [bootstrap 95% CI], seeds above the reference, and what breaks the Pi
    # budget (over_budget: params > --max-params, trained int8 file > --max-int8-kb, int8 latency above the reference's)

Settings: baseline (lam = 0), kd (lam > 0), kd_unl (lam > 0 with unlabelled images). Paired differences: the model minus
the reference model (--reference, unet4) of the same setting and seed, on per-image Kaggle scores of the same validation
images; seeds averaged first, the interval bootstraps images (experiments.results.paired_vs, the paired statistic of the
results table). Latency does not depend on the weights, so each model is
exported from one run (kd_unl seed 0 with the fewest options, else its lowest seed); the int8 parity columns are that run's. An export newer
than its student.keras is reused. --pi-csv (pi/benchmark.py --csv on the board) adds `pi_<format>_ms_<n>t_<machine>-<runtime>`.
The plot: Kaggle mAP (± seed std) against int8 latency at the fewest threads (the Pi CSV's when given), the Pareto front
per setting as a step line, the teacher as a dashed line.

One job per module: this command's flags and steps here; the table in experiments.frontier_table, the exports in
experiments.frontier_export, the timing in experiments.frontier_bench (student.latency), the plot in
experiments.frontier_plot.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from common import io
from common.cli import UserError, run
from common.config import HelpFormatter
from experiments.frontier_bench import run_benchmarks
from experiments.frontier_export import plan_exports, run_exports
from experiments.frontier_plot import plot, plot_title, point_labels, x_column
from experiments.frontier_table import assemble, format_table, over_budget, read_runs, summarize
from experiments.results import format_unreadable, unreadable_runs
from student.latency import read_bench_csv


def parse_args(argv) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m experiments.frontier", description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("sweep_dir", help="a folder of run dirs (distill_train.py, the sweep)")
    ap.add_argument("--data", default="", help="Kaggle TGS folder or .npz for the exports' calibration and parity (default: each run's)")
    ap.add_argument("--pi-csv", default="", help="pi/benchmark.py --csv of the board: its latency as extra columns")
    ap.add_argument("--pi-python", nargs="+", default=None, help="pythons with a TFLite runtime to time with (default: this one)")
    ap.add_argument("--threads", default="1,4", help="comma-separated thread counts")
    ap.add_argument("--runs", type=int, default=30, help="timed runs per model and thread count")
    ap.add_argument("--reference", default="unet4", help="the model the paired differences are taken against")
    ap.add_argument("--max-params", type=int, default=125_000, help="the Pi budget: parameters (column over_budget)")
    ap.add_argument("--max-int8-kb", type=float, default=150.0, help="the Pi budget: KB of the trained int8 file")
    ap.add_argument("--overwrite", action="store_true", help="replace SWEEP_DIR/frontier/frontier.csv")
    args = ap.parse_args(argv)
    try:
        args.threads = sorted({int(t) for t in args.threads.split(",") if t.strip()})
    except ValueError:
        raise UserError(f"--threads {args.threads!r} must be comma-separated integers") from None
    if not args.threads or min(args.threads) < 1 or args.runs < 1:
        raise UserError("--threads must be integers >= 1 and --runs >= 1")
    if args.max_params < 1 or not args.max_int8_kb > 0:
        raise UserError(f"--max-params ({args.max_params}) and --max-int8-kb ({args.max_int8_kb}) must be > 0")
    if args.data and not Path(args.data).exists():
        raise UserError(f"--data {args.data} does not exist")
    args.pi_python = args.pi_python or [sys.executable]
    for py in args.pi_python:
        if not (Path(py).is_file() and os.access(py, os.X_OK)):
            raise UserError(f"--pi-python {py} is not an executable file")
    return args


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    root = Path(args.sweep_dir)
    if not root.is_dir():
        raise UserError(f"SWEEP_DIR {root} is not a folder of run dirs")
    out = root / "frontier"
    if (out / "frontier.csv").exists() and not args.overwrite:
        raise UserError(f"{out / 'frontier.csv'} exists; pass --overwrite to replace it")
    pi = read_bench_csv(args.pi_csv, "--pi-csv") if args.pi_csv else None
    bad = unreadable_runs(root)
    print(format_unreadable(bad), end="", file=sys.stderr, flush=True)
    students, teachers = read_runs(root)
    if students.empty:
        raise UserError(f"no finished student runs (config.json + metrics.json, no teacher.keras) under {root}")
    table = summarize(students, args.reference)
    plans = plan_exports(students, out, args.data)
    reports = run_exports(plans)
    benches = run_benchmarks(plans, args.pi_python, args.threads, args.runs, out) if plans else []
    f, local, pi_cols = assemble(table, reports, benches, pi)
    x = x_column(local, pi_cols)
    f["over_budget"] = over_budget(f, x, args.reference, args.max_params, args.max_int8_kb)
    io.write_text(out / "frontier.csv", f.to_csv(index=False))
    with io.atomic_path(out / "frontier.png") as tmp:
        plot(f, teachers, x, plot_title(x, pi, benches), point_labels(students)).savefig(tmp, dpi=110, format="png")
    print(format_table(f, local, pi_cols))
    print(
        f"wrote {out / 'frontier.csv'} and {out / 'frontier.png'}"
        + (f"; {len(bad)} unreadable run(s) left out, named above" if bad else "")
    )
    return 1 if bad else 0


if __name__ == "__main__":
    run(main)
