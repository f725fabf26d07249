"""The epochs curve: validation Kaggle mAP against the training budget, one line per configuration.

    python -m experiments.epochs runs/cpu runs/cpu_e45 runs/cpu_e90 [--out runs/epochs] [--overwrite]
    # prints one row per (configuration, epochs): seeds, kaggle_map mean ± std (best epoch), kaggle_map_last
    # (the last epoch: no selection on the validation images), and, for a longer budget, its paired difference
    # against the same configuration's shortest budget by seed (best and last epoch, bootstrap 95% CI over
    # images, seeds above); writes OUT/epochs.csv and OUT/epochs.png, and, when the students have several
    # teachers, OUT/teachers.png: each recipe's student score against its teacher's (teacher or capacity?), over the
    # seeds all its teachers' students share

Each sweep dir is read with experiments.results (its finished runs; a run's budget is its config's --epochs, so
one dir may hold several). Configurations are matched across dirs by their label ("unet4 baseline",
"unet4 KD T=2 lam=0.9 s=T +unl"; with students of several teachers, the recipe and the teacher: "unet4 KD T=2
lam=0.9 s=T +unl <- unet16"), so the curve of a configuration is the same training at 15, 45 and 90 epochs
(the cosine schedule stretched to each budget, not one long run cut short). Where the curve flattens is
what a longer CPU schedule, or a GPU box, buys. Default OUT: the first sweep dir's `epochs/`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from common import io
from common.cli import UserError, run
from common.config import HelpFormatter
from experiments.results import LAST, config_labels, format_unreadable, load_runs, load_sweeps, paired_vs, seed_pairs


def students(dirs, df: pd.DataFrame | None = None) -> pd.DataFrame:
    """The finished student runs of all dirs, one row each, with their config label (several teachers: one per recipe
    and teacher, "... <- unet16") and teacher. `df`: the runs load_sweeps already read from dirs (read here when None)."""
    df = load_sweeps(*dirs)[0] if df is None else df
    if df.empty or not (df.kind == "student").any():
        raise UserError(f"no finished student runs (metrics.json) under {', '.join(map(str, dirs))}")
    df = df[df.kind == "student"].copy()
    df["config"] = config_labels(df, budgets=False)
    df["teacher"] = df.teacher.fillna("").astype(str)
    return df


def curve(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (config label, epochs) over the student runs `students` read: n seeds, Kaggle mAP (best epoch) mean ±
    std, last-epoch Kaggle mAP mean, mean IoU mean."""
    rows = []
    for (config, epochs), g in df.groupby(["config", "epochs"], sort=True):
        last = pd.to_numeric(g["kaggle_map_last"], errors="coerce")
        soft = pd.to_numeric(g["teacher_kaggle_map"], errors="coerce") if "teacher_kaggle_map" in g else pd.Series(dtype=float)
        rows.append(
            {
                "config": config,
                "recipe": g.recipe.iloc[0],
                "teacher": g.teacher.iloc[0],
                "teacher_kaggle_map": soft.mean() if soft.notna().any() else np.nan,  # its soft target's score (an ensemble's)
                "epochs": int(epochs),
                "n_seeds": len(g),
                "seeds": " ".join(str(s) for s in sorted(g.seed)),
                "kaggle_map": g.kaggle_map.mean(),
                "kaggle_map_std": g.kaggle_map.std(ddof=1) if len(g) > 1 else np.nan,
                "kaggle_map_last": last.mean() if last.notna().any() else np.nan,
                "mean_iou": g.mean_iou.mean(),
                "wall_h": pd.to_numeric(g.wall_s, errors="coerce").mean() / 3600,
                **vs_shortest(g, df[(df.config == config) & (df.epochs == df.epochs[df.config == config].min())]),
            }
        )
    return pd.DataFrame(rows)


PAIRED = ("d_vs_shortest", "d_lo", "d_hi", "seeds_above", "d_last_vs_shortest", "d_last_lo", "d_last_hi", "seeds_above_last")


