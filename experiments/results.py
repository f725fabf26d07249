"""Results table and honest summary from run dirs.

    python -m experiments.results runs/cpu
    # writes runs/cpu/results.csv (one row per run, with its fields), runs/cpu/summary.csv and summary.txt, and prints
    # the summary: per config, n seeds, mean_iou and kaggle_map mean ± std over seeds, the last epoch's kaggle_map,
    # then its paired differences vs the baseline of the same model: d mean IoU and d Kaggle mAP [bootstrap 95% CI],
    # seeds above, the share of the teacher-baseline gap closed, best epoch and last epoch ("last": no epoch picked on
    # the validation images, so selection cannot inflate it)
    python -m experiments.results runs/cpu --reference model=unet4,lam=0.9,unlabelled=true
    # the same, plus each config paired by seed against the reference config: chosen by run fields (columns of
    # results.csv: model, arch, base_filters, lam, temperature, scale, teacher, unlabelled, unlabelled_images, options,
    # epochs, ...), or by its label ("unet4 KD T=2 lam=0.9 s=T +unl")
    python -m experiments.results runs/cpu_e45 runs/cpu_t16 --out runs/teachers --reference teacher=unet8,lovasz_epochs=9
    # several sweeps read as one, the tables in --out: here the 45-epoch students of unet8 and of unet16 paired by seed
    # (a recipe taught by several teachers is one config per teacher, "... <- unet16"; one run at several --epochs,
    # one per budget, "... epochs=45")

Paired differences: a run minus the reference run of the same seed, on the same validation images. Kaggle mAP: per-image
scores, seeds averaged first, images bootstrapped. Mean IoU (pooled over the pixels of a set, so not a mean of per-image
values): per-image pixel counts (tp, fp, fn, tn) of both runs summed over each bootstrap resample of the images, the
difference of the two pooled mean IoUs averaged over seeds. Runs whose metrics.json lacks the counts (made before they
were stored) get them from `python -m experiments.rescore SWEEP_DIR`. Runs that cannot be read are listed, never dropped
in silence.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from common import io
from common.cli import UserError, run
from metrics.segmentation import pooled_iou
from training.naming import RunSpec, model_name, run_kind


def _read_json(path: Path) -> dict:
    try:
        met = json.loads(path.read_text())
    except OSError as e:
        raise UserError(f"{path}: cannot read: {e.strerror or e}") from None
    except ValueError as e:
        raise UserError(f"{path}: not valid JSON (truncated or damaged?): {e}") from None
    if not isinstance(met, dict):
        raise UserError(f"{path}: not a JSON object")
    return met


def read_metrics(run_dir) -> dict:
    """A run's metrics.json; UserError naming the file and the reason when it cannot be read or holds no scores."""
    path = Path(run_dir) / "metrics.json"
    met = _read_json(path)
    if not isinstance(met.get("val"), dict) or "kaggle_map" not in met["val"]:
        raise UserError(f"{path}: holds no validation scores ('val')")
    return met


def unreadable_runs(root) -> list[tuple[str, str]]:
    """(run dir, reason) of every run under root whose metrics.json exists but cannot be used."""
    bad = []
    for m in sorted(Path(root).glob("**/metrics.json")):
        try:
            read_metrics(m.parent)
            json.loads((m.parent / "config.json").read_text())
        except UserError as e:
            bad.append((str(m.parent), str(e)))
        except (OSError, ValueError) as e:
            bad.append((str(m.parent), f"{m.parent / 'config.json'}: {e}"))
    return bad


def load_runs(root) -> pd.DataFrame:
    """One row per finished run dir under root (config.json + metrics.json); those that cannot be read are left out
    here and named by `unreadable_runs` (every command that reads runs reports them)."""
    rows = []
    for m in sorted(Path(root).glob("**/metrics.json")):
        run = m.parent
        try:
            met = read_metrics(run)
            cfg = json.loads((run / "config.json").read_text())
        except (UserError, OSError, ValueError):
            continue
        rows.append(_run_row(run, cfg, met))
    return pd.DataFrame(rows)


