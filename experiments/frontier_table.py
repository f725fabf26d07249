"""The frontier's table (experiments.frontier): the student runs of a sweep per model and configuration, their scores
and paired difference vs the reference model (experiments.results), and the exports' sizes and latency as columns."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pandas as pd

from experiments.results import load_runs, paired_vs
from experiments.results import summarize as summarize_configs
from training.naming import RunSpec

FORMATS = ("int8", "fp32")  # the formats exported and timed
# experiments.results.paired_vs's columns under the frontier's names, in frontier.csv's order
PAIRED = {
    "d_ref": "d_kaggle_vs_ref",
    "d_ref_lo": "d_lo",
    "d_ref_hi": "d_hi",
    "n_ref_pairs": "n_pairs",
    "ref_seeds_above": "seeds_above_ref",
    "d_ref_last": "d_last_vs_ref",
    "d_ref_last_lo": "d_last_lo",
    "d_ref_last_hi": "d_last_hi",
}
# RunSpec's options (RunSpec.extras) at their defaults
PLAIN = {
    "teacher_tta": False,
    "feature_loss": "",
    "lovasz_epochs": 0,
    "tune_threshold": False,
    "augment": "flip",
    "mixup": 0.0,
    "precision": "float32",
}


def setting(lam: float, unlabelled: bool) -> str:
    return "baseline" if not lam > 0 else ("kd_unl" if unlabelled else "kd")


def slug(text: str) -> str:
    """`tflite-runtime 2.14.0` -> `tflite-runtime-2.14.0`: safe in a column name."""
    return re.sub(r"[^a-z0-9.]+", "-", str(text).lower()).strip("-")


def options(spec: RunSpec) -> list[str]:
    """The options that tell a run from its setting's plain ones (baseline, kd, kd_unl), as its label writes each:
    the unlabelled images per batch and their count where named ("+unl32", "18k"), then RunSpec.extras one by one
    ("+tta", "+cwd w=3", "+lovasz3", "+thr", "+aug", "+mixup0.2")."""
    unl = spec.distilled and spec.unlabelled
    out = [f"+unl{spec.n_unlabelled}"] if unl and spec.n_unlabelled != 16 else []
    out += [spec.count_tag("")] if unl and spec.count_tag("") else []
    # each option alone on the plain run, so RunSpec renders it; a distilled run stays distilled (+tta needs it)
    plain = dataclasses.replace(spec, **PLAIN, lam=max(spec.lam, 1.0) if spec.distilled else spec.lam)
    for field, default in PLAIN.items():
        if getattr(spec, field) != default:
            out.append(dataclasses.replace(plain, **{field: getattr(spec, field)}).extras[1].strip())
    return [o for o in out if o]


def read_runs(root) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(students, teachers) of the finished runs under root (experiments.results.load_runs); students also get their
    setting, their RunSpec (`spec`) and `variant`: the label of their configuration apart from the model."""
    df = load_runs(root)
    if df.empty:
        return df, df
    df["peak_rss_mb"] = pd.to_numeric(df["peak_rss_mb"], errors="coerce")
    students = df[df.kind == "student"].copy()
    students["setting"] = [setting(lam, unl) for lam, unl in zip(students.lam, students.unlabelled)]
    students["spec"] = [RunSpec.from_run_dir(p) for p in students.path]
    # the run's configuration apart from the model (" KD T=2 lam=0.9 s=T +unl"): pairs are within one
    students["variant"] = [dataclasses.replace(s, model="").label for s in students.spec]
    return students.sort_values(["model", "setting", "seed", "path"]).reset_index(drop=True), df[df.kind == "teacher"]


def vs_reference(g: pd.DataFrame, ref: pd.DataFrame) -> dict:
    """experiments.results.paired_vs of runs g against the reference model's runs ref, under the frontier's names:
    best epoch (d_kaggle_vs_ref, d_lo, d_hi, seeds_above_ref) and last epoch (d_last_vs_ref, ...; only where every
    pair has last-epoch scores); NaN and n_pairs 0 without pairs."""
    p = paired_vs(g, ref)
    return {new: p.get(old, np.nan) for old, new in PAIRED.items()} | {"n_pairs": p.get("n_ref_pairs", 0)}


def summarize(students: pd.DataFrame, reference: str) -> pd.DataFrame:
    """One row per (model, configuration): seeds, scores mean ± std (experiments.results.summarize), training cost,
    paired difference vs the reference model's runs of the same configuration."""
    stats = summarize_configs(students).set_index("config")
    has_ref = (students.model == reference).any()
    out = []
    # one row per model and training configuration (a sweep dir may hold several KD settings: never pooled)
    for (model, variant), g in students.groupby(["model", "variant"], sort=False):
        s = stats.loc[g.label.iloc[0]]
        r = {"model": model, "arch": g.arch.iloc[0], "setting": g.setting.iloc[0], "config": variant.strip(), "params": int(s.params)}
        r.update(train_img_per_s=pd.to_numeric(g.train_img_per_s, errors="coerce").mean(), peak_rss_mb=g.peak_rss_mb.mean())
        r.update(
            n_seeds=int(s.n_seeds), **{k: s[k] for k in ("mean_iou", "mean_iou_std", "kaggle_map", "kaggle_map_std", "kaggle_map_last")}
        )
        if has_ref:
            r.update(vs_reference(g, students[(students.model == reference) & (students.variant == variant)]))
        out.append(r)
    if not has_ref:
        print(f"note: no runs of the reference model {reference}; no paired differences (see --reference)", flush=True)
    return pd.DataFrame(out)


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