def vs_shortest(g: pd.DataFrame, short: pd.DataFrame) -> dict:
    """A longer budget's runs paired by seed with the same configuration at its shortest budget (same validation
    images), by experiments.results.paired_vs: mean per-image Kaggle difference (seeds averaged first) with its
    bootstrap 95% interval over images, and seeds above, for the best-epoch models and for the last epochs (where
    every pair has them). NaN for the shortest budget itself, or unpaired."""
    out = dict.fromkeys(PAIRED, np.nan)
    p = {} if g.path.isin(short.path).all() else paired_vs(g, short)
    if p:
        out |= {"d_vs_shortest": p["d_ref"], "d_lo": p["d_ref_lo"], "d_hi": p["d_ref_hi"], "seeds_above": p["ref_seeds_above"]}
    if "d_ref_last" in p:
        above = sum(d.mean() > 0 for _, _, d in seed_pairs(g, short, LAST))
        out |= {
            "d_last_vs_shortest": p["d_ref_last"],
            "d_last_lo": p["d_ref_last_lo"],
            "d_last_hi": p["d_ref_last_hi"],
            "seeds_above_last": above,
        }
    return out


def _with_epoch_keys(ax) -> list:
    """The axes' legend entries and the two line styles: best epoch solid, last epoch dashed."""
    from matplotlib.lines import Line2D

    handles, _ = ax.get_legend_handles_labels()
    return handles + [
        Line2D([], [], color="gray", marker="o", label="best epoch"),
        Line2D([], [], color="gray", ls="--", marker="x", label="last epoch"),
    ]


def plot(table: pd.DataFrame, path: Path, teacher: float | None = None) -> None:
    """One colour per configuration: best epoch solid with seed std, last epoch dashed; the legend beside the axes."""
    fig, ax = plt.subplots(figsize=(10, 4.8))
    for config, g in table.groupby("config", sort=False):
        g = g.sort_values("epochs")
        line = ax.errorbar(g.epochs, g.kaggle_map, yerr=g.kaggle_map_std.fillna(0), marker="o", capsize=3, label=config)
        if g.kaggle_map_last.notna().any():
            ax.plot(g.epochs, g.kaggle_map_last, ls="--", marker="x", color=line[0].get_color())
    if teacher is not None and np.isfinite(teacher):
        ax.axhline(teacher, color="k", ls=":", label=f"teacher {teacher:.4f}")
    handles = _with_epoch_keys(ax)
    ax.set_xlabel("training epochs (cosine schedule over the whole budget)")
    ax.set_ylabel("validation Kaggle mAP (mean over seeds, ± std)")
    ax.set_xticks(sorted(table.epochs.unique()))
    ax.grid(alpha=0.3)
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    with io.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def teacher_points(runs: pd.DataFrame) -> pd.DataFrame:
    """Teacher or capacity, the points: per recipe, budget and teacher, its soft target's score and its students' Kaggle
    mAP (best epoch mean and seed std, last epoch mean), paired: a point averages only the seeds that every teacher of
    that recipe and budget has students of, so a teacher with one seed is not set beside another's three. Empty unless
    the students have more than one teacher."""
    soft = (
        pd.to_numeric(runs["teacher_kaggle_map"], errors="coerce") if "teacher_kaggle_map" in runs else pd.Series(np.nan, index=runs.index)
    )
    taught = runs[soft.notna()].assign(soft=soft[soft.notna()], last=pd.to_numeric(runs["kaggle_map_last"], errors="coerce"))
    if taught.teacher.nunique() < 2:
        return pd.DataFrame()
    points = []
    for (recipe, epochs), g in taught.groupby(["recipe", "epochs"], sort=True):
        common = sorted(set.intersection(*(set(c.seed) for _, c in g.groupby("config"))))
        for (config, teacher), c in g[g.seed.isin(common)].groupby(["config", "teacher"]):
            points.append(
                {
                    "recipe": recipe,
                    "epochs": int(epochs),
                    "config": config,
                    "teacher": teacher,
                    "seeds": " ".join(str(s) for s in common),
                    "soft": c.soft.mean(),
                    "best": c.kaggle_map.mean(),
                    "std": c.kaggle_map.std(ddof=1) if len(c) > 1 else 0.0,
                    "last": c["last"].mean(),
                }
            )
    return pd.DataFrame(points)


