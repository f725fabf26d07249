"""How far is a teacher from flip-equivariant? The cost of the black-box cache's "mirrored map".

    python -m benchmarks.flip_equivariance --cache runs/cpu/teacher/cache --split runs/cpu/teacher/split.json --data cache/tgs.npz
    # prints one JSON object: per view pair, on the original 101x101 pixels of the validation images:
    # {"n_images": 321, "mean_abs_prob_diff": 0.0.., "label_disagreement": 0.00.., "soft_kl_T2": 0.00..,
    #  "kaggle_map_view0": 0.7.., "kaggle_map_view1": 0.7.., "kaggle_map_flip_tta": 0.7..}

A black-box teacher gives one probability map per image, so `teacher.cache --from-probabilities`
uses the mirrored map as the teacher's output on the flipped image (it assumes the teacher is
flip-equivariant). A cache made from a real teacher holds both: view 0 = teacher(image), view 1 =
teacher(flipped image). This compares view 1 with the mirrored view 0: mean |p1 - p0_mirrored|,
the share of pixels whose 0.5-thresholded labels differ, and the mean KL divergence between the
two soft targets at T = 2 (the error the mirrored map puts into the soft term per pixel). Needs
TensorFlow/Keras only to import the project's loaders; it runs no model.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from common.cli import UserError, run
from common.config import HelpFormatter
from data.pipeline import crop_probs
from data.split import load_split
from data.tgs import load_data
from distill.cache import TeacherCache
from metrics.segmentation import score_masks


def _kl(p, q, eps=1e-7):
    p, q = np.clip(p, eps, 1 - eps), np.clip(q, eps, 1 - eps)
    return p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))


def compare_views(logits: np.ndarray, masks: np.ndarray | None, spec: dict, temperature: float = 2.0) -> dict:
    """logits (N, 2, S, S[, 1]) in the cache's layout; masks (N, 101, 101) bool or None."""
    z = np.asarray(logits, np.float32)
    z = z[..., 0] if z.ndim == 5 else z
    z0 = crop_probs(z[:, 0, ..., None], spec)  # the image's own frame
    z1 = crop_probs(z[:, 1, :, ::-1, None], spec)  # teacher(flipped image), flipped back into the image's frame
    p0, p1 = 1 / (1 + np.exp(-z0)), 1 / (1 + np.exp(-z1))
    s0, s1 = 1 / (1 + np.exp(-z0 / temperature)), 1 / (1 + np.exp(-z1 / temperature))
    out = {
        "n_images": int(len(z)),
        "mean_abs_prob_diff": round(float(np.abs(p1 - p0).mean()), 5),
        "label_disagreement": round(float(((p1 > 0.5) != (p0 > 0.5)).mean()), 5),
        f"soft_kl_T{temperature:g}": round(float(_kl(s1, s0).mean()), 6),
    }
    if masks is not None:
        out.update(
            {
                "kaggle_map_view0": round(score_masks(p0 > 0.5, masks)["kaggle_map"], 4),
                "kaggle_map_view1": round(score_masks(p1 > 0.5, masks)["kaggle_map"], 4),
                "kaggle_map_flip_tta": round(score_masks((p0 + p1) / 2 > 0.5, masks)["kaggle_map"], 4),
            }
        )
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--cache", required=True, help="a teacher cache made from a model (teacher.cache --teacher ...)")
    ap.add_argument("--data", required=True, help="the labelled data (folder or .npz)")
    ap.add_argument("--split", required=True, help="split.json: the validation images are compared")
    ap.add_argument("--temperature", type=float, default=2.0, help="T of the two soft targets whose KL divergence is reported")
    args = ap.parse_args(argv)
    cache = TeacherCache(args.cache)
    if not cache.meta["teachers"]:
        raise UserError(f"{args.cache} holds black-box probabilities: its view 1 is already the mirrored map, nothing to compare")
    val = load_data(args.data, progress=False).subset(load_split(Path(args.split))["val"])
    print(json.dumps(compare_views(cache.take(val.ids), val.masks, cache.meta["spec"], args.temperature)))
    return 0


if __name__ == "__main__":
    run(main)
