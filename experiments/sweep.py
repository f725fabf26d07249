"""Run a grid of teacher/student experiments; resume by skipping finished runs; tabulate.

    python -m experiments.sweep --config experiments/configs/quick.json
    python -m experiments.sweep --config experiments/configs/cpu.json --data ../shared/data/tgs-salt
    # prints the planned runs, a sweep-level progress bar with ETA (each run's full log goes to
    # RUN_DIR/log.txt), then the summary table of experiments.results; writes SWEEP_DIR/results.csv

    # two streams on one machine (a 2-core CPU runs two 1-thread jobs ~1.3x faster than one 2-thread job):
    OMP_NUM_THREADS=1 python -m experiments.sweep --config experiments/configs/cpu.json --seeds 0 1 &
    OMP_NUM_THREADS=1 python -m experiments.sweep --config experiments/configs/cpu.json --seeds 2

Config (JSON): {"name", "data": path or "synthetic", "synthetic": {n_train, n_test, seed},
"teacher": {teacher.train flags} or "teacher_path", "ensemble_seeds": [seeds of extra teachers],
"student": {distill_train flags}, "grid": GRID or [GRID, ...], "seeds": [...]}, where GRID is
{"lam": [...], "temperature": [...], "scale": [...], "base_filters": [...], "unlabelled": [false, true],
"ensemble": [false, true]}; a list of grids runs the union of their products (so a costly axis such as
the ensemble need not multiply every other one). lam = 0 is the baseline (T, s(T), unlabelled and
ensemble do not apply to it). "ensemble": true distils from the mean logits of the main teacher and
the teachers trained with "ensemble_seeds" (same flags and split, other seeds). Every run is its own
run dir under runs/<name>/ (or --out); a run with metrics.json is finished and skipped, an interrupted
one (checkpoint.json) continues from its last finished epoch (--resume; started again if that fails).
Concurrent sweeps on one dir are safe: a run that another sweep is training (locked) is skipped and
reported.
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
from common.io import is_locked

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


GRID_KEYS = ("lam", "temperature", "scale", "base_filters", "unlabelled", "ensemble", "blackbox")
BLACKBOX = (False, "mirrored", "noflip")


def student_runs(cfg: dict, teacher_filters: int) -> list[dict]:
    """Expand the grid (or the union of several grids); the baseline (lam = 0) once per width and seed."""
    grids = cfg["grid"] if isinstance(cfg["grid"], list) else [cfg["grid"]]
    n_ens = 1 + len(cfg.get("ensemble_seeds", []))
    seen, runs = set(), []
    for g in grids:
        unknown = set(g) - set(GRID_KEYS)
        if unknown:
            raise UserError(f"sweep grid has unknown axis {sorted(unknown)[0]!r} (known: {', '.join(GRID_KEYS)})")
        grid = {"lam": [0.9], "temperature": [2.0], "scale": ["T"], "base_filters": [cfg.get("student", {}).get("base_filters", 4)],
                "unlabelled": [False], "ensemble": [False], "blackbox": [False], **g}
        if any(grid["ensemble"]) and n_ens < 2:
            raise UserError("sweep grid asks for \"ensemble\": true but the config has no \"ensemble_seeds\"")
        bad = [v for v in grid["blackbox"] if v not in BLACKBOX] + [t for t in grid["temperature"] if isinstance(t, str) and t != "auto"]
        if bad:
            raise UserError(f"sweep grid value {bad[0]!r} is not allowed (blackbox: false, \"mirrored\", \"noflip\"; temperature: a number or \"auto\")")
        for lam, T, scale, width, unl, ens, bb, seed in itertools.product(*(grid[k] for k in GRID_KEYS), cfg["seeds"]):
            if lam == 0:
                T, scale, unl, ens, bb = 2.0, "T", False, False, False
            if bb and (unl or ens):
                raise UserError("sweep grid combines \"blackbox\" with unlabelled or ensemble runs (the black-box cache holds the labelled images of one teacher)")
            key = (lam, T, scale, width, unl, ens, bb, seed)
            if key in seen:
                continue
            seen.add(key)
            student = f"unet{width}"
            teacher = "blackbox" if bb else f"unet{teacher_filters}" + (f"x{n_ens}" if ens else "")
            t_name = "auto" if T == "auto" else f"{T:g}"
            name = f"{student}_baseline_s{seed}" if lam == 0 else \
                f"{student}_from_{teacher}_T{t_name}_l{lam:g}_s{scale}{'_unl' if unl else ''}{'_noflip' if bb == 'noflip' else ''}_s{seed}"
            runs.append({"name": name, "lam": lam, "temperature": T, "scale": scale, "base_filters": width, "unlabelled": unl,
                         "ensemble": ens, "blackbox": bb, "seed": seed})
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
    ap.add_argument("--seeds", type=int, nargs="+", help="run only these of the config's student seeds (teachers always)")
    ap.add_argument("--dry-run", action="store_true", help="list the runs and exit")
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    if args.seeds:
        bad = sorted(set(args.seeds) - set(cfg["seeds"]))
        if bad:
            raise UserError(f"--seeds {bad[0]} is not among the config's seeds {cfg['seeds']}")
        cfg["seeds"] = [s for s in cfg["seeds"] if s in args.seeds]
    sweep = Path(args.out or ROOT / "runs" / cfg["name"])
    data = args.data or cfg.get("data", "synthetic")
    py = sys.executable
    teacher_cfg = dict(cfg.get("teacher", {}))
    teacher_path = args.teacher or cfg.get("teacher_path", "")
    given_teacher = bool(teacher_path)  # not trained here: it may come without a split.json
    teacher_filters = teacher_cfg.get("base_filters", 16)
    if given_teacher:  # run names say the given teacher's real width (its sidecar names the model, e.g. "unet8")
        try:
            model_name = str(json.loads(Path(teacher_path + ".json").read_text()).get("model_name", ""))
        except (OSError, ValueError, AttributeError):  # no or unreadable sidecar: the config's width
            model_name = ""
        teacher_filters = int(model_name[4:]) if model_name.startswith("unet") and model_name[4:].isdigit() else teacher_filters
    runs = student_runs(cfg, teacher_filters)
    ens_seeds = cfg.get("ensemble_seeds", [])
    print(f"sweep {cfg['name']}: {len(runs)} student runs + {'given' if teacher_path else 'one'} teacher"
          + (f" + {len(ens_seeds)} more for the ensemble" if ens_seeds else "") + f" -> {sweep}", flush=True)
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
        jobs.append(("teacher", tdir, tdir / "metrics.json", cmd, []))
    elif not Path(teacher_path).exists():
        raise UserError(f"teacher {teacher_path} does not exist")
    split = Path(teacher_path).parent / "split.json"
    ensemble = [teacher_path]
    for s in ens_seeds:  # the ensemble's other members: same flags and split, another seed
        tdir = sweep / f"teacher_s{s}"
        ensemble.append(str(tdir / "teacher.keras"))
        cmd = [py, "-m", "teacher.train", "--data", data, "--out", str(tdir), *flags({**teacher_cfg, "seed": s}), "--split-file", str(split)]
        jobs.append((f"teacher_s{s}", tdir, tdir / "metrics.json", cmd, [split]))
    student_fixed = {k: v for k, v in cfg.get("student", {}).items() if k != "base_filters"}
    cache_dir = Path(teacher_path).parent / "cache"
    ens_cache = sweep / f"teacher_ensemble{len(ensemble)}" / "cache"
    if cfg.get("teacher_cache"):  # teacher logits computed once: a KD epoch then costs what a baseline epoch costs
        caches = [("teacher_cache", [teacher_path], cache_dir, False)]
        caches += [("ensemble_cache", ensemble, ens_cache, True)] if any(r["ensemble"] for r in runs) else []
        for name, members, cdir, ens in caches:
            cmd = [py, "-m", "teacher.cache", *(a for t in members for a in ("--teacher", t)), "--data", data, "--out", str(cdir)]
            cmd += ["--unlabelled", data] if any(r["unlabelled"] and r["ensemble"] == ens for r in runs) else []
            jobs.append((name, cdir, cdir / "meta.json", cmd, [Path(t) for t in members]))
    bb_dir = sweep / "teacher_blackbox"
    if any(r["blackbox"] for r in runs):  # the teacher as a black box: its 16-bit probability maps, no flipped views
        probs = bb_dir / "probabilities"
        cmd = [py, "evaluate.py", "--model", teacher_path, "--data", data, "--split", "all", "--save-probabilities", str(probs),
               "--out", str(bb_dir / "teacher_scores.json")]
        jobs.append(("blackbox_probabilities", bb_dir, probs, cmd, [Path(teacher_path)]))
        cmd = [py, "-m", "teacher.cache", "--from-probabilities", str(probs), "--data", data, "--out", str(bb_dir / "cache"),
               "--input-size", str(cfg.get("student", {}).get("input_size", 128))]
        jobs.append(("blackbox_cache", bb_dir / "cache", bb_dir / "cache" / "meta.json", cmd, [probs]))
    for r in runs:
        rdir = sweep / r["name"]
        cmd = [py, "distill_train.py", "--data", data, "--out", str(rdir), "--seed", str(r["seed"]), "--lam", str(r["lam"]),
               "--base-filters", str(r["base_filters"]), *flags(student_fixed)]
        # the teacher's split (a black-box cache names no teacher, so it is passed too)
        pass_split = (r["lam"] == 0 or r["blackbox"]) and (split.exists() or not given_teacher)
        cmd += ["--split-file", str(split)] if pass_split else []
        needs = [split] if pass_split and r["blackbox"] else []
        if r["lam"] > 0:
            cmd += ["--temperature", str(r["temperature"]), "--scale", r["scale"]]
        if r["blackbox"]:  # distilled from the probability maps alone; "noflip" trains without flips, "mirrored" flips the maps
            cmd += ["--teacher-cache", str(bb_dir / "cache")] + (["--no-flip"] if r["blackbox"] == "noflip" else [])
            needs += [bb_dir / "cache" / "meta.json"]
        elif r["lam"] > 0:
            members, cdir = (ensemble, ens_cache) if r["ensemble"] else ([teacher_path], cache_dir)
            cmd += ["--teacher", *members]
            needs += [Path(t) for t in members]
            if cfg.get("teacher_cache"):
                cmd += ["--teacher-cache", str(cdir)]
                needs += [cdir / "meta.json"]
        if r["unlabelled"]:
            cmd += ["--unlabelled", data]
        jobs.append((r["name"], rdir, rdir / "metrics.json", cmd, needs))
    failed, busy = [], []
    bar = tqdm(jobs, desc=f"sweep {cfg['name']}", unit="run", file=sys.stdout, dynamic_ncols=True)
    for name, rdir, done, cmd, needs in bar:
        bar.set_postfix_str(name)
        if done.exists():
            continue
        missing = [str(n) for n in needs if not Path(n).exists()]
        if is_locked(rdir) or missing:  # another sweep (or a person) is training this run, or what it needs, right now
            tqdm.write(f"{name}: skipped, " + (f"waiting for {missing[0]}" if missing else "another process is running it"))
            busy.append(name)
            continue
        t0 = time.perf_counter()
        log = sweep / "logs" / f"{name}.txt"
        resumed = (rdir / "checkpoint.json").exists()  # interrupted mid-run: go on from the last finished epoch
        code = run_logged(cmd + ["--resume" if resumed else "--overwrite"], log)
        if code and resumed:  # e.g. the config changed since, or the checkpoint is damaged: start this run again
            failed_log = log.with_suffix(".resume-failed.txt")
            os.replace(log, failed_log)
            tqdm.write(f"{name}: could not resume (see {failed_log}); starting it again")
            code = run_logged(cmd + ["--overwrite"], log)
        status = ("ok" + (" (resumed)" if resumed else "")) if code == 0 else f"FAILED (exit {code}, see {log})"
        tqdm.write(f"{name}: {status} in {time.perf_counter() - t0:.0f} s")
        if code:
            failed.append(name)
            if not name.startswith("unet"):  # a teacher, cache or probability job: the runs after it need it
                raise UserError(f"{name} failed; see {sweep / 'logs' / (name + '.txt')}")
    from experiments.results import format_summary, write_tables

    df, s = write_tables(sweep)
    if not df.empty:
        print(format_summary(s))
        print(f"wrote {sweep / 'results.csv'} ({len(df)} runs) and {sweep / 'summary.csv'}")
    if busy:
        print(f"{len(busy)} run(s) are running elsewhere or wait for one that is; run the sweep again later: {', '.join(busy)}")
    if failed:
        raise UserError(f"{len(failed)} run(s) failed: {', '.join(failed)}")
    return 0


if __name__ == "__main__":
    run(main)
