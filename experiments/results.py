"""Results table and honest summary from run dirs.

    python -m experiments.results runs/cpu
    # writes runs/cpu/results.csv (one row per run) and runs/cpu/summary.csv, and prints the summary:
    # config, n seeds, mean_iou mean ± std, kaggle_map mean ± std, paired d_kaggle vs baseline
    # [bootstrap 95% CI], share of the teacher-baseline gap closed, and the same paired difference for the
    # last epoch's models ("last": no epoch picked on the validation images, so selection cannot inflate it)
    python -m experiments.results runs/cpu --reference "unet4 KD T=2 lam=0.9 s=T +unl"
    # the same, plus d_ref [95% CI] and seeds above: each config paired by seed against that config (its label),
    # best epoch and last epoch

Paired differences: distilled minus baseline of the same model (arch, width, depth, decoder) and seed, on per-image Kaggle
scores of the same validation images; the interval bootstraps images (seeds averaged first).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from common import io
from common.cli import UserError, run
from training.naming import RunSpec, model_name

CONFIG_KEYS = ("base_filters", "lam", "temperature", "scale", "unlabelled", "epochs")


def load_runs(root) -> pd.DataFrame:
    """One row per finished run dir under root (config.json + metrics.json)."""
    rows = []
    for m in sorted(Path(root).glob("**/metrics.json")):
        run = m.parent
        try:
            cfg = json.loads((run / "config.json").read_text())
            met = json.loads(m.read_text())
        except (OSError, ValueError):
            continue
        kind = "teacher" if (run / "teacher.keras").exists() else "student"
        row = {
            "run": run.name,
            "path": str(run),
            "kind": kind,
            "seed": cfg.get("seed"),
            "base_filters": cfg.get("base_filters"),
            "lam": cfg.get("lam", np.nan) if kind == "student" else np.nan,
            # the temperature trained with ("auto" resolves to the soft target's NLL-optimal T, kept in metrics.json)
            "temperature": met.get("temperature", cfg.get("temperature", np.nan)) if kind == "student" else np.nan,
            "auto_T": kind == "student" and cfg.get("temperature") == "auto",
            "scale": cfg.get("scale", "") if kind == "student" and cfg.get("lam", 0) > 0 else "",
            "unlabelled": bool(cfg.get("unlabelled")),
            # soft targets from a cache of another program's probability maps (no teacher file, no flipped views)
            "blackbox": kind == "student" and cfg.get("lam", 0) > 0 and bool(cfg.get("teacher_cache")) and not cfg.get("teacher"),
            "flip": bool(cfg.get("flip", True)),
            "epochs": cfg.get("epochs"),
            "params": met.get("params"),
            "mean_iou": met["val"]["mean_iou"],
            "salt_iou": met["val"]["salt_iou"],
            "kaggle_map": met["val"]["kaggle_map"],
            "kaggle_map_tta": met.get("val_flip_tta", {}).get("kaggle_map"),
            "best_epoch": met.get("best_epoch"),
            "wall_s": met.get("wall_s"),
            "train_img_per_s": met.get("train_img_per_s"),
        }
        # the soft target: how many teachers, their (ensemble's) score and calibration on the same validation split
        teacher = met if kind == "teacher" else met.get("teacher", {})
        cal = teacher.get("calibration", {})
        row.update(
            {
                "n_teachers": 1 if kind == "teacher" else (len(cfg.get("teacher") or []) if row["lam"] > 0 else 0),
                "teacher_kaggle_map": teacher.get("val", {}).get("kaggle_map") if kind == "student" else row["kaggle_map"],
                "teacher_nll": cal.get("nll"),
                "teacher_ece": cal.get("ece"),
                "teacher_best_T": cal.get("best_temperature"),
            }
        )
        # after today's columns (other code reads them by name): the architecture and the run's label (RunSpec; runs of
        # earlier versions, without metrics["teacher"]["label"], get one from their number of teachers and cache)
        row.update(
            arch=cfg.get("arch", "unet"),
            label=label(run),
            model=model_name(cfg.get("arch", "unet"), cfg.get("base_filters"), cfg.get("depth", 4), cfg.get("upsample", "")),
            peak_rss_mb=met.get("peak_rss_mb"),
            # the last epoch's model: no selection on the validation images (runs before 2026-11-27 lack it)
            mean_iou_last=met.get("val_last", {}).get("mean_iou"),
            kaggle_map_last=met.get("val_last", {}).get("kaggle_map"),
            # at the threshold picked on these same validation images (--tune-threshold): optimistic
            kaggle_map_tuned=met.get("val_tuned_threshold", {}).get("kaggle_map"),
            threshold_tuned=met.get("val_tuned_threshold", {}).get("threshold"),
            # the same pick made on half the validation images and scored on the other half (not flattered)
            kaggle_map_tuned_crossfit=met.get("val_tuned_threshold", {}).get("crossfit", {}).get("kaggle_map"),
            augment=cfg.get("augment", "flip"),  # --augment: a run is paired with the baseline of the same augmentation
        )
        rows.append(row)
    return pd.DataFrame(rows)


def label(r) -> str:
    """A run's human label (training.runs.RunSpec: "unet4 KD T=2 lam=0.9 s=T +unl ens2"); a row of load_runs or a run dir."""
    if isinstance(r, (str, Path)):
        return RunSpec.from_run_dir(Path(r)).label
    got = r.get("label")
    return got if isinstance(got, str) and got else RunSpec.from_run_dir(Path(r["path"])).label


