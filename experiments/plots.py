"""Plots for the notebooks and the README (they read run dirs; no training here)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from common.cli import UserError, run
from common.config import HelpFormatter
from experiments.results import label, load_runs

# the run fields (results.csv columns, training.naming.RunSpec's) whose values make a line of score_vs, besides the one
# it varies; against T, auto_T stands for the temperature: the runs with T=auto form one line, each point at the T it
# resolved to (column temperature)
LINE_FIELDS = ("model", "teacher", "lam", "temperature", "auto_T", "scale", "unlabelled", "n_unlabelled", "unlabelled_images", "flip")
LINE_FIELDS += ("options",)


def _line_key(df: pd.DataFrame, x: str) -> list:
    """The fields that tell score_vs's lines apart when it varies x (temperature or lam): those of LINE_FIELDS the table has."""
    return [c for c in LINE_FIELDS if c in df and c != x]


def _legend(run_label: str, x: str) -> str:
    """A line's legend (display only; the fields pick its runs): its runs' label without the setting it varies; against
    T, "T=auto(1.23)" reads "T=auto"."""
    if x == "temperature":
        words = ["T=auto" if w.startswith("T=auto") else w for w in run_label.split(" ")]
        return " ".join(w for w in words if w == "T=auto" or not w.startswith("T="))
    return " ".join(w for w in run_label.split(" ") if not w.startswith("lam=")) if x == "lam" else run_label


def score_vs(df: pd.DataFrame, x: str, metrics=("mean_iou", "kaggle_map"), ax=None):
    """Distilled students' scores against T or lambda, mean ± std over seeds, baseline and teacher as lines.

    One line per setting of everything else (the run fields LINE_FIELDS but x), so a line never averages over a factor
    that was varied."""
    students = df[(df.kind == "student") & (df.lam > 0)]
    fig, axes = (None, ax) if ax is not None else plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.5))
    axes = np.atleast_1d(axes)
    students = students.assign(label=students["label"] if "label" in students else students.apply(label, axis=1))
    lines = [g for _, g in students.groupby(_line_key(students, x), sort=False, dropna=False)] if len(students) else []
    for a, m in zip(axes, metrics):
        for g in lines:
            s = g.groupby(x)[m].agg(["mean", "std", "count"]).reset_index()
            a.errorbar(s[x], s["mean"], yerr=s["std"].fillna(0), marker="o", capsize=3, label=_legend(str(g.label.iloc[0]), x))
        base = df[(df.kind == "student") & (df.lam == 0)][m]
        if len(base):
            a.axhline(base.mean(), color="gray", ls="--", label=f"baseline ({len(base)} seeds)")
            a.axhspan(
                base.mean() - base.std(ddof=1 if len(base) > 1 else 0),
                base.mean() + base.std(ddof=1 if len(base) > 1 else 0),
                color="gray",
                alpha=0.15,
            )
        teacher = df[df.kind == "teacher"][m]
        if len(teacher):
            a.axhline(teacher.mean(), color="k", ls=":", label="teacher")
        a.set_xlabel({"temperature": "T", "lam": "lambda"}.get(x, x))
        a.set_ylabel(m)
        if x == "temperature":
            a.set_xscale("log", base=2)
        a.legend(fontsize=7)
    return fig


