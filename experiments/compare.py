"""What notebooks/compare_students.ipynb shows, as functions it calls on run dirs (no training here).

Runs are chosen by their fields (results.csv columns: model, lam, temperature, unlabelled, options, ...), never by
parsing a label; every comparison is within one student model (a baseline of unet4 against students of unet4), paired
by seed on the same validation images (experiments.results.paired).
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from common.cli import UserError
from experiments.results import BEST, LAST, load_sweeps, paired, reference_config

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = ("best", "last")


load = load_sweeps  # the notebook's name: load(SWEEP, TEACHER_DIR) -> (runs, unreadable runs)


def score_columns(epoch: str) -> tuple[str, str]:
    """(mean IoU column, Kaggle mAP column) of the best-epoch ("best") or the last epoch's ("last") models."""
    if epoch not in EPOCHS:
        raise ValueError(f"EPOCH {epoch!r} must be 'best' or 'last'")
    return ("mean_iou", "kaggle_map") if epoch == "best" else ("mean_iou_last", "kaggle_map_last")


def per_seed(df: pd.DataFrame, epoch: str = "last") -> pd.DataFrame:
    """One row per (model, config), one column per (metric, seed) and the mean over seeds: every run's score."""
    cols = score_columns(epoch)
    d = df.assign(model=np.where(df.kind == "teacher", "teacher " + df.model.astype(str), df.model))
    t = d.pivot_table(index=["model", "label"], columns="seed", values=list(cols), aggfunc="first")
    for c in cols:
        if c in t.columns.get_level_values(0):
            t[(c, "mean")] = t[c].mean(axis=1)
    return t.sort_index(axis=1, level=0, sort_remaining=False)


def forest(df: pd.DataFrame, reference: str = "lam=0", epoch: str = "last") -> pd.DataFrame:
    """Per student model: every config against that model's reference config (the fields `reference`, e.g. lam=0 =
    its baseline), paired by seed: d mean IoU and d Kaggle mAP with bootstrap 95% intervals, and seeds above."""
    key = BEST if epoch == "best" else LAST
    students = df[df.kind == "student"]
    rows = []
    for model, g in students.groupby("model", sort=True):
        try:
            ref = reference_config(g, reference)
        except UserError:  # a model without such a config has nothing to compare against
            continue
        for config, c in g.groupby("label", sort=False):
            if config == ref:
                continue
            p = paired(c, g[g.label == ref], key)
            if not p:
                continue
            row = {"model": model, "config": config, "reference": ref, "n_seeds": p["n"], "epoch": epoch}
            for name, which in (("miou", "miou"), ("kaggle", "kaggle")):
                got = p.get(which, {})
                row.update({f"d_{name}": got.get("d", np.nan), f"{name}_lo": got.get("lo", np.nan), f"{name}_hi": got.get("hi", np.nan)})
                row[f"{name}_seeds_above"] = got.get("above", np.nan)
            rows.append(row)
    return pd.DataFrame(rows)


def forest_plot(table: pd.DataFrame, title: str = ""):
    """Paired differences against each model's reference, one row per config: mean IoU (left), Kaggle mAP (right)."""
    n = max(len(table), 1)
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.45 * n + 1.4), sharey=True, squeeze=False)
    y = np.arange(len(table))[::-1]
    names = [f"{r.model}: {r.config.removeprefix(r.model + ' ')}" for r in table.itertuples()]
    for a, (m, what) in zip(axes[0], (("miou", "d mean IoU"), ("kaggle", "d Kaggle mAP"))):
        d, lo, hi = (table[c].to_numpy(float) for c in (f"d_{m}", f"{m}_lo", f"{m}_hi"))
        ok = ~np.isnan(d)
        a.errorbar(d[ok], y[ok], xerr=[d[ok] - lo[ok], hi[ok] - d[ok]], fmt="o", capsize=3)
        a.axvline(0, color="gray", ls="--")
        a.set_xlabel(f"{what} vs reference (95% CI)")
    axes[0, 0].set_yticks(y, names, fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _resolve(path: str, base: Path) -> Path:
    """A path from a run's config.json: absolute, or relative to the repo root or to the sweep dir."""
    p = Path(path)
    if p.is_absolute():
        return p
    return next((q for q in (ROOT / p, base / p, Path.cwd() / p) if q.exists()), ROOT / p)


def teacher_file(df: pd.DataFrame, model: str) -> Path | None:
    """The teacher .keras the distilled runs of `model` name in their config.json (the first one found), or a teacher
    run's own file where no student names one (a sweep dir with its teacher)."""
    for r in df[(df.kind == "student") & (df.model == model) & (df.lam > 0)].itertuples():
        cfg = json.loads((Path(r.path) / "config.json").read_text())
        for t in cfg.get("teacher") or []:
            p = _resolve(t, Path(r.path).parent)
            if p.is_file():
                return p
    for r in df[df.kind == "teacher"].itertuples():
        if (Path(r.path) / "teacher.keras").is_file():
            return Path(r.path) / "teacher.keras"
    return None


def mask_models(df: pd.DataFrame, model: str, reference: str = "lam=0", epoch: str = "last", seed: int = 0) -> dict:
    """{"teacher": .keras, "reference (its label)": .keras, "best (its label)": .keras} for a mask grid of one student
    model: its teacher (from the students' configs), its reference config's run and the config with the highest mean
    score (Kaggle mAP of `epoch`) of the same model, both of `seed`. Entries whose model file is not there are left out."""
    g = df[(df.kind == "student") & (df.model == model)]
    try:
        ref = reference_config(g, reference)
    except UserError:  # no such config for this model: the grid shows the teacher and the best config only
        ref = None
    kag = score_columns(epoch)[1]
    means = g[g.label != ref].groupby("label")[kag].mean().dropna()
    out = {}
    t = teacher_file(df, model)
    if t is not None:
        out["teacher"] = t
    for name, label in (("reference", ref), ("best", means.idxmax() if len(means) else None)):
        run = g[(g.label == label) & (g.seed == seed)]
        if label is not None and len(run) and (Path(run.path.iloc[0]) / "student.keras").is_file():
            out[f"{name}: {label}"] = Path(run.path.iloc[0]) / "student.keras"
    return out


def validation_data(df: pd.DataFrame, model: str, seed: int = 0):
    """The validation images of a student model's run of `seed` (its split.json and its config's data), or None
    where the data is not on this machine."""
    from data.split import load_split
    from data.tgs import load_data

    run = df[(df.kind == "student") & (df.model == model) & (df.seed == seed)]
    if run.empty:
        return None
    path = Path(run.path.iloc[0])
    cfg = json.loads((path / "config.json").read_text())
    data = _resolve(cfg.get("data", ""), path.parent)
    if not cfg.get("data") or not data.exists() or not (path / "split.json").exists():
        return None
    return load_data(data, progress=False).subset(load_split(path / "split.json")["val"])


def curve_runs(df: pd.DataFrame, model: str, reference: str = "lam=0", n: int = 5, seed: int = 0) -> list[str]:
    """Run dirs of one model's learning-curve figure: its reference config's run of `seed`, then the `n` best other
    configs' runs of that seed (by best-epoch Kaggle mAP) that have a history.csv."""
    g = df[(df.kind == "student") & (df.model == model) & (df.seed == seed)]
    g = g[[(Path(p) / "history.csv").exists() for p in g.path]]
    try:
        ref = reference_config(df[(df.kind == "student") & (df.model == model)], reference)
    except UserError:
        ref = None
    first = list(g[g.label == ref].path)
    return first + list(g[g.label != ref].sort_values("kaggle_map", ascending=False).path[:n])
