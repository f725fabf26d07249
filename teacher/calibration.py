"""How good a teacher is its probability map? Calibration on the validation split.

    python -m teacher.calibration --teacher runs/cpu/teacher/teacher.keras --data cache/tgs.npz
    # prints one JSON object: {"n_images": 321, "nll": 0.1.., "brier": 0.0.., "ece": 0.0.., "best_temperature": 1.3, "nll_at_best": ...}

Pixel NLL, Brier score and expected calibration error (15 equal-width bins) of sigmoid(logits) at
T = 1 on the original 101x101 pixels, and the temperature that minimises the validation NLL of
sigmoid(logits / T) (a sharper, over-confident teacher has a best T > 1). The same figures go into
the teacher run's metrics.json ("calibration").
"""

from __future__ import annotations

from common.backend import choose_backend

choose_backend()

import argparse  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from common.cli import UserError, run  # noqa: E402


def _nll(z, y, T=1.0):
    z = z / T
    return float(np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))))


def calibration(logits: np.ndarray, masks: np.ndarray, bins: int = 15) -> dict:
    """Figures for logits and boolean masks of the same shape (original pixels only)."""
    z, y = logits.astype(np.float64).ravel(), masks.astype(np.float64).ravel()
    p = 1 / (1 + np.exp(-z))
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(p, edges) - 1, 0, bins - 1)
    counts = np.bincount(idx, minlength=bins)
    conf = np.bincount(idx, p, bins) / np.maximum(counts, 1)
    acc = np.bincount(idx, y, bins) / np.maximum(counts, 1)
    ece = float(np.sum(counts / len(p) * np.abs(conf - acc)))
    grid = np.exp(np.linspace(np.log(0.25), np.log(8), 57))
    nlls = [_nll(z, y, t) for t in grid]
    k = int(np.argmin(nlls))
    lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
    for _ in range(30):  # golden-section refinement around the grid minimum
        a, b = lo + 0.382 * (hi - lo), lo + 0.618 * (hi - lo)
        lo, hi = (lo, b) if _nll(z, y, a) < _nll(z, y, b) else (a, hi)
    best = (lo + hi) / 2
    return {"n_pixels": int(len(p)), "nll": round(_nll(z, y), 5), "brier": round(float(np.mean((p - y) ** 2)), 5),
            "ece": round(ece, 5), "best_temperature": round(float(best), 3), "nll_at_best": round(_nll(z, y, best), 5)}


def teacher_val_logits(model, vx, spec) -> np.ndarray:
    from common.train import predict
    from common.unet import logits_model
    from data.pipeline import crop_probs

    return crop_probs(predict(logits_model(model), vx), spec)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="", help="split.json (default: next to the teacher)")
    args = ap.parse_args(argv)
    from data.pipeline import make_spec, prep_images
    from data.split import load_split
    from data.tgs import load_data
    from teacher.soft import load_teacher

    model = load_teacher(args.teacher)
    split_path = Path(args.split) if args.split else Path(args.teacher).parent / "split.json"
    if not split_path.exists():
        raise UserError(f"no split file {split_path}; pass --split")
    val = load_data(args.data).subset(load_split(split_path)["val"])
    side = Path(args.teacher).with_name(Path(args.teacher).name + ".json")
    spec = json.loads(side.read_text()) if side.exists() else make_spec(int(model.inputs[0].shape[1]))
    out = {"n_images": len(val), **calibration(teacher_val_logits(model, prep_images(val.images, spec), spec), val.masks)}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    run(main)