def load_sweeps(*dirs) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """The finished runs under every dir given (sweeps, a teacher's dir, ...; "" and repeats skipped), one row per run
    dir, and the runs that cannot be read (dir, reason)."""
    seen, frames, bad = set(), [], []
    for d in dirs:
        if not d or Path(d).resolve() in seen:
            continue
        seen.add(Path(d).resolve())
        frames.append(load_runs(d))
        bad += unreadable_runs(d)
    df = pd.concat([f for f in frames if not f.empty], ignore_index=True) if any(not f.empty for f in frames) else pd.DataFrame()
    if not df.empty:
        df = df.drop_duplicates("path").reset_index(drop=True)
    return df, bad


def _run_row(run: Path, cfg: dict, met: dict) -> dict:
    """One run's row of load_runs: its config, scores, soft target and RunSpec fields."""
    kind = run_kind(run, cfg)
    row = _score_columns(run, cfg, met, kind)
    row.update(_teacher_columns(row, cfg, met, kind))
    row.update(_spec_columns(run, cfg, met))
    return row


def _score_columns(run: Path, cfg: dict, met: dict, kind: str) -> dict:
    """The run's identity, training settings and validation scores."""
    return {
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


def _teacher_columns(row: dict, cfg: dict, met: dict, kind: str) -> dict:
    """The soft target's columns: number of teachers, their score and calibration."""
    # the soft target: how many teachers, their (ensemble's) score and calibration on the same validation split
    teacher = met if kind == "teacher" else met.get("teacher", {})
    cal = teacher.get("calibration", {})
    return {
        "n_teachers": 1 if kind == "teacher" else (len(cfg.get("teacher") or []) if row["lam"] > 0 else 0),
        "teacher_kaggle_map": teacher.get("val", {}).get("kaggle_map") if kind == "student" else row["kaggle_map"],
        "teacher_nll": cal.get("nll"),
        "teacher_ece": cal.get("ece"),
        "teacher_best_T": cal.get("best_temperature"),
    }


def _spec_columns(run: Path, cfg: dict, met: dict) -> dict:
    """The architecture, label, last-epoch and tuned-threshold scores and the RunSpec fields."""
    # after today's columns (other code reads them by name): the architecture and the run's label (RunSpec; runs of
    # earlier versions, without metrics["teacher"]["label"], get one from their number of teachers and cache)
    spec = RunSpec.from_run_dir(run)
    return dict(
        arch=cfg.get("arch", "unet"),
        label=spec.label,
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
        # the run's other fields (training.naming.RunSpec), so runs are selected by field, not by parsing labels
        depth=cfg.get("depth", 4),
        upsample=cfg.get("upsample", ""),
        teacher=spec.teacher,
        unlabelled_images=int(met.get("unlabelled_images", 0) or 0) if spec.unlabelled else 0,
        n_unlabelled=spec.n_unlabelled if spec.unlabelled else 0,
        options=spec.extras[0].lstrip("_").replace("_", " "),
        teacher_tta=spec.teacher_tta,
        lovasz_epochs=spec.lovasz_epochs,
        tune_threshold=spec.tune_threshold,
        feature_loss=spec.feature_loss,
        feature_weight=spec.feature_weight if spec.feature_loss else np.nan,
        mixup=spec.mixup,
        precision=spec.precision,  # --precision: a bf16 run is paired with the bf16 baseline
        backend=cfg.get("environment", {}).get("backend", ""),  # the Keras backend it trained on (config.json)
        has_counts="val_counts_per_image" in met,
        recipe=spec.recipe,  # the label without the teacher's part: one recipe, several teachers
    )


def label(r) -> str:
    """A run's human label (training.naming.RunSpec: "unet4 KD T=2 lam=0.9 s=T +unl ens2"); a row of load_runs or a run dir."""
    if isinstance(r, (str, Path)):
        return RunSpec.from_run_dir(Path(r)).label
    got = r.get("label")
    return got if isinstance(got, str) and got else RunSpec.from_run_dir(Path(r["path"])).label


BEST, LAST = "val_kaggle_per_image", "val_last_kaggle_per_image"  # per-image Kaggle scores: best epoch, last epoch
COUNTS = {BEST: "val_counts_per_image", LAST: "val_last_counts_per_image"}  # per-image [tp, fp, fn, tn] of the same models


def _per_image(path, key: str = BEST) -> tuple[list, np.ndarray | None]:
    m = _read_json(Path(path) / "metrics.json")
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


def paired_mean_iou(count_pairs: list[tuple[np.ndarray, np.ndarray]], n: int = 2000, seed: int = 0) -> dict:
    """Paired difference of pooled mean IoU, run minus reference, from per-image counts (N, 4) of each seed's pair.

    d: the per-seed differences on all N images, averaged over seeds; lo, hi: 95% percentile interval of the same
    average over `n` bootstrap resamples of the images (one resample serves every seed: the seeds stay paired, and the
    draws are bootstrap_ci's); above: seeds whose run is above its reference."""
    n_img = len(count_pairs[0][0])
    idx = np.random.default_rng(seed).integers(0, n_img, (n, n_img))
    weights = np.zeros((n, n_img))
    np.add.at(weights, (np.arange(n)[:, None], idx), 1.0)  # how often each image is drawn in each resample
    per_seed = [pooled_iou(a.sum(axis=0))[0] - pooled_iou(b.sum(axis=0))[0] for a, b in count_pairs]
    boots = np.mean([pooled_iou(weights @ a)[0] - pooled_iou(weights @ b)[0] for a, b in count_pairs], axis=0)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"d": float(np.mean(per_seed)), "lo": float(lo), "hi": float(hi), "above": int(sum(d > 0 for d in per_seed))}


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