def t_lambda(df: pd.DataFrame, metrics=("mean_iou", "kaggle_map"), title: str = ""):
    """Scores against T (left) and against lambda (right), one row per metric."""
    fig, axes = plt.subplots(len(metrics), 2, figsize=(16, 3.8 * len(metrics)), squeeze=False)
    score_vs(df, "temperature", metrics, ax=axes[:, 0])
    score_vs(df, "lam", metrics, ax=axes[:, 1])
    for a in axes.flat:  # beside the axes, not over the points
        a.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def config_scores(df: pd.DataFrame, metrics=("mean_iou", "kaggle_map"), title: str = ""):
    """One column per configuration: every seed a dot, mean ± std over seeds; teachers as dotted lines."""
    df = df.assign(config=df["label"] if "label" in df else df.apply(label, axis=1))
    students = df[df.kind == "student"]
    configs = list(
        dict.fromkeys(students.sort_values(["lam", "n_teachers", "unlabelled"] if "n_teachers" in df else ["lam", "unlabelled"]).config)
    )
    rows = len(configs) > 6  # many configurations: one metric per row, so the figure stays readable
    fig, axes = plt.subplots(
        len(metrics) if rows else 1,
        1 if rows else len(metrics),
        figsize=(max(6, 1.1 * len(configs)) * (1 if rows else len(metrics)), 4.5 * (len(metrics) if rows else 1)),
    )
    for a, m in zip(np.atleast_1d(axes), metrics):
        for k, c in enumerate(configs):
            color = plt.get_cmap("tab20")((2 * k + k // 10) % 20)  # 20 distinct colours: dark ones first, then light
            v = students.loc[students.config == c, m].to_numpy()
            a.scatter(np.full(len(v), k) + np.linspace(-0.08, 0.08, len(v)), v, s=18, color=color, alpha=0.7)
            a.errorbar(k + 0.22, v.mean(), yerr=v.std(ddof=1) if len(v) > 1 else 0, fmt="o", color=color, capsize=4)
        for k, (c, g) in enumerate(df[df.kind == "teacher"].groupby("run")):
            a.axhline(g[m].iloc[0], color="k", ls=":", lw=1, label=f"{c} ({g.params.iloc[0]:,} params)" if k < 3 else None)
        a.set_xticks(
            range(len(configs)),
            [
                c.replace(" KD", "\nKD")
                .replace(" lam=", "\nlam=")
                .replace(" +unl", "\n+unl")
                .replace(" ens", "\nens")
                .replace(" blackbox", "\nblackbox")
                for c in configs
            ],
            fontsize=7,
        )
        a.set_ylabel(m)
        a.legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def learning_curves(run_dirs, ax=None):
    """Hard and soft parts of the training loss and validation mean IoU per epoch."""
    fig, axes = (None, ax) if ax is not None else plt.subplots(1, 3, figsize=(15, 3.5))
    for run_dir in run_dirs:
        h = pd.read_csv(Path(run_dir) / "history.csv")
        name = Path(run_dir).name
        axes[0].plot(h["epoch"], h["hard"], label=name)
        axes[1].plot(h["epoch"], h["soft"], label=name)
        axes[2].plot(h["epoch"], h["val_mean_iou"], label=name)
    for a, t in zip(axes, ("train hard part (BCE with labels)", "train soft part (BCE with teacher)", "validation mean IoU")):
        a.set_title(t)
        a.set_xlabel("epoch")
    axes[2].legend(fontsize=6)
    return fig


def score_vs_size(df: pd.DataFrame, latency: dict | None = None, metric: str = "kaggle_map"):
    """Score against parameters (and against TFLite latency where export results exist)."""
    n = 2 if latency else 1
    fig, axes = plt.subplots(1, n, figsize=(5 * n, 3.5))
    axes = np.atleast_1d(axes)
    df = df.copy()
    df["group"] = np.where(df.kind == "teacher", "teacher", np.where(df.lam == 0, "baseline", "distilled"))
    for grp, g in df.groupby("group"):
        axes[0].scatter(g["params"], g[metric], label=grp)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("parameters")
    axes[0].set_ylabel(metric)
    axes[0].legend()
    if latency:
        for name, (ms, score) in latency.items():
            axes[1].scatter(ms, score)
            axes[1].annotate(name, (ms, score), fontsize=7)
        axes[1].set_xlabel("TFLite latency, 1 thread (ms/image)")
        axes[1].set_ylabel(metric)
    return fig


def mask_grid(images, truth, preds: dict, n: int = 8, seed: int = 0):
    """Validation images with the true mask and each model's mask outlined (n columns)."""
    rng = np.random.default_rng(seed)
    n = min(n, len(images))
    has_salt = np.flatnonzero(truth.any(axis=(1, 2)))
    pick = rng.choice(has_salt if len(has_salt) >= n else np.arange(len(images)), n, replace=False)
    rows = ["truth", *preds]
    fig, axes = plt.subplots(len(rows), n, figsize=(1.6 * n, 1.7 * len(rows)), squeeze=False)
    for r, name in enumerate(rows):
        for c, k in enumerate(pick):
            a = axes[r, c]
            a.imshow(images[k], cmap="gray")
            m = truth[k] if name == "truth" else preds[name][k]
            if m.any():
                a.contour(m, [0.5], colors="lime" if name == "truth" else "red", linewidths=1)
            a.set_xticks([])
            a.set_yticks([])
            if c == 0:
                a.set_ylabel(name, fontsize=8)
    fig.tight_layout()
    return fig


def read_export(path) -> dict:
    p = Path(path)
    return json.loads(p.read_text()) if p.exists() else {}


def main(argv=None) -> int:
    """python -m experiments.plots SWEEP_DIR OUT_DIR [TITLE]: the README's figures, <name>_scores.png,
    <name>_learning_curves.png and, where T or lambda was varied, <name>_t_lambda.png."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m experiments.plots", description=main.__doc__, formatter_class=HelpFormatter)
    ap.add_argument("sweep_dir", metavar="SWEEP_DIR", help="a folder of run dirs (a sweep); its name starts each file name")
    ap.add_argument("out_dir", metavar="OUT_DIR", help="where the .png files go (made if missing)")
    ap.add_argument("title", metavar="TITLE", nargs="?", default="", help="title over the scores and T/lambda figures")
    args = ap.parse_args(argv)
    if not Path(args.sweep_dir).is_dir():
        raise UserError(f"SWEEP_DIR {args.sweep_dir} is not a folder (python -m experiments.plots SWEEP_DIR OUT_DIR [TITLE])")
    df = load_runs(args.sweep_dir)
    if df.empty:
        raise UserError(f"no finished runs under {args.sweep_dir}")
    out, name = Path(args.out_dir), Path(args.sweep_dir).name
    out.mkdir(parents=True, exist_ok=True)
    config_scores(df, title=args.title).savefig(out / f"{name}_scores.png", dpi=110)
    fig = learning_curves(sorted(df[(df.kind == "student") & (df.seed == 0)].path))
    fig.tight_layout()
    fig.savefig(out / f"{name}_learning_curves.png", dpi=110)
    written = [out / f"{name}_scores.png", out / f"{name}_learning_curves.png"]
    kd = df[(df.kind == "student") & (df.lam > 0)]
    if kd.temperature.nunique() > 1 or kd.lam.nunique() > 1:  # T or lambda was varied: the score-vs-T/lambda figure
        t_lambda(df, title=args.title).savefig(out / f"{name}_t_lambda.png", dpi=110)
        written.append(out / f"{name}_t_lambda.png")
    print("wrote " + ", ".join(map(str, written)))
    return 0


if __name__ == "__main__":
    run(main)