def all_latency(models: list, benches: list, pi: pd.DataFrame | None) -> tuple[dict, list, list]:
    """({model: {column: median ms}}, the local columns, the Pi CSV's columns): every benchmark's latency columns."""
    taken, local, pi_cols, lat = set(), [], [], {m: {} for m in models}
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
    return lat, local, pi_cols


def export_columns(reports: dict, model: str) -> dict:
    """A model's export columns from its export.json rows: file sizes, int8 parity, conversion times."""
    rep = reports.get(model, {})
    return dict(
        int8_kb=rep.get("int8", {}).get("size_kb", np.nan),
        fp32_kb=rep.get("fp32", {}).get("size_kb", np.nan),
        int8_d_mean_iou=rep.get("int8", {}).get("d_mean_iou", np.nan),
        int8_d_kaggle_map=rep.get("int8", {}).get("d_kaggle_map", np.nan),
        # export_tflite.py's conversion time per file (int8 includes calibration), from export.json
        int8_convert_s=rep.get("int8", {}).get("convert_s", np.nan),
        fp32_convert_s=rep.get("fp32", {}).get("convert_s", np.nan),
    )


def assemble(table: pd.DataFrame, reports: dict, benches: list, pi: pd.DataFrame | None) -> tuple[pd.DataFrame, list, list]:
    """frontier.csv's rows; and the local and the Pi latency columns, in order."""
    lat, local, pi_cols = all_latency(list(dict.fromkeys(table.model)), benches, pi)
    macs = {}
    for b in benches + ([pi] if pi is not None else []):
        for r in b.itertuples():
            macs.setdefault(r.file, pd.to_numeric(r.macs, errors="coerce"))
    rows = []
    for r in table.to_dict("records"):
        m = r["model"]
        head = {k: r[k] for k in ("model", "arch", "setting", "config", "params")}
        head.update(macs=macs.get(f"{m}_int8.tflite", np.nan), **export_columns(reports, m))
        head.update({c: lat[m].get(c, np.nan) for c in local + pi_cols})
        rows.append(head | {k: v for k, v in r.items() if k not in head})
    return pd.DataFrame(rows), local, pi_cols


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


def format_row(r: dict, lat: list, names: dict, paired: bool) -> str:
    """One line of the printed table."""
    km = _fmt(r["kaggle_map"], ".4f") + ("±" + _fmt(r["kaggle_map_std"], ".4f") if r["kaggle_map_std"] == r["kaggle_map_std"] else "")
    line = f"{r['model']:18s} {str(r['config'])[:26]:26s} {r['n_seeds']:2d} {r['params']:9,d} {_fmt(r['macs'] / 1e6, '7.1f'):>7s}"
    line += f" {_fmt(r['int8_kb'], '8.1f'):>8s} {_fmt(r['int8_d_mean_iou'], '+9.4f'):>9s}"
    line += "".join(f" {_fmt(r[c], '.2f'):>{max(8, len(names[c]))}s}" for c in lat) + f" {km:>15s}"
    line += f" {_fmt(r.get('kaggle_map_last', np.nan), '.4f'):>6s} {str(r.get('over_budget', '') or '-')[:18]:>18s}"
    if paired:
        d = f"{r['d_kaggle_vs_ref']:+.4f} [{r['d_lo']:+.4f},{r['d_hi']:+.4f}]" if r["n_pairs"] else ""
        line += f" {d:>26s} {(str(int(r['seeds_above_ref'])) + '/' + str(int(r['n_pairs'])) if r['n_pairs'] else ''):>5s}"
        line += f" {_fmt(r.get('d_last_vs_ref', np.nan), '+.4f'):>12s}"
    return line


def format_table(f: pd.DataFrame, local: list, pi_cols: list) -> str:
    """The printed table: one line per (model, setting); int8 latency of each runtime and thread count."""
    lat = [c for c in local + pi_cols if "int8_ms_" in c]
    paired = "d_kaggle_vs_ref" in f
    head = f"{'model':18s} {'config':26s} {'n':>2s} {'params':>9s} {'MMACs':>7s} {'int8_kb':>8s} {'int8_dIoU':>9s}"
    names = {c: c.replace("int8_ms_", "") for c in lat}
    head += "".join(f" {names[c]:>8s}" for c in lat) + f" {'kaggle_map':>15s}"
    head += f" {'last':>6s} {'over budget':>18s}"
    head += f" {'d_kaggle vs ref [95% CI]':>26s} {'above':>5s} {'d last epoch':>12s}" if paired else ""
    return "\n".join([head] + [format_row(r, lat, names, paired) for r in f.to_dict("records")])
