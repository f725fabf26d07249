"""How good a teacher is its probability map? Calibration on the validation split.

    python -m teacher.calibration --teacher runs/cpu/teacher/teacher.keras --data cache/tgs.npz
    # prints one JSON object: {"n_images": 321, "nll": 0.1.., "brier": 0.0.., "ece": 0.0.., "best_temperature": 1.3, "nll_at_best": ...}

The figures are metrics.calibration.calibration: pixel NLL, Brier score and ECE of sigmoid(logits)
at T = 1 on the original 101x101 pixels, and the NLL-optimal temperature.
"""

from __future__ import annotations

from common.backend import choose_backend

choose_backend()

import argparse
import json
from pathlib import Path

from common.cli import UserError, run
from common.config import HelpFormatter
from data.pipeline import prep_images
from data.split import load_split
from data.tgs import load_data
from distill.teachers import ensemble_logits, load_teacher
from metrics.calibration import calibration
from models.files import model_spec
from pi.tgs_common import postprocess


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--teacher", required=True, help="trained teacher .keras (its logits are scored)")
    ap.add_argument("--data", required=True, help="Kaggle TGS folder or .npz cache with the labels")
    ap.add_argument("--split", default="", help="split.json (default: next to the teacher)")
    args = ap.parse_args(argv)
    model = load_teacher(args.teacher)
    split_path = Path(args.split) if args.split else Path(args.teacher).parent / "split.json"
    if not split_path.exists():
        raise UserError(f"no split file {split_path}; pass --split")
    val = load_data(args.data).subset(load_split(split_path)["val"])
    spec = model_spec(args.teacher, model)
    logits = postprocess(ensemble_logits([model], prep_images(val.images, spec)), spec)
    print(json.dumps({"n_images": len(val), **calibration(logits, val.masks)}))
    return 0


if __name__ == "__main__":
    run(main)