def _count_pairs(pairs: list[tuple], key: str) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """Per-image counts of each (run, reference) pair; None unless every pair has them on the same images."""
    out = []
    for r, b, _ in pairs:
        (ids_a, a), (ids_b, c) = _per_image(r.path, COUNTS[key]), _per_image(b["path"], COUNTS[key])
        if a is None or c is None or ids_a != ids_b:
            return None
        out.append((a, c))
    return out if out and len({len(a) for a, _ in out}) == 1 else None


def paired(g: pd.DataFrame, ref: pd.DataFrame, key: str = BEST) -> dict:
    """The one paired comparison: runs g against the runs ref of the same seeds, on `key`'s models (BEST or LAST).

    kaggle: mean per-image difference (seeds averaged first), bootstrap 95% interval over images, seeds above;
    miou: the same for pooled mean IoU (paired_mean_iou), where every pair has per-image counts. {} without pairs."""
    pairs = seed_pairs(g, ref, key)
    if not pairs:
        return {}
    diffs = np.mean([d for _, _, d in pairs], axis=0)
    lo, hi = bootstrap_ci(diffs)
    if key == BEST:
        above = int(sum(r.kaggle_map > b["kaggle_map"] for r, b, _ in pairs))
    else:
        above = int(sum(d.mean() > 0 for _, _, d in pairs))
    out = {"n": len(pairs), "pairs": pairs, "kaggle": {"d": float(diffs.mean()), "lo": lo, "hi": hi, "above": above}}
    counts = _count_pairs(pairs, key)
    if counts is not None:
        out["miou"] = paired_mean_iou(counts)
    return out


def _columns(p: dict, prefix: str, miou_prefix: str) -> dict:
    """A paired() result as summary columns: {prefix}, {prefix}_lo, _hi (Kaggle) and {miou_prefix}... (mean IoU)."""
    out = {}
    for name, which in ((prefix, "kaggle"), (miou_prefix, "miou")):
        if which in p:
            out.update({name: p[which]["d"], name + "_lo": p[which]["lo"], name + "_hi": p[which]["hi"]})
    return out


def _last(g: pd.DataFrame, ref: pd.DataFrame, prefix: str, miou_prefix: str) -> dict:
    """The last epoch's paired differences ({prefix}_last, _last_lo, _last_hi and the mean IoU ones), where every pair
    has them: some runs predate the last-epoch scores, and a partial mean would pair other seeds than the best epoch's."""
    last = paired(g, ref, LAST)
    if not last or last["n"] < len(seed_pairs(g, ref)):
        return {}
    return _columns(last, prefix + "_last", miou_prefix + "_last")


