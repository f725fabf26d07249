"""Add per-image pixel counts to finished runs that lack them, from their saved models (no retraining).

    python -m experiments.rescore runs/cpu [--data cache/tgs.npz]
    # prints one line a run: rescored unet4_baseline_s0 (student.keras, 320 images): mean_iou 0.8370 = stored 0.8370
    # and at the end: rescored 6 runs, 0 already had counts, 0 refused

Runs made before metrics.json kept `val_counts_per_image` (tp, fp, fn, tn of each validation image on the 101x101
pixels) cannot take part in experiments.results' paired mean-IoU intervals. This predicts the run's validation
images (its split.json) with its saved best-epoch model (student.keras or teacher.keras), through the same
preprocessing, threshold and scoring as training (training.scoring), checks that the model gives the
stored scores (pooled mean IoU within 1e-3 and per-image Kaggle scores equal within 0.05 on all but 1% of the images:
otherwise the model file is not the one the metrics came from, and the run is refused), and adds the counts to
metrics.json (written atomically, with `rescored` saying from which file). The last epoch's model is not saved, so
`val_last_counts_per_image` cannot be made for these runs: their last-epoch mean-IoU difference stays blank.
`--data`: where the labelled images are when a run's config.json names a path that is not there (another machine).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from common import io
from common.cli import UserError, run

MEAN_IOU_TOL, KAGGLE_TOL, KAGGLE_SHARE = 1e-3, 0.05, 0.01


def _model_file(run_dir: Path) -> Path | None:
    for name in ("student.keras", "teacher.keras"):
        if (run_dir / name).is_file():
            return run_dir / name
    return None


def rescore_run(run_dir: Path, data_override: str = "", cache: dict | None = None) -> str:
    """Add `val_counts_per_image` to one run's metrics.json; returns the line to print. UserError when refused."""
    from data.split import load_split
    from data.tgs import load_data
    from training.scoring import evaluate_probs, keras_probs, per_image_scores

    met_path = run_dir / "metrics.json"
    met = json.loads(met_path.read_text())
    model_path = _model_file(run_dir)
    if model_path is None:
        raise UserError(f"{run_dir}: no student.keras or teacher.keras to re-score from")
    cfg = json.loads((run_dir / "config.json").read_text())
    data_path = data_override or cfg.get("data", "")
    if not data_path or not Path(data_path).exists():
        raise UserError(f"{run_dir}: its data {data_path!r} is not here; pass --data (the .npz or Kaggle folder it trained on)")
    cache = {} if cache is None else cache
    if data_path not in cache:
        cache[data_path] = load_data(data_path, progress=False)
    val = cache[data_path].subset(load_split(run_dir / "split.json")["val"])
    if met.get("val_ids") is not None and list(met["val_ids"]) != list(val.ids):
        raise UserError(f"{run_dir}: split.json's validation ids are not the ones metrics.json was scored on")
    probs, threshold = keras_probs(model_path, val.images)
    new = per_image_scores(probs, val.masks, threshold, "val")
    got = evaluate_probs(probs, val.masks, threshold)["mean_iou"]
    stored = met["val"]["mean_iou"]
    if abs(got - stored) > MEAN_IOU_TOL:
        raise UserError(
            f"{run_dir}: {model_path.name} scores mean_iou {got:.4f}, metrics.json says {stored:.4f}: not the model of these metrics"
        )
    if "val_kaggle_per_image" in met:
        off = np.abs(np.asarray(new["val_kaggle_per_image"]) - np.asarray(met["val_kaggle_per_image"])) > KAGGLE_TOL
        if off.mean() > KAGGLE_SHARE:
            raise UserError(f"{run_dir}: {model_path.name} gives other per-image Kaggle scores on {int(off.sum())} of {len(off)} images")
    met["val_counts_per_image"] = new["val_counts_per_image"]
    met["rescored"] = {"from": model_path.name, "what": "val_counts_per_image (best-epoch model)"}
    io.write_json(met_path, met)
    return f"rescored {run_dir.name} ({model_path.name}, {len(val)} images): mean_iou {got:.4f} = stored {stored:.4f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep_dir", metavar="SWEEP_DIR", help="a folder of run dirs (every finished run below it)")
    ap.add_argument("--data", default="", help="the labelled data (.npz or Kaggle folder) when a run's own data path is not here")
    args = ap.parse_args(argv)
    root = Path(args.sweep_dir)
    if not root.is_dir():
        raise UserError(f"{root} is not a folder of run dirs")
    from common.backend import choose_backend

    choose_backend()
    from experiments.results import format_unreadable, read_metrics, unreadable_runs

    bad = unreadable_runs(root)
    print(format_unreadable(bad), end="")
    done = had = 0
    refused = []
    cache: dict = {}
    for m in sorted(root.glob("**/metrics.json")):
        run_dir = m.parent
        if str(run_dir) in dict(bad):
            continue
        if "val_counts_per_image" in read_metrics(run_dir):
            had += 1
            continue
        try:
            print(rescore_run(run_dir, args.data, cache), flush=True)
            done += 1
        except UserError as e:
            refused.append(str(e))
            print(f"refused: {e}", flush=True)
    print(f"rescored {done} runs, {had} already had counts, {len(refused)} refused, {len(bad)} unreadable")
    return 1 if refused or bad else 0


if __name__ == "__main__":
    run(main)
