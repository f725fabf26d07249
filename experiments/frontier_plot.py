"""The frontier's plot (experiments.frontier): Kaggle mAP (± seed std) against int8 latency per (model, setting), the
Pareto front per setting as a step line, the teacher as a dashed line."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from experiments.frontier_table import options

MARKERS = {"baseline": ("tab:gray", "o"), "kd": ("tab:blue", "s"), "kd_unl": ("tab:orange", "D")}


def pareto_front(points) -> list[int]:
    """Indices of the (cost, score) points no other point dominates (cost <= and score >=, one of them strictly),
    by increasing cost; points with a NaN are left out."""
    ok = [i for i, (x, y) in enumerate(points) if x == x and y == y]

    def dominated(i):
        xi, yi = points[i]
        return any(points[j][0] <= xi and points[j][1] >= yi and (points[j][0] < xi or points[j][1] > yi) for j in ok)

    return sorted((i for i in ok if not dominated(i)), key=lambda i: (points[i][0], -points[i][1]))


def point_label(model: str, spec) -> str:
    """A point's label in the plot: the model, and the options that tell its runs from the setting's plain ones
    (frontier_table.options of its RunSpec: "unet4 +lovasz3 +thr"; the colour already says baseline / kd / kd_unl)."""
    return " ".join([model, *options(spec)])


def point_labels(students: pd.DataFrame) -> dict:
    """{(model, config): point label} of the frontier table's rows, from the runs' RunSpecs (one per configuration)."""
    return {(m, v.strip()): point_label(m, s) for m, v, s in zip(students.model, students.variant, students.spec)}


def spread(ys: np.ndarray, gap: float) -> np.ndarray:
    """Label heights for points that share an x: each point's own height, pushed up where needed so that labels in
    height order are at least `gap` apart ([0.70, 0.701, 0.75], gap 0.01 -> [0.70, 0.71, 0.75])."""
    out = np.asarray(ys, float).copy()
    order = np.argsort(out, kind="stable")
    for prev, i in zip(order, order[1:]):
        out[i] = max(out[i], out[prev] + gap)
    return out


def x_column(local: list, pi_cols: list) -> str | None:
    """The plot's latency: int8 at the fewest threads, of the Pi CSV when given, else of the first runtime."""
    cols = [c for c in (pi_cols or local) if c.startswith(("int8_", "pi_int8_"))]
    if not cols:
        return None
    first = cols[0].rsplit("_", 1)[1]  # the runtime slug of the first column
    same = [c for c in cols if c.endswith("_" + first)]
    return min(same, key=lambda c: int(re.search(r"_ms_(\d+)t_", c).group(1)))


def _annotate(ax, fig, groups: list, x: str, labels: dict) -> None:
    """Each point's label: baseline labels below their point, the others above (a model's two settings often sit close);
    points of one setting at one latency (a model's variants) get their labels pushed apart, one line of text each."""
    ylo, yhi = ax.get_ylim()
    points_per_y = ax.get_position().height * fig.get_size_inches()[1] * 72 / max(yhi - ylo, 1e-9)
    for sett, g in groups:
        base = -10 if sett == "baseline" else 4
        for _, col in g.groupby(g[x].round(6)) if len(g) else []:
            heights = spread(col.kaggle_map.to_numpy(float), 10 / points_per_y)
            names = [labels.get((m, c), m) for m, c in zip(col.model, col.config)]
            for label, lx, y, h in zip(names, col[x], col.kaggle_map, heights):
                ax.annotate(label, (lx, y), textcoords="offset points", xytext=(4, base + (h - y) * points_per_y), fontsize=7)


def plot(f: pd.DataFrame, teachers: pd.DataFrame, x: str | None, title: str, labels: dict):
    """Val Kaggle mAP against int8 latency per (model, setting), seed std as error bars, the Pareto front per setting;
    labels: {(model, config): the point's label} (point_labels)."""
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
    _annotate(ax, fig, groups, x, labels)
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
