"""How good a soft target is on the validation split: its scores and its calibration.

    python -m teacher.calibration --teacher runs/cpu/teacher/teacher.keras --data cache/tgs.npz
    # prints one JSON object: {"n_images": 321, "kaggle_map": 0.73.., "mean_iou": 0.87.., "salt_iou": 0.80..,
    #   "nll": 0.1.., "brier": 0.0.., "ece": 0.0.., "best_temperature": 0.9.., "nll_at_best": ...}
    python -m teacher.calibration --teacher runs/cpu_t16/teacher/teacher.keras runs/cpu_tres8/teacher/teacher.keras --tta --data cache/tgs.npz
    python -m teacher.calibration --cache runs/cpu_t16res8/teacher_ensemble2/cache --tta --data cache/tgs.npz \
        --split runs/cpu_t16/teacher/split.json     # the same soft target, read from the ensemble's cache

Several --teacher files are scored as their ensemble (mean logits, as teacher.cache averages them); --cache scores a
cache's logits (the soft target a student with --teacher-cache reads); --tta averages each image's logits with
those of its flip (--teacher-tta). The scores are training.scoring's (threshold 0.5, the original 101x101 pixels);
the calibration figures are metrics.calibration.calibration: pixel NLL, Brier score and ECE of sigmoid(logits) at
T = 1, and the NLL-optimal temperature. --split: the split.json whose validation images are scored (default: the one
next to the first --teacher; a cache needs it named).
"""

from __future__ import annotations

from common.backend import choose_backend

choose_backend()

import argparse
import json
from pathlib import Path

import numpy as np

from common.cli import UserError, run
from common.config import HelpFormatter
from data.pipeline import prep_images
from data.split import load_split
from data.tgs import load_data
from distill.cache import TeacherCache, flip_average
from distill.teachers import ensemble_logits, load_teacher
from metrics.calibration import calibration
from metrics.segmentation import score_masks
from models.files import model_spec
from models.registry import logits_model
from pi.tgs_common import postprocess
from teacher.cache import teacher_views


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--teacher", action="extend", nargs="+", help="trained teacher .keras (several: their mean logits)")
    src.add_argument("--cache", help="a teacher cache (python -m teacher.cache): the soft target it holds")
    ap.add_argument("--tta", action="store_true", help="average each image's logits with its flip's (--teacher-tta)")
    ap.add_argument("--data", required=True, help="Kaggle TGS folder or .npz cache with the labels")
    ap.add_argument("--split", default="", help="split.json (default: next to the first --teacher)")
    args = ap.parse_args(argv)
    if args.split:
        split_path = Path(args.split)
    elif args.teacher:
        split_path = Path(args.teacher[0]).parent / "split.json"
    else:
        raise UserError("--cache needs --split (the split.json of the run whose validation images to score)")
    if not split_path.exists():
        raise UserError(f"no split file {split_path}; pass --split")
    val = load_data(args.data).subset(load_split(split_path)["val"])
    if args.cache:
        cache = TeacherCache(args.cache, tta=args.tta)
        spec = cache.meta["spec"]
        logits = cache.take(val.ids, val.images)[:, 0, ..., 0].astype(np.float32)
    else:
        models = [load_teacher(t) for t in args.teacher]
        spec = model_spec(args.teacher[0], models[0])
        x = prep_images(val.images, spec)
        # with --tta both views, flip-averaged as a cache's are (teacher.cache.teacher_views, distill.cache.flip_average)
        logits = flip_average(teacher_views([logits_model(m) for m in models], x, None))[:, 0] if args.tta else ensemble_logits(models, x)
    logits = postprocess(logits, spec)
    scores = score_masks(1 / (1 + np.exp(-logits)) > float(spec["threshold"]), val.masks)
    print(json.dumps({**scores, **calibration(logits, val.masks)}))
    return 0


if __name__ == "__main__":
    run(main)