BEST, LAST = "val_kaggle_per_image", "val_last_kaggle_per_image"  # per-image Kaggle scores: best epoch, last epoch


def _per_image(path, key: str = BEST) -> tuple[list, np.ndarray | None]:
    m = json.loads((Path(path) / "metrics.json").read_text())
    return m.get("val_ids"), (np.asarray(m[key]) if key in m else None)


def _paired_diff(run, base, key: str = BEST) -> np.ndarray | None:
    """Per-image Kaggle score differences (of the best-epoch models, or with key=LAST the last epoch's), or None when
    the two runs were not scored on the same images or one lacks the scores (runs before 2026-11-27 have no LAST)."""
    (ids_a, a), (ids_b, b) = _per_image(run, key), _per_image(base, key)
    return a - b if ids_a == ids_b and a is not None and b is not None else None


def bootstrap_ci(diff: np.ndarray, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), (n, len(diff)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def seed_pairs(g: pd.DataFrame, ref: pd.DataFrame, key: str = BEST, prefer: str = "") -> list[tuple]:
    """(run, its reference run, per-image Kaggle differences of `key`'s scores) for each run of g that has a run of ref
    with its seed, scored on the same validation images. `prefer`: a column; among ref runs of that seed, one with the
    run's value there comes first (experiments.frontier pairs a model's runs with the reference's of the same setting)."""
    out = []
    for r in g.itertuples():
        cands = ref[ref.seed == r.seed]
        if cands.empty:
            continue
        if prefer:
            same = cands[cands[prefer] == getattr(r, prefer)]
            cands = same if len(same) else cands
        b = cands.iloc[0]
        diff = _paired_diff(r.path, b["path"], key)
        if diff is not None:
            out.append((r, b, diff))
    return out


def _pairs(g: pd.DataFrame, ref: pd.DataFrame, key: str = BEST) -> tuple[list, np.ndarray | None]:
    """Runs g paired by seed with the runs ref (same validation images only), and the per-image Kaggle differences
    (of `key`'s scores) with the seeds averaged first (None without pairs)."""
    pairs = seed_pairs(g, ref, key)
    return [(r, b) for r, b, _ in pairs], (np.mean([d for _, _, d in pairs], axis=0) if pairs else None)


def _last(g: pd.DataFrame, ref: pd.DataFrame, prefix: str) -> dict:
    """The last-epoch paired difference and its interval ({prefix}_last, _last_lo, _last_hi), where every pair has it."""
    pairs, diffs = _pairs(g, ref, LAST)
    if not pairs or len(pairs) < len(_pairs(g, ref)[0]):  # some runs predate the last-epoch scores: no partial mean
        return {}
    lo, hi = bootstrap_ci(diffs)
    return {f"{prefix}_last": float(diffs.mean()), f"{prefix}_last_lo": lo, f"{prefix}_last_hi": hi}


def paired_vs(g: pd.DataFrame, ref: pd.DataFrame) -> dict:
    """Runs g paired by seed (same validation images) with the runs ref: mean per-image Kaggle difference (seeds averaged
    first), its bootstrap 95% interval over images, and how many seeds are above their reference run."""
    pairs, diffs = _pairs(g, ref)
    if not pairs:
        return {}
    lo, hi = bootstrap_ci(diffs)
    return {
        "n_ref_pairs": len(pairs),
        "d_ref": float(diffs.mean()),
        "d_ref_lo": lo,
        "d_ref_hi": hi,
        "ref_seeds_above": int(sum(d.kaggle_map > b["kaggle_map"] for d, b in pairs)),
        **_last(g, ref, "d_ref"),
    }


def summarize(df: pd.DataFrame, reference: str = "") -> pd.DataFrame:
    """Per configuration: mean ± std over seeds; paired difference vs the baseline; gap closed; with `reference` (a
    config's label), also the paired difference vs that config (d_ref, its interval, seeds above it)."""
    df = df.copy()
    df["config"] = df["label"] if "label" in df else df.apply(label, axis=1)
    if "arch" not in df:
        df["arch"] = "unet"
    teacher_map = df.loc[df.kind == "teacher", "kaggle_map"].mean() if (df.kind == "teacher").any() else np.nan
    out = []
    for config, g in df.groupby("config", sort=False):
        r = {
            "config": config,
            "n_seeds": len(g),
            "params": int(g["params"].iloc[0]),
            "mean_iou": g["mean_iou"].mean(),
            "mean_iou_std": g["mean_iou"].std(ddof=1) if len(g) > 1 else np.nan,
            "kaggle_map": g["kaggle_map"].mean(),
            "kaggle_map_std": g["kaggle_map"].std(ddof=1) if len(g) > 1 else np.nan,
            "kaggle_map_last": pd.to_numeric(g["kaggle_map_last"], errors="coerce").mean() if "kaggle_map_last" in g else np.nan,
        }
        first = g.iloc[0]
        if first["kind"] == "student" and first["lam"] > 0:
            same = (
                (df.model == first["model"]) if "model" in df else (df.base_filters == first["base_filters"]) & (df.arch == first["arch"])
            )
            same &= (df.augment == first["augment"]) if "augment" in df else True  # --augment strong: its own baseline
            base = df[(df.kind == "student") & (df.lam == 0) & same]
            pairs, diffs = _pairs(g, base)
            if pairs:
                lo, hi = bootstrap_ci(diffs)
                base_map = np.mean([b["kaggle_map"] for _, b in pairs])
                # the gap to this configuration's own soft target (an ensemble's score, not a single teacher's)
                own = g["teacher_kaggle_map"].mean() if "teacher_kaggle_map" in g and g["teacher_kaggle_map"].notna().any() else teacher_map
                r.update(
                    n_pairs=len(pairs),
                    d_kaggle=float(diffs.mean()),
                    d_lo=lo,
                    d_hi=hi,
                    teacher_kaggle_map=own,
                    seeds_positive=int(sum(d.kaggle_map > b["kaggle_map"] for d, b in pairs)),
                    gap_closed=float((r["kaggle_map"] - base_map) / (own - base_map)) if own > base_map else np.nan,
                    **_last(g, base, "d_kaggle"),
                )
        if reference and config != reference and first["kind"] == "student":
            r.update(paired_vs(g, df[(df.config == reference) & (df.kind == "student")]))
        if first["kind"] == "teacher" and "teacher_nll" in g:
            r.update(teacher_nll=g["teacher_nll"].mean(), teacher_ece=g["teacher_ece"].mean(), teacher_best_T=g["teacher_best_T"].mean())
        out.append(r)
    return pd.DataFrame(out)


def _ci(r: dict, key: str) -> str:
    return f"{r[key]:+.4f} [{r[key + '_lo']:+.4f},{r[key + '_hi']:+.4f}]" if r.get(key) == r.get(key) and key in r else ""


def format_summary(s: pd.DataFrame) -> str:
    """One line a config; "last" columns score the last epoch's models (no epoch picked on the validation images)."""
    lines = [
        f"{'config':50s} {'n':>2s} {'params':>9s} {'mean_iou':>15s} {'kaggle_map':>15s} {'last':>6s} "
        f"{'d_kaggle [95% CI]':>26s} {'gap':>5s} {'d_kaggle last [95% CI]':>26s}"
    ]
    for r in s.to_dict("records"):
        mi = f"{r['mean_iou']:.4f}" + (f"±{r['mean_iou_std']:.4f}" if r["mean_iou_std"] == r["mean_iou_std"] else "")
        km = f"{r['kaggle_map']:.4f}" + (f"±{r['kaggle_map_std']:.4f}" if r["kaggle_map_std"] == r["kaggle_map_std"] else "")
        d = (
            f"{r['d_kaggle']:+.4f} [{r['d_lo']:+.4f},{r['d_hi']:+.4f}]"
            if r.get("d_kaggle") == r.get("d_kaggle") and "d_kaggle" in r
            else ""
        )
        last = f"{r['kaggle_map_last']:.4f}" if r.get("kaggle_map_last") == r.get("kaggle_map_last") else ""
        gap = f"{r['gap_closed']:.0%}" if r.get("gap_closed") == r.get("gap_closed") and "gap_closed" in r else ""
        ref = (
            f"  vs ref {r['d_ref']:+.4f} [{r['d_ref_lo']:+.4f},{r['d_ref_hi']:+.4f}] {int(r['ref_seeds_above'])}/{int(r['n_ref_pairs'])} seeds above"
            + (f", last epoch {_ci(r, 'd_ref_last')}" if _ci(r, "d_ref_last") else "")
            if r.get("d_ref") == r.get("d_ref") and "d_ref" in r
            else ""
        )
        lines.append(
            f"{r['config']:50s} {r['n_seeds']:2d} {r['params']:9,d} {mi:>15s} {km:>15s} {last:>6s} {d:>26s} {gap:>5s} "
            f"{_ci(r, 'd_kaggle_last'):>26s}{ref}"
        )
    cal = [r for r in s.to_dict("records") if r.get("teacher_nll") == r.get("teacher_nll") and "teacher_nll" in r]
    if cal:
        lines.append(
            "teacher calibration (validation pixels, T = 1): "
            + "; ".join(
                f"{r['config']}: NLL {r['teacher_nll']:.4f}, ECE {r['teacher_ece']:.4f}, NLL-optimal T {r['teacher_best_T']:.2f}"
                for r in cal
            )
        )
    return "\n".join(lines)


def write_tables(root, reference: str = "") -> tuple[pd.DataFrame, pd.DataFrame]:
    df = load_runs(root)
    if df.empty:
        return df, df
    s = summarize(df, reference)
    if reference and reference not in set(s.config):
        raise UserError(f"--reference {reference!r} is not a config here; configs: {', '.join(map(repr, s.config))}")
    io.write_text(Path(root) / "results.csv", df.to_csv(index=False))
    io.write_text(Path(root) / "summary.csv", s.to_csv(index=False))
    io.write_text(Path(root) / "summary.txt", format_summary(s) + "\n")
    return df, s


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    reference = ""
    if "--reference" in argv:
        i = argv.index("--reference")
        if i + 1 >= len(argv):
            raise UserError('--reference needs a config\'s label, e.g. "unet4 KD T=2 lam=0.9 s=T +unl"')
        reference = argv.pop(i + 1)
        argv.pop(i)
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        raise UserError('usage: python -m experiments.results SWEEP_DIR [--reference "CONFIG LABEL"] (a folder of run dirs)')
    df, s = write_tables(argv[0], reference)
    if df.empty:
        raise UserError(f"no finished runs (metrics.json) under {argv[0]}")
    print(format_summary(s))
    return 0


if __name__ == "__main__":
    run(main)