def paired_vs(g: pd.DataFrame, ref: pd.DataFrame) -> dict:
    """Runs g paired by seed (same validation images) with the runs ref: d_ref (Kaggle) and d_ref_miou (mean IoU) with
    their bootstrap 95% intervals, seeds above (ref_seeds_above, ref_miou_seeds_above), best and last epoch."""
    p = paired(g, ref)
    if not p:
        return {}
    out = {"n_ref_pairs": p["n"], "ref_seeds_above": p["kaggle"]["above"], **_columns(p, "d_ref", "d_ref_miou")}
    if "miou" in p:
        out["ref_miou_seeds_above"] = p["miou"]["above"]
    return out | _last(g, ref, "d_ref", "d_ref_miou")


def _same(value, wanted: str) -> bool:
    """Whether a results.csv cell equals a --reference field's text (numbers by value, booleans as true/false)."""
    if isinstance(value, (bool, np.bool_)):
        return wanted.lower() in (("true", "1", "yes") if value else ("false", "0", "no"))
    if isinstance(value, (int, float, np.integer, np.floating)):
        try:
            return float(value) == float(wanted)
        except ValueError:
            return False
    return str(value) == wanted


def reference_config(df: pd.DataFrame, text: str) -> str:
    """--reference: a config's label, or run fields `key=value,...` (columns of results.csv) that pick exactly one
    student config; returns its config label (config_labels). UserError naming what matched when the fields pick none or several."""
    df = df.assign(config=config_labels(df))
    labels = list(dict.fromkeys(df.loc[df.kind == "student", "config"]))
    if text in labels:
        return text
    parts = [p.partition("=") for p in text.split(",")]
    if " " in text or not all(sep and k and v for k, sep, v in parts):
        raise UserError(f"--reference {text!r} is neither a config here nor fields KEY=VALUE,...; configs: {', '.join(map(repr, labels))}")
    unknown = [k for k, _, _ in parts if k not in df.columns]
    if unknown:
        raise UserError(
            f"--reference field {unknown[0]!r} is not a column of results.csv (e.g. model, arch, lam, temperature, scale, unlabelled, options)"
        )
    rows = df[df.kind == "student"]
    for k, _, v in parts:
        rows = rows[[_same(x, v) for x in rows[k]]]
    found = list(dict.fromkeys(rows["config"]))
    if len(found) != 1:
        what = f"{len(found)} configs ({', '.join(map(repr, found))}); add fields" if found else "no config"
        raise UserError(f"--reference {text} matches {what}")
    return found[0]


def config_labels(df: pd.DataFrame, budgets: bool = True) -> pd.Series:
    """Each run's configuration: its label, except where one label holds students of several teachers (a label names
    an ensemble, a black box and flip-averaged targets, not which single teacher): those runs are their recipe and soft
    target, "unet4 KD T=2 lam=0.9 s=T +unl <- unet16", so unet8's and unet16's students are not pooled as one. With
    `budgets`, where one configuration holds runs of several --epochs (sweeps of 15 and 45 epochs read together), each
    budget is its own: "unet4 baseline epochs=45" (experiments.epochs, which compares the budgets, leaves them out).
    Likewise where one holds runs trained on several Keras backends: "unet4 baseline backend=tensorflow"."""
    labels = df["label"] if "label" in df else df.apply(label, axis=1)
    if "teacher" in df and "recipe" in df:
        teacher = df.teacher.fillna("").astype(str)
        taught = (df.kind == "student") & (teacher != "")
        ambiguous = taught & teacher.where(taught).groupby(labels).transform("nunique").gt(1)
        if ambiguous.any():
            tta = df.teacher_tta.fillna(False).astype(bool) if "teacher_tta" in df else pd.Series(False, index=df.index)
            labels = labels.where(~ambiguous, df.recipe + " <- " + teacher + np.where(tta, " +tta", ""))
    if "backend" in df:
        backend = df.backend.fillna("").astype(str)
        several = backend.groupby(labels).transform("nunique").gt(1)
        labels = labels.where(~several, labels + " backend=" + backend)
    if budgets and "epochs" in df:
        epochs = pd.to_numeric(df.epochs, errors="coerce")
        several = epochs.groupby(labels).transform("nunique").gt(1)
        labels = labels.where(~several, labels + " epochs=" + epochs.astype("Int64").astype(str))
    return labels


