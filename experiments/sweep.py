"""Run a grid of teacher/student experiments; resume by skipping finished runs; tabulate.

    python -m experiments.sweep --config experiments/configs/quick.json
    python -m experiments.sweep --config experiments/configs/cpu.json --data ../shared/data/tgs-salt
    # prints the planned runs, a sweep-level progress bar with ETA (each run's full log goes to
    # RUN_DIR/log.txt), then the summary table of experiments.results; writes SWEEP_DIR/results.csv

Config (JSON): {"name", "data": path or "synthetic", "synthetic": {n_train, n_test, seed},
"teacher": {teacher.train flags} or "teacher_path", "student": {distill_train flags},
"grid": {"lam": [...], "temperature": [...], "scale": [...], "base_filters": [...], "unlabelled": [false, true]},
"seeds": [...]}. lam = 0 is the baseline (T and s(T) do not apply to it). Every run is its own run
dir under runs/<name>/ (or --out); a run with metrics.json is finished and skipped, an unfinished
one is started again from scratch.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common.cli import UserError, run

ROOT = Path(__file__).resolve().parents[1]


def load_config(path) -> dict:
    try:
        cfg = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read sweep config {path}: {e}") from None
    for key in ("name", "grid", "seeds"):
        if key not in cfg:
            raise UserError(f"sweep config {path} has no {key!r}")
    return cfg


def flags(d: dict) -> list[str]:
    out = []
    for k, v in d.items():
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            out.append(flag if v else "--no-" + k.replace("_", "-"))
        else:
            out += [flag, str(v)]
    return out


def student_runs(cfg: dict, teacher_filters: int) -> list[dict]:
    """Expand the grid; the baseline (lam = 0) once per width and seed."""
    grid = {"lam": [0.9], "temperature": [2.0], "scale": ["T"], "base_filters": [cfg.get("student", {}).get("base_filters", 4)],
            "unlabelled": [False], **cfg["grid"]}
    seen, runs = set(), []
    for lam, T, scale, width, unl, seed in itertools.product(grid["lam"], grid["temperature"], grid["scale"], grid["base_filters"],
                                                              grid["unlabelled"], cfg["seeds"]):
        if lam == 0:
            T, scale, unl = 2.0, "T", False
        key = (lam, T, scale, width, unl, seed)
        if key in seen:
            continue
        seen.add(key)
        student = f"unet{width}"
        name = f"{student}_baseline_s{seed}" if lam == 0 else \
            f"{student}_from_unet{teacher_filters}_T{T:g}_l{lam:g}_s{scale}{'_unl' if unl else ''}_s{seed}"
        runs.append({"name": name, "lam": lam, "temperature": T, "scale": scale, "base_filters": width, "unlabelled": unl, "seed": seed})
    # seed by seed, so an interrupted sweep already holds complete paired comparisons
    return sorted(runs, key=lambda r: r["seed"])


def run_logged(cmd: list[str], log: Path) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        return subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--data", default="", help="override the config's data")
    ap.add_argument("--out", default="", help="sweep dir (default runs/<name>)")
    ap.add_argument("--teacher", default="", help="reuse this trained teacher .keras instead of training one")
    ap.add_argument("--dry-run", action="store_true", help="list the runs and exit")
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    sweep = Path(args.out or ROOT / "runs" / cfg["name"])
    data = args.data or cfg.get("data", "synthetic")
    py = sys.executable
    teacher_cfg = dict(cfg.get("teacher", {}))
    teacher_path = args.teacher or cfg.get("teacher_path", "")
    teacher_filters = teacher_cfg.get("base_filters", 16)
    runs = student_runs(cfg, teacher_filters)
    needs_unlabelled = any(r["unlabelled"] for r in runs)
    print(f"sweep {cfg['name']}: {len(runs)} student runs + {'given' if teacher_path else 'one'} teacher -> {sweep}", flush=True)
    for r in runs:
        print(f"  {r['name']}")
    if args.dry_run:
        return 0

    if data == "synthetic":
        syn = {"n_train": 600, "n_test": 150, "seed": 0, **cfg.get("synthetic", {})}
        data = str(sweep / "data")
        if not (Path(data) / "train").exists():
            from data.synthetic import generate

            generate(data, **syn)
            print(f"synthetic data: {syn['n_train']} labelled + {syn['n_test']} unlabelled images in {data}", flush=True)
    elif not Path(data).exists():
        raise UserError(f"data {data} does not exist")

    from tqdm import tqdm

    jobs = []
    if not teacher_path:
        tdir = sweep / "teacher"
        teacher_path = str(tdir / "teacher.keras")
        cmd = [py, "-m", "teacher.train", "--data", data, "--out", str(tdir), *flags(teacher_cfg)]
        jobs.append(("teacher", tdir, cmd))
    elif not Path(teacher_path).exists():
        raise UserError(f"teacher {teacher_path} does not exist")
    student_fixed = {k: v for k, v in cfg.get("student", {}).items() if k != "base_filters"}
    cache_dir = Path(teacher_path).parent / "cache"
    if cfg.get("teacher_cache"):  # teacher logits computed once: a KD epoch then costs what a baseline epoch costs
        cmd = [py, "-m", "teacher.cache", "--teacher", teacher_path, "--data", data, "--out", str(cache_dir)]
        if needs_unlabelled:
            cmd += ["--unlabelled", data]
        jobs.append(("teacher_cache", cache_dir, cmd))
    for r in runs:
        rdir = sweep / r["name"]
        cmd = [py, "distill_train.py", "--data", data, "--out", str(rdir), "--seed", str(r["seed"]), "--lam", str(r["lam"]),
               "--base-filters", str(r["base_filters"]), *flags(student_fixed)]
        split = Path(teacher_path).parent / "split.json"
        cmd += ["--split-file", str(split)] if r["lam"] == 0 and (split.exists() or not args.teacher) else []  # the teacher's split
        if r["lam"] > 0:
            cmd += ["--teacher", teacher_path, "--temperature", str(r["temperature"]), "--scale", r["scale"]]
            cmd += ["--teacher-cache", str(cache_dir)] if cfg.get("teacher_cache") else []
        if r["unlabelled"]:
            cmd += ["--unlabelled", data]
        jobs.append((r["name"], rdir, cmd))
    failed = []
    bar = tqdm(jobs, desc=f"sweep {cfg['name']}", unit="run", file=sys.stdout, dynamic_ncols=True)
    for name, rdir, cmd in bar:
        bar.set_postfix_str(name)
        if (rdir / ("meta.json" if name == "teacher_cache" else "metrics.json")).exists():
            continue
        t0 = time.perf_counter()
        code = run_logged(cmd + ["--overwrite"], sweep / "logs" / f"{name}.txt")
        status = "ok" if code == 0 else f"FAILED (exit {code}, see {sweep / 'logs' / (name + '.txt')})"
        tqdm.write(f"{name}: {status} in {time.perf_counter() - t0:.0f} s")
        if code:
            failed.append(name)
            if name in ("teacher", "teacher_cache"):
                raise UserError(f"{name} failed; see {sweep / 'logs' / (name + '.txt')}")
    from experiments.results import format_summary, write_tables

    df, s = write_tables(sweep)
    if not df.empty:
        print(format_summary(s))
        print(f"wrote {sweep / 'results.csv'} ({len(df)} runs) and {sweep / 'summary.csv'}")
    if failed:
        raise UserError(f"{len(failed)} run(s) failed: {', '.join(failed)}")
    return 0


if __name__ == "__main__":
    run(main)
