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
images; seeds averaged first, the interval bootstraps images. Latency does not depend on the weights, so each model is
exported from one run (kd_unl seed 0 with the fewest options, else its lowest seed); the int8 parity columns are that run's. An export newer
than its student.keras is reused. --pi-csv (pi/benchmark.py --csv on the board) adds `pi_<format>_ms_<n>t_<machine>-<runtime>`.
The plot: Kaggle mAP (± seed std) against int8 latency at the fewest threads (the Pi CSV's when given), the Pareto front
per setting as a step line, the teacher as a dashed line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from common import io
from common.cli import UserError, run
from common.config import HelpFormatter
from experiments.results import LAST, bootstrap_ci, format_unreadable, load_runs, seed_pairs, unreadable_runs
from training.naming import model_name

ROOT = Path(__file__).resolve().parents[1]
BENCH_COLUMNS = ("model", "path", "size_kb", "macs", "threads", "median_ms", "p90_ms", "img_per_s", "runtime", "machine")
FORMATS = ("int8", "fp32")
PAIRED = ("d_kaggle_vs_ref", "d_lo", "d_hi", "n_pairs", "seeds_above_ref", "d_last_vs_ref", "d_last_lo", "d_last_hi")


def setting(lam: float, unlabelled: bool) -> str:
    return "baseline" if not lam > 0 else ("kd_unl" if unlabelled else "kd")


def slug(text: str) -> str:
    """`tflite-runtime 2.14.0` -> `tflite-runtime-2.14.0`: safe in a column name."""
    return re.sub(r"[^a-z0-9.]+", "-", str(text).lower()).strip("-")


def pareto_front(points) -> list[int]:
    """Indices of the (cost, score) points no other point dominates (cost <= and score >=, one of them strictly),
    by increasing cost; points with a NaN are left out."""
    ok = [i for i, (x, y) in enumerate(points) if x == x and y == y]

    def dominated(i):
        xi, yi = points[i]
        return any(points[j][0] <= xi and points[j][1] >= yi and (points[j][0] < xi or points[j][1] > yi) for j in ok)

    return sorted((i for i in ok if not dominated(i)), key=lambda i: (points[i][0], -points[i][1]))


def read_runs(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(students with model and setting columns, teachers) of the finished runs under root."""
    df = load_runs(root)
    if df.empty:
        return df, df
    if "model" not in df:
        cfgs = [json.loads((Path(p) / "config.json").read_text()) for p in df.path]
        df["model"] = [model_name(c.get("arch", "unet"), c.get("base_filters"), c.get("depth", 4), c.get("upsample", "")) for c in cfgs]
    if "peak_rss_mb" not in df:
        df["peak_rss_mb"] = [json.loads((Path(p) / "metrics.json").read_text()).get("peak_rss_mb") for p in df.path]
    df["peak_rss_mb"] = pd.to_numeric(df["peak_rss_mb"], errors="coerce")
    students = df[df.kind == "student"].copy()
    students["setting"] = [setting(lam, unl) for lam, unl in zip(students.lam, students.unlabelled)]
    # the run's configuration apart from the model ("KD T=2 lam=0.9 s=T +unl"): pairs prefer the same one
    students["variant"] = [str(lab)[len(m) :] if str(lab).startswith(m) else str(lab) for lab, m in zip(students.label, students.model)]
    return students.sort_values(["model", "setting", "seed", "path"]).reset_index(drop=True), df[df.kind == "teacher"]


def _seed_mean(diffs: list) -> np.ndarray:
    """Per-image differences of several seeds: averaged per image when scored on the same images; otherwise each
    (image, seed) is one sample."""
    return np.mean(diffs, axis=0) if len({len(d) for d in diffs}) == 1 else np.concatenate(diffs)


def paired_vs_ref(g: pd.DataFrame, ref: pd.DataFrame) -> dict:
    """Best-epoch paired difference vs the reference (d_kaggle_vs_ref, its interval, seeds above), and the last epoch's
    (d_last_vs_ref: no epoch picked on the validation images), the latter only where every pair has last-epoch scores."""
    pairs = seed_pairs(g, ref, prefer="variant")
    if not pairs:
        return dict.fromkeys(PAIRED, np.nan) | {"n_pairs": 0}
    diff = _seed_mean([d for _, _, d in pairs])
    lo, hi = bootstrap_ci(diff)
    above = sum(r.kaggle_map > b.kaggle_map for r, b, _ in pairs)
    out = {"d_kaggle_vs_ref": float(diff.mean()), "d_lo": lo, "d_hi": hi, "n_pairs": len(pairs), "seeds_above_ref": int(above)}
    last = seed_pairs(g, ref, LAST, prefer="variant")
    if len(last) < len(pairs):  # some runs predate the last-epoch scores: no partial mean
        return out | dict.fromkeys(("d_last_vs_ref", "d_last_lo", "d_last_hi"), np.nan)
    dl = _seed_mean([d for _, _, d in last])
    return out | dict(zip(("d_last_vs_ref", "d_last_lo", "d_last_hi"), (float(dl.mean()), *bootstrap_ci(dl))))


def _std(s: pd.Series) -> float:
    return float(s.std(ddof=1)) if len(s) > 1 else np.nan


def summarize(students: pd.DataFrame, reference: str) -> pd.DataFrame:
    """One row per (model, configuration): seeds, scores mean ± std, training cost, paired difference vs the reference."""
    has_ref = (students.model == reference).any()
    out = []
    # one row per model and training configuration (a sweep dir may hold several KD settings: never pooled)
    for (model, variant), g in students.groupby(["model", "variant"], sort=False):
        sett = g.setting.iloc[0]
        r = {"model": model, "arch": g.arch.iloc[0], "setting": sett, "config": variant.strip(), "params": int(g.params.iloc[0])}
        r.update(
            train_img_per_s=pd.to_numeric(g.train_img_per_s, errors="coerce").mean(),
            peak_rss_mb=g.peak_rss_mb.mean(),
            n_seeds=len(g),
            mean_iou=g.mean_iou.mean(),
            mean_iou_std=_std(g.mean_iou),
            kaggle_map=g.kaggle_map.mean(),
            kaggle_map_std=_std(g.kaggle_map),
            kaggle_map_last=pd.to_numeric(g["kaggle_map_last"], errors="coerce").mean() if "kaggle_map_last" in g else np.nan,
        )
        if has_ref:
            r.update(paired_vs_ref(g, students[(students.model == reference) & (students.variant == variant)]))
        out.append(r)
    if not has_ref:
        print(f"note: no runs of the reference model {reference}; no paired differences (see --reference)", flush=True)
    return pd.DataFrame(out)


def read_bench_csv(path, what: str) -> pd.DataFrame:
    """A CSV of pi/benchmark.py --csv, checked: its columns and numbers."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist")
    try:
        df = pd.read_csv(path)
    except (ValueError, OSError) as e:
        raise UserError(f"{what} {path} is not a readable CSV: {e}") from None
    missing = [c for c in BENCH_COLUMNS if c not in df.columns]
    if missing:
        raise UserError(f"{what} {path} lacks column(s) {', '.join(missing)}; expected {','.join(BENCH_COLUMNS)} (pi/benchmark.py --csv)")
    if df.empty:
        raise UserError(f"{what} {path} has no rows")
    for c in ("threads", "median_ms"):
        if pd.to_numeric(df[c], errors="coerce").isna().any():
            raise UserError(f"{what} {path}: column {c} holds a value that is not a number")
    return df.assign(file=[Path(str(m)).name for m in df.model], threads=df.threads.astype(int))


def options(config: str) -> list[str]:
    """The options that tell a configuration's runs from its setting's plain ones, every token from the first "+" on
    but +unl (the setting kd_unl itself): "KD T=2 lam=0.9 s=T +unl +lovasz3 +thr" -> ["+lovasz3", "+thr"],
    "... +unl 18k" -> ["18k"], "... +unl +cwd w=3" -> ["+cwd", "w=3"]."""
    tokens = str(config).split()
    first = next((i for i, t in enumerate(tokens) if t.startswith("+")), len(tokens))
    return [t for t in tokens[first:] if t != "+unl"]


def export_run(students: pd.DataFrame, model: str) -> pd.Series | None:
    """The run a model is exported from: kd_unl seed 0 with the fewest extra options (plain KD + unlabelled before
    +aug or +lovasz runs), else its lowest seed (runs with a student.keras only)."""
    g = students[(students.model == model).to_numpy() & np.array([(Path(p) / "student.keras").is_file() for p in students.path], bool)]
    if g.empty:
        return None
    key = [(not (s == "kd_unl" and seed == 0), len(options(v)), seed, p) for s, v, seed, p in zip(g.setting, g.variant, g.seed, g.path)]
    return g.iloc[min(range(len(g)), key=lambda i: key[i])]


def _fresh(out: Path, model: str, keras: Path) -> bool:
    """True when out holds an export of this student.keras made after it (a rerun reuses it)."""
    report = out / "export.json"
    if not report.is_file() or report.stat().st_mtime <= keras.stat().st_mtime:
        return False
    if not all((out / f"{model}_{f}.tflite").is_file() for f in FORMATS):
        return False
    try:
        return Path(json.loads(report.read_text())["model"]).resolve() == keras.resolve()
    except (OSError, ValueError, KeyError):
        return False


def _data_path(run_dir: Path, data: str) -> Path:
    """--data, else the run's config.json "data" (relative to where it was trained: here or the repository)."""
    given = data or json.loads((run_dir / "config.json").read_text()).get("data", "")
    for p in (Path(given), ROOT / given):
        if given and p.exists():
            return p.resolve()
    src = "--data" if data else f'{run_dir / "config.json"} ("data")'
    raise UserError(f"data {given!r} from {src} does not exist; pass --data")


def plan_exports(students: pd.DataFrame, out: Path, data: str) -> list[dict]:
    """Per model: its export folder, the run it comes from and, where it is not fresh, the command that makes it."""
    plans = []
    for model in dict.fromkeys(students.model):
        r = export_run(students, model)
        if r is None:
            print(f"note: no student.keras for {model}; no export or latency", flush=True)
            continue
        keras, dest = (Path(r.path) / "student.keras").resolve(), out / "exports" / model
        cmd = None
        if not _fresh(dest, model, keras):
            d = _data_path(Path(r.path), data)
            cmd = [sys.executable, str(ROOT / "export_tflite.py"), "--model", str(keras), "--data", str(d), "--out", str(dest.resolve())]
            cmd += ["--quant", ",".join(reversed(FORMATS)), "--name", model, "--overwrite"]
        plans.append({"model": model, "run": r.path, "dir": dest, "cmd": cmd})
    return plans


def _call(cmd: list[str], what: str) -> str:
    """Run a project command; its `error: ...` (or last line) becomes ours."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3")}
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        lines = [x for x in (p.stderr + "\n" + p.stdout).splitlines() if x.strip()]
        msg = next((x for x in reversed(lines) if x.startswith("error:")), lines[-1] if lines else "")
        raise UserError(f"{what} failed (exit {p.returncode}): {msg.removeprefix('error:').strip()}")
    return p.stdout


def run_exports(plans: list[dict]) -> dict:
    """{model: {format: parity row of export.json}}, exporting what is not fresh."""
    reports = {}
    for p in plans:
        if p["cmd"]:
            print(f"exporting {p['model']} from {p['run']}", flush=True)
            said = _call(p["cmd"], f"export of {p['model']}").rstrip()
            print(said, flush=True) if said else None
        else:
            print(f"reusing {p['dir'] / 'export.json'} ({p['model']})", flush=True)
        rows = json.loads((p["dir"] / "export.json").read_text()).get("rows", [])
        reports[p["model"]] = {r["format"]: r for r in rows}
    return reports


def run_benchmarks(plans: list[dict], pythons: list[str], threads: list[int], runs: int, out: Path) -> list[pd.DataFrame]:
    """pi/benchmark.py on every exported .tflite, once per python; its CSVs, read back."""
    files = [str((p["dir"] / f"{p['model']}_{f}.tflite").resolve()) for p in plans for f in FORMATS]
    benches = []
    for i, py in enumerate(pythons):
        csv = (out / f"bench_{i}.csv").resolve()
        cmd = [py, str(ROOT / "pi" / "benchmark.py"), "--models", *files, "--threads", ",".join(map(str, threads))]
        cmd += ["--runs", str(runs), "--csv", str(csv), "--overwrite"]
        print(f"benchmarking {len(files)} file(s) with {py} (threads {threads}, {runs} runs)", flush=True)
        _call(cmd, f"pi/benchmark.py with {py}")
        benches.append(read_bench_csv(csv, "benchmark CSV"))
    return benches


def latency_columns(bench: pd.DataFrame, models, prefix: str, with_machine: bool, taken: set) -> tuple[dict, list]:
    """({model: {column: median ms}}, the columns in order): `<prefix><format>_ms_<n>t_<slug>` per runtime of the CSV,
    its rows matched to the models by file name."""
    cols: dict = {m: {} for m in models}
    order: list = []
    names = {f"{m}_{f}.tflite": (m, f) for m in models for f in FORMATS}
    for (runtime, machine), g in bench.groupby(["runtime", "machine"], sort=False):
        s = slug(f"{machine}-{runtime}" if with_machine else runtime)
        base, k = s, 2
        while s in taken:  # the same runtime through two pythons
            s, k = f"{base}-{k}", k + 1
        taken.add(s)
        g = g[g.file.isin(names)].assign(fmt=[names[f][1] for f in g.file[g.file.isin(names)]])
        for f in FORMATS:
            for r in g[g.fmt == f].sort_values("threads").itertuples():
                col = f"{prefix}{f}_ms_{r.threads}t_{s}"
                cols[names[r.file][0]][col] = float(r.median_ms)
                order += [col] if col not in order else []
    return cols, order


def assemble(table: pd.DataFrame, reports: dict, benches: list, pi: pd.DataFrame | None) -> tuple[pd.DataFrame, list, list]:
    """frontier.csv's rows; and the local and the Pi latency columns, in order."""
    models, taken = list(dict.fromkeys(table.model)), set()
    local, pi_cols, lat = [], [], {m: {} for m in models}
    for b in benches:
        cols, order = latency_columns(b, models, "", False, taken)
        local += order
        for m in models:
            lat[m].update(cols[m])
    if pi is not None:
        cols, pi_cols = latency_columns(pi, models, "pi_", True, taken)
        for m in models:
            lat[m].update(cols[m])
        if not pi_cols:
            print("note: no file of --pi-csv is one of this sweep's exports (<model>_int8.tflite, <model>_fp32.tflite)", flush=True)
    macs = {}
    for b in benches + ([pi] if pi is not None else []):
        for r in b.itertuples():
            macs.setdefault(r.file, pd.to_numeric(r.macs, errors="coerce"))
    rows = []
    for r in table.to_dict("records"):
        m, rep = r["model"], reports.get(r["model"], {})
        head = {k: r[k] for k in ("model", "arch", "setting", "config", "params")}
        head.update(
            macs=macs.get(f"{m}_int8.tflite", np.nan),
            int8_kb=rep.get("int8", {}).get("size_kb", np.nan),
            fp32_kb=rep.get("fp32", {}).get("size_kb", np.nan),
            int8_d_mean_iou=rep.get("int8", {}).get("d_mean_iou", np.nan),
            int8_d_kaggle_map=rep.get("int8", {}).get("d_kaggle_map", np.nan),
            # export_tflite.py's conversion time per file (int8 includes calibration), from export.json
            int8_convert_s=rep.get("int8", {}).get("convert_s", np.nan),
            fp32_convert_s=rep.get("fp32", {}).get("convert_s", np.nan),
        )
        head.update({c: lat[m].get(c, np.nan) for c in local + pi_cols})
        rows.append(head | {k: v for k, v in r.items() if k not in head})
    return pd.DataFrame(rows), local, pi_cols


def x_column(local: list, pi_cols: list) -> str | None:
    """The plot's latency: int8 at the fewest threads, of the Pi CSV when given, else of the first runtime."""
    cols = [c for c in (pi_cols or local) if c.startswith(("int8_", "pi_int8_"))]
    if not cols:
        return None
    first = cols[0].rsplit("_", 1)[1]  # the runtime slug of the first column
    same = [c for c in cols if c.endswith("_" + first)]
    return min(same, key=lambda c: int(re.search(r"_ms_(\d+)t_", c).group(1)))


def over_budget(f: pd.DataFrame, x: str | None, reference: str, max_params: int, max_int8_kb: float) -> list[str]:
    """Per row, what breaks the Pi budget ("" when nothing): params > max_params, the trained int8 file > max_int8_kb,
    int8 latency (the plot's column x) above the reference model's. Unmeasured sizes or latencies are not judged."""
    ref = f.loc[f.model == reference, x].dropna() if x else pd.Series(dtype=float)
    ref_ms = float(ref.iloc[0]) if len(ref) else np.nan
    out = []
    for r in f.to_dict("records"):
        broken = ["params"] if r["params"] > max_params else []
        broken += ["int8_kb"] if r["int8_kb"] == r["int8_kb"] and r["int8_kb"] > max_int8_kb else []
        broken += ["latency"] if x and r[x] == r[x] and ref_ms == ref_ms and r[x] > ref_ms else []
        out.append(",".join(broken))
    return out


def _fmt(v, spec: str) -> str:
    return format(v, spec) if v == v and v is not None else ""


def format_table(f: pd.DataFrame, local: list, pi_cols: list) -> str:
    """The printed table: one line per (model, setting); int8 latency of each runtime and thread count."""
    lat = [c for c in local + pi_cols if "int8_ms_" in c]
    paired = "d_kaggle_vs_ref" in f
    head = f"{'model':18s} {'config':26s} {'n':>2s} {'params':>9s} {'MMACs':>7s} {'int8_kb':>8s} {'int8_dIoU':>9s}"
    names = {c: c.replace("int8_ms_", "") for c in lat}
    head += "".join(f" {names[c]:>8s}" for c in lat) + f" {'kaggle_map':>15s}"
    head += f" {'last':>6s} {'over budget':>18s}"
    head += f" {'d_kaggle vs ref [95% CI]':>26s} {'above':>5s} {'d last epoch':>12s}" if paired else ""
    lines = [head]
    for r in f.to_dict("records"):
        km = _fmt(r["kaggle_map"], ".4f") + ("±" + _fmt(r["kaggle_map_std"], ".4f") if r["kaggle_map_std"] == r["kaggle_map_std"] else "")
        line = f"{r['model']:18s} {str(r['config'])[:26]:26s} {r['n_seeds']:2d} {r['params']:9,d} {_fmt(r['macs'] / 1e6, '7.1f'):>7s}"
        line += f" {_fmt(r['int8_kb'], '8.1f'):>8s} {_fmt(r['int8_d_mean_iou'], '+9.4f'):>9s}"
        line += "".join(f" {_fmt(r[c], '.2f'):>{max(8, len(names[c]))}s}" for c in lat) + f" {km:>15s}"
        line += f" {_fmt(r.get('kaggle_map_last', np.nan), '.4f'):>6s} {str(r.get('over_budget', '') or '-')[:18]:>18s}"
        if paired:
            d = f"{r['d_kaggle_vs_ref']:+.4f} [{r['d_lo']:+.4f},{r['d_hi']:+.4f}]" if r["n_pairs"] else ""
            line += f" {d:>26s} {(str(int(r['seeds_above_ref'])) + '/' + str(int(r['n_pairs'])) if r['n_pairs'] else ''):>5s}"
            line += f" {_fmt(r.get('d_last_vs_ref', np.nan), '+.4f'):>12s}"
        lines.append(line)
    return "\n".join(lines)


def point_label(model: str, config: str) -> str:
    """A point's label in the plot: the model, and the options that tell its runs from the setting's plain ones
    ("unet4 +lovasz3 +thr"; the colour already says baseline / kd / kd_unl)."""
    return " ".join([model, *options(config)])


def spread(ys: np.ndarray, gap: float) -> np.ndarray:
    """Label heights for points that share an x: each point's own height, pushed up where needed so that labels in
    height order are at least `gap` apart ([0.70, 0.701, 0.75], gap 0.01 -> [0.70, 0.71, 0.75])."""
    out = np.asarray(ys, float).copy()
    order = np.argsort(out, kind="stable")
    for prev, i in zip(order, order[1:]):
        out[i] = max(out[i], out[prev] + gap)
    return out


MARKERS = {"baseline": ("tab:gray", "o"), "kd": ("tab:blue", "s"), "kd_unl": ("tab:orange", "D")}


def plot(f: pd.DataFrame, teachers: pd.DataFrame, x: str | None, title: str):
    """Val Kaggle mAP against int8 latency per (model, setting), seed std as error bars, the Pareto front per setting."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5.5))
    ax = fig.add_subplot()
    groups = []
    for sett, g in f.groupby("setting", sort=False):
        colour, marker = MARKERS.get(sett, ("tab:green", "^"))
        g = g[g[x].notna()] if x else g.iloc[:0]
        ax.errorbar(g[x] if x else [], g.kaggle_map, yerr=g.kaggle_map_std.fillna(0), fmt=marker, color=colour, capsize=3, label=sett)
        groups.append((sett, g))
        front = g.iloc[pareto_front(list(zip(g[x], g.kaggle_map)))] if len(g) else g
        if len(front) > 1:
            ax.plot(front[x], front.kaggle_map, drawstyle="steps-post", color=colour, alpha=0.6, lw=1)
    ylo, yhi = ax.get_ylim()
    points_per_y = ax.get_position().height * fig.get_size_inches()[1] * 72 / max(yhi - ylo, 1e-9)
    for sett, g in groups:
        # baseline labels below their point, the others above: a model's two settings often sit close; points of one
        # setting at one latency (a model's variants) get their labels pushed apart, one line of text each
        base = -10 if sett == "baseline" else 4
        for _, col in g.groupby(g[x].round(6)) if len(g) else []:
            heights = spread(col.kaggle_map.to_numpy(float), 10 / points_per_y)
            for label, lx, y, h in zip(map(point_label, col.model, col.config), col[x], col.kaggle_map, heights):
                ax.annotate(label, (lx, y), textcoords="offset points", xytext=(4, base + (h - y) * points_per_y), fontsize=7)
    for model, t in teachers.groupby("model", sort=False) if len(teachers) else []:
        ax.axhline(t.kaggle_map.mean(), color="k", ls="--", lw=1, label=f"teacher {model} ({len(t)} run{'s' if len(t) > 1 else ''})")
    ax.set_xlabel(f"int8 latency, ms per image ({x})" if x else "int8 latency (not measured)")
    ax.set_ylabel("val Kaggle mAP")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_title(x: str | None, pi: pd.DataFrame | None, benches: list) -> str:
    if x is None:
        return "val Kaggle mAP (no latency measured)"
    n = re.search(r"_ms_(\d+)t_", x).group(1)
    src = pi if x.startswith("pi_") else benches[0]
    r = src.iloc[0]
    return f"val Kaggle mAP vs int8 latency: {r.runtime}, {n} thread{'s' if n != '1' else ''}, on {r.machine}"


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
        plot(f, teachers, x, plot_title(x, pi, benches)).savefig(tmp, dpi=110, format="png")
    print(format_table(f, local, pi_cols))
    print(
        f"wrote {out / 'frontier.csv'} and {out / 'frontier.png'}"
        + (f"; {len(bad)} unreadable run(s) left out, named above" if bad else "")
    )
    return 1 if bad else 0


if __name__ == "__main__":
    run(main)