def plot_teachers(points: pd.DataFrame, path: Path) -> bool:
    """Teacher or capacity: each recipe's student score (best epoch ± seed std, last epoch dashed) against the score of
    its teacher's soft target (`teacher_points`), one line per recipe and budget, the diagonal where the student equals
    its teacher. Drawn only when there are points; returns whether it was."""
    if points.empty:
        return False
    fig, ax = plt.subplots(figsize=(10, 4.8))
    for (recipe, epochs), g in points.groupby(["recipe", "epochs"], sort=True):
        g = g.sort_values("soft")
        line = ax.errorbar(g.soft, g.best, yerr=g["std"], marker="o", capsize=3, label=f"{recipe}, {epochs} epochs")
        if g["last"].notna().any():
            ax.plot(g.soft, g["last"], ls="--", marker="x", color=line[0].get_color())
        for r in g.itertuples():
            ax.annotate(f"{r.teacher} (seeds {r.seeds})", (r.soft, r.best), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.margins(x=0.15)
    lo, hi = ax.get_xlim()
    hi += 0.25 * (hi - lo)  # room for the rightmost point's label
    ax.plot([lo, hi], [lo, hi], color="k", ls=":", lw=1, label="student = teacher")
    ax.set_xlim(lo, hi)
    ax.set_xlabel("the teacher's validation Kaggle mAP (its soft target: an ensemble's mean logits)")
    ax.set_ylabel("the student's val Kaggle mAP (seed mean ± std)")
    ax.grid(alpha=0.3)
    ax.legend(handles=_with_epoch_keys(ax), fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    with io.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return True


def teacher_score(dirs) -> float | None:
    for d in dirs:
        df = load_runs(d)
        if not df.empty and (df.kind == "teacher").any():
            return float(df.loc[df.kind == "teacher", "kaggle_map"].iloc[0])
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("sweep_dirs", nargs="+", help="sweep dirs (runs/cpu runs/cpu_e45 ...)")
    ap.add_argument("--out", default="", help="where epochs.csv and epochs.png go (default: FIRST_SWEEP_DIR/epochs)")
    ap.add_argument("--model", default="", help="only this student model's configurations (unet4): one model's curve")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing OUT/epochs.csv")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    dirs = [Path(d) for d in args.sweep_dirs]
    for d in dirs:
        if not d.is_dir():
            raise UserError(f"sweep dir {d} does not exist")
    out = Path(args.out) if args.out else dirs[0] / "epochs"
    if (out / "epochs.csv").exists() and not args.overwrite:
        raise UserError(f"{out / 'epochs.csv'} exists; pass --overwrite to replace it")
    df, bad = load_sweeps(*dirs)
    print(format_unreadable(bad), end="", file=sys.stderr, flush=True)
    runs = students(dirs, df)
    if args.model:
        keep = runs.config.str.startswith(args.model + " ")
        if not keep.any():
            raise UserError(f"--model {args.model}: no runs; the models here: {', '.join(sorted({c.split()[0] for c in runs.config}))}")
        runs = runs[keep]
    table = curve(runs)
    out.mkdir(parents=True, exist_ok=True)
    io.write_text(out / "epochs.csv", table.to_csv(index=False))
    plot(table, out / "epochs.png", teacher_score(dirs))
    teachers = plot_teachers(teacher_points(runs), out / "teachers.png")
    print(
        f"{'config':52s} {'epochs':>6s} {'n':>2s} {'kaggle_map':>16s} {'last epoch':>10s} {'mean_iou':>8s} {'teacher':>7s} {'h/run':>6s}"
        f" {'d vs shortest [95% CI]':>26s} {'above':>5s} {'d last vs shortest [95% CI]':>27s} {'above':>5s}"
    )
    for r in table.to_dict("records"):
        km = f"{r['kaggle_map']:.4f}" + (f"±{r['kaggle_map_std']:.4f}" if r["kaggle_map_std"] == r["kaggle_map_std"] else "")
        last = f"{r['kaggle_map_last']:.4f}" if r["kaggle_map_last"] == r["kaggle_map_last"] else ""
        soft = f"{r['teacher_kaggle_map']:.4f}" if r["teacher_kaggle_map"] == r["teacher_kaggle_map"] else ""
        line = (
            f"{r['config']:52s} {r['epochs']:6d} {r['n_seeds']:2d} {km:>16s} {last:>10s} {r['mean_iou']:8.4f} {soft:>7s} {r['wall_h']:6.2f}"
        )
        for p, w in (("", 26), ("_last", 27)):
            d, lo, hi, above = (r[f"d{p}_vs_shortest"], r[f"d{p}_lo"], r[f"d{p}_hi"], r[f"seeds_above{p}"])
            paired = d == d  # NaN: the shortest budget itself, or no pairs
            ci, seeds = (f"{d:+.4f} [{lo:+.4f},{hi:+.4f}]", f"{int(above)}/{r['n_seeds']}") if paired else ("", "")
            line += f" {ci:>{w}s} {seeds:>5s}"
        print(line)
    wrote = f"{out / 'epochs.csv'}, {out / 'epochs.png'}" + (f" and {out / 'teachers.png'}" if teachers else "")
    print(f"wrote {wrote}" + (f"; {len(bad)} unreadable run(s) left out, named above" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    run(main)