def summarize(df: pd.DataFrame, reference: str = "") -> pd.DataFrame:
    """Per configuration: mean ± std over seeds; paired difference vs the baseline; gap closed; with `reference` (a
    config's label), also the paired difference vs that config (d_ref, its interval, seeds above it)."""
    df = df.copy()
    df["config"] = config_labels(df)
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
            same &= (df.precision == first["precision"]) if "precision" in df else True
            same &= (df.epochs == first["epochs"]) if "epochs" in df else True  # sweeps of several budgets: the same budget's
            base = df[(df.kind == "student") & (df.lam == 0) & same]
            if "backend" in base and (base.backend == first["backend"]).any():  # the baseline of its backend, where trained
                base = base[base.backend == first["backend"]]
            p = paired(g, base)
            if p:
                base_map = np.mean([b["kaggle_map"] for _, b, _ in p["pairs"]])
                # the gap to this configuration's own soft target (an ensemble's score, not a single teacher's)
                own = g["teacher_kaggle_map"].mean() if "teacher_kaggle_map" in g and g["teacher_kaggle_map"].notna().any() else teacher_map
                r.update(
                    n_pairs=p["n"],
                    **_columns(p, "d_kaggle", "d_miou"),
                    teacher_kaggle_map=own,
                    seeds_positive=p["kaggle"]["above"],
                    gap_closed=float((r["kaggle_map"] - base_map) / (own - base_map)) if own > base_map else np.nan,
                    **_last(g, base, "d_kaggle", "d_miou"),
                )
                r.update({"d_lo": r.pop("d_kaggle_lo"), "d_hi": r.pop("d_kaggle_hi")})  # the names of earlier versions
                if "miou" in p:
                    r["miou_seeds_positive"] = p["miou"]["above"]
        if reference and config != reference and first["kind"] == "student":
            ref = df[(df.config == reference) & (df.kind == "student")]
            r.update(paired_vs(g, ref))
            # the reference is this config's own baseline: the same pairs, printed once (in the baseline block)
            r["ref_is_baseline"] = "n_pairs" in r and set(ref.index) == set(base.index)
        if first["kind"] == "teacher" and "teacher_nll" in g:
            r.update(teacher_nll=g["teacher_nll"].mean(), teacher_ece=g["teacher_ece"].mean(), teacher_best_T=g["teacher_best_T"].mean())
        out.append(r)
    return pd.DataFrame(out)


def _ci(r: dict, key: str) -> str:
    return f"{r[key]:+.4f} [{r[key + '_lo']:+.4f},{r[key + '_hi']:+.4f}]" if r.get(key) == r.get(key) and key in r else ""


def _d(r: dict, key: str, lo: str, hi: str) -> str:
    return f"{r[key]:+.4f} [{r[lo]:+.4f},{r[hi]:+.4f}]" if r.get(key) == r.get(key) and key in r else ""


def _above(r: dict, key: str, n: str) -> str:
    return f"{int(r[key])}/{int(r[n])}" if r.get(key) == r.get(key) and key in r else ""


