"""How good is a probability map as a soft target? Calibration on the original pixels (CLI: teacher.calibration).

Pixel NLL, Brier score and expected calibration error (15 equal-width bins) of sigmoid(logits) at
T = 1 on the original 101x101 pixels, and the temperature that minimises the validation NLL of
sigmoid(logits / T) (a sharper, over-confident teacher has a best T > 1). The same figures go into
the teacher run's metrics.json ("calibration").
"""

from __future__ import annotations

import numpy as np


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
    return {
        "n_pixels": int(len(p)),
        "nll": round(_nll(z, y), 5),
        "brier": round(float(np.mean((p - y) ** 2)), 5),
        "ece": round(ece, 5),
        "best_temperature": round(float(best), 3),
        "nll_at_best": round(_nll(z, y, best), 5),
    }