def format_summary(s: pd.DataFrame) -> str:
    """Per config: scores over seeds, then its paired differences vs the baseline of its model and, with a reference,
    vs the reference; "last" columns score the last epoch's models (no epoch picked on the validation images)."""
    lines = [f"{'config':50s} {'n':>2s} {'params':>9s} {'mean_iou':>15s} {'kaggle_map':>15s} {'last':>6s} {'gap':>5s}"]
    for r in s.to_dict("records"):
        mi = f"{r['mean_iou']:.4f}" + (f"±{r['mean_iou_std']:.4f}" if r["mean_iou_std"] == r["mean_iou_std"] else "")
        km = f"{r['kaggle_map']:.4f}" + (f"±{r['kaggle_map_std']:.4f}" if r["kaggle_map_std"] == r["kaggle_map_std"] else "")
        last = f"{r['kaggle_map_last']:.4f}" if r.get("kaggle_map_last") == r.get("kaggle_map_last") else ""
        gap = f"{r['gap_closed']:.0%}" if r.get("gap_closed") == r.get("gap_closed") and "gap_closed" in r else ""
        lines.append(f"{r['config']:50s} {r['n_seeds']:2d} {r['params']:9,d} {mi:>15s} {km:>15s} {last:>6s} {gap:>5s}")
    blocks = (
        ("vs the baseline of the same model", "d_miou", "d_kaggle", "d_lo", "d_hi", "miou_seeds_positive", "seeds_positive", "n_pairs"),
        ("vs the reference", "d_ref_miou", "d_ref", "d_ref_lo", "d_ref_hi", "ref_miou_seeds_above", "ref_seeds_above", "n_ref_pairs"),
    )
    for title, miou, kag, lo, hi, miou_above, above, n in blocks:
        rows = [r for r in s.to_dict("records") if r.get(kag) == r.get(kag) and kag in r]
        rows = [r for r in rows if not (kag == "d_ref" and r.get("ref_is_baseline") is True)]
        if not rows:
            continue
        lines += [
            "",
            f"paired by seed {title} (bootstrap 95% CI over images; seeds above; last = last epoch's models):",
            f"{'config':50s} {'d mean_iou':>26s} {'above':>5s} {'d kaggle_map':>26s} {'above':>5s} {'d mean_iou last':>26s} "
            f"{'d kaggle_map last':>26s}",
        ]
        for r in rows:
            lines.append(
                f"{r['config']:50s} {_ci(r, miou):>26s} {_above(r, miou_above, n):>5s} {_d(r, kag, lo, hi):>26s} "
                f"{_above(r, above, n):>5s} {_ci(r, miou + '_last'):>26s} {_ci(r, kag + '_last'):>26s}"
            )
    if any(
        r.get("d_kaggle") == r.get("d_kaggle") and "d_kaggle" in r and not r.get("d_miou") == r.get("d_miou") for r in s.to_dict("records")
    ):
        lines.append("(d mean_iou blank: runs without per-image counts; python -m experiments.rescore SWEEP_DIR adds them)")
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


def format_unreadable(bad: list[tuple[str, str]]) -> str:
    """The runs that could not be read, one line each (printed by every command that reads run dirs)."""
    return "".join(f"unreadable run {run}: {why}\n" for run, why in bad)


def write_tables(root, reference: str = "", out=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """results.csv, summary.csv, summary.txt of the runs under root (a dir, or a list of dirs read together) in `out`
    (default: root, a single dir); `reference`: a label or fields (reference_config)."""
    roots = [root] if isinstance(root, (str, Path)) else list(root)
    df, bad = load_sweeps(*roots)
    if df.empty:
        return df, df
    reference = reference_config(df, reference) if reference else ""
    s = summarize(df, reference)
    out = Path(out if out is not None else roots[0])
    out.mkdir(parents=True, exist_ok=True)
    io.write_text(out / "results.csv", df.to_csv(index=False))
    io.write_text(out / "summary.csv", s.to_csv(index=False))
    io.write_text(out / "summary.txt", format_summary(s) + "\n" + format_unreadable(bad))
    return df, s


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "sweep_dirs",
        nargs="+",
        metavar="SWEEP_DIR",
        help="a folder of run dirs (a sweep's --out, e.g. runs/cpu); several are read as one (students of two presets' teachers)",
    )
    ap.add_argument("--out", default="", help="where the tables go (default: the SWEEP_DIR; needed with several)")
    ap.add_argument(
        "--reference",
        default="",
        help="also pair every config with this one: run fields KEY=VALUE,... (results.csv columns, e.g. model=unet4,lam=0.9,"
        'unlabelled=true) or a config\'s label ("unet4 KD T=2 lam=0.9 s=T +unl")',
    )
    args = ap.parse_args(argv)
    for d in args.sweep_dirs:
        if not Path(d).is_dir():
            raise UserError(f"{d} is not a folder of run dirs")
    if len(args.sweep_dirs) > 1 and not args.out:
        raise UserError("several SWEEP_DIRs: say where the tables go with --out DIR (e.g. runs/compare)")
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise UserError(f"--out {args.out} is a file, not a folder")
    bad = [b for d in dict.fromkeys(args.sweep_dirs) for b in unreadable_runs(d)]
    if bad:
        print(format_unreadable(bad), end="", file=sys.stderr, flush=True)
    df, s = write_tables(args.sweep_dirs, args.reference, args.out or None)
    if df.empty:
        where = ", ".join(args.sweep_dirs)
        raise UserError(f"no finished runs (metrics.json) under {where}" + (f" that can be read ({len(bad)} cannot)" if bad else ""))
    print(format_summary(s))
    return 1 if bad else 0


if __name__ == "__main__":
    run(main)
