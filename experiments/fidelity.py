"""Teacher or capacity: how closely each student copies its teacher, on its training images and on the validation images.

    python -m experiments.fidelity runs/cpu_e45/unet4_from_unet8x2_T2_l0.9_sT_unl_lov9_s0 [RUN_DIR ...] [--csv OUT.csv]
    # one row per run and split (train, val), all on the original 101x101 pixels at the run's threshold:
    #   student_map / student_miou    the student against the true masks (Kaggle mAP, mean IoU)
    #   teacher_map / teacher_miou    its soft target against them (the teacher cache's logits; an ensemble's mean)
    #   agree_map / agree_miou        the student against the teacher's masks: 1 = it draws the teacher's masks
    #   kl                            KL(teacher || student) per pixel at T = 1, nats: how far its probabilities are

A student that copies its teacher on the images it trained on but less on the validation images is limited by what
it generalises from them, not by its size; one that cannot copy its teacher even on its training images lacks the
capacity (or the schedule) to follow it, and a better teacher gives it more it cannot copy (fidelity against
generalisation: Stanton et al., "Does Knowledge Distillation Really Work?", NeurIPS 2021). Reads each run's
config.json (data, teacher cache, flip-averaged targets), split.json and student.keras; the teacher's output is the
cache the run trained from, or the one --teacher-cache names (which baselines need: how much of a teacher does a
student copy without being taught?).
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
from common.config import HelpFormatter
from data.split import load_split
from data.tgs import load_data
from distill.cache import TeacherCache
from pi.tgs_common import postprocess
from training.scoring import evaluate_probs, keras_probs

COLUMNS = ("run", "split", "n_images", "student_map", "student_miou", "teacher_map", "teacher_miou", "agree_map", "agree_miou", "kl")


def kl_per_pixel(t: np.ndarray, s: np.ndarray, eps: float = 1e-6) -> float:
    """Mean over pixels of KL(Bernoulli(t) || Bernoulli(s)) in nats: 0 when the student's probabilities are the teacher's."""
    t = np.clip(np.asarray(t, np.float64), eps, 1 - eps)
    s = np.clip(np.asarray(s, np.float64), eps, 1 - eps)
    return float(np.mean(t * np.log(t / s) + (1 - t) * np.log((1 - t) / (1 - s))))


def _config(run_dir: Path, teacher_cache: str = "") -> dict:
    """The run's config, its teacher cache set: the run's own (a distilled run's soft target) unless `teacher_cache`
    names one, which gives the baselines a teacher to be compared with."""
    for f in ("config.json", "split.json", "student.keras"):
        if not (run_dir / f).is_file():
            raise UserError(f"{run_dir} is not a finished student run (no {f})")
    cfg = json.loads((run_dir / "config.json").read_text())
    own = cfg.get("teacher_cache") if cfg.get("lam") else ""
    if not (teacher_cache or own):
        raise UserError(f"{run_dir} read no teacher cache (a baseline, or the teacher in the graph): name one with --teacher-cache")
    return {**cfg, "teacher_cache": teacher_cache or own, "teacher_tta": bool(cfg.get("teacher_tta")) and not teacher_cache}


def teacher_probs(cfg: dict, ids: list, images=None) -> np.ndarray:
    """The soft target of the run, (N, 101, 101) probabilities: the cache's view of each image in its own orientation
    (flip-averaged when the run used --teacher-tta), as the run's validation scored it. With the images, a cache made
    from other pixels under these ids is refused (TeacherCache.take)."""
    cache = TeacherCache(cfg["teacher_cache"], tta=bool(cfg.get("teacher_tta")))
    logits = postprocess(cache.take(ids, images)[:, 0, ..., 0].astype(np.float32), cache.meta["spec"])
    return 1 / (1 + np.exp(-logits))


def run_fidelity(run_dir, teacher_cache: str = "") -> list[dict]:
    """One row (COLUMNS) per split of one run, against its own soft target or the cache `teacher_cache`."""
    run_dir = Path(run_dir)
    cfg = _config(run_dir, teacher_cache)
    split = load_split(run_dir / "split.json")
    both = load_data(cfg["data"], progress=False).subset(split["train"] + split["val"])
    # the student loaded and the cache read once, over both splits
    student_all, threshold = keras_probs(run_dir / "student.keras", both.images)
    teacher_all = teacher_probs(cfg, both.ids, both.images)
    rows, n_train = [], len(split["train"])
    for part, sel in (("train", slice(0, n_train)), ("val", slice(n_train, None))):
        student, teacher, masks = student_all[sel], teacher_all[sel], both.masks[sel]
        s, t = evaluate_probs(student, masks, threshold), evaluate_probs(teacher, masks, threshold)
        a = evaluate_probs(student, teacher > threshold, threshold)
        rows.append(
            {
                "run": run_dir.name,
                "split": part,
                "n_images": len(masks),
                "student_map": s["kaggle_map"],
                "student_miou": s["mean_iou"],
                "teacher_map": t["kaggle_map"],
                "teacher_miou": t["mean_iou"],
                "agree_map": a["kaggle_map"],
                "agree_miou": a["mean_iou"],
                "kl": kl_per_pixel(teacher, student),
            }
        )
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("runs", nargs="+", metavar="RUN_DIR", help="distilled student run dirs that trained from a teacher cache")
    ap.add_argument(
        "--teacher-cache",
        default="",
        help="compare every run with this teacher cache (python -m teacher.cache) instead of its own soft target; "
        "baselines need it (e.g. runs/cpu/teacher/cache: how much of the teacher a student copies without being taught)",
    )
    ap.add_argument("--csv", default="", help="also write the table here (refused if it exists, unless --overwrite)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --csv")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    if args.csv and Path(args.csv).exists() and not args.overwrite:
        raise UserError(f"{args.csv} exists; pass --overwrite to replace it")
    for r in args.runs:
        _config(Path(r), args.teacher_cache)  # every run checked before any is scored
    rows = []
    print(f"{'run':48s} {'split':5s} {'n':>5s} {'student':>15s} {'teacher':>15s} {'agreement':>15s} {'KL':>8s}")
    print(f"{'':48s} {'':5s} {'':>5s} {'mAP / mIoU':>15s} {'mAP / mIoU':>15s} {'mAP / mIoU':>15s} {'nats':>8s}")
    for r in args.runs:
        for row in run_fidelity(r, args.teacher_cache):
            rows.append(row)
            print(
                f"{row['run']:48s} {row['split']:5s} {row['n_images']:5d} {row['student_map']:.4f}/{row['student_miou']:.4f}"
                f" {row['teacher_map']:.4f}/{row['teacher_miou']:.4f} {row['agree_map']:.4f}/{row['agree_miou']:.4f} {row['kl']:8.4f}",
                flush=True,
            )
    if args.csv:
        io.write_text(Path(args.csv), pd.DataFrame(rows, columns=COLUMNS).to_csv(index=False))
        print(f"wrote {args.csv}")
    return 0


if __name__ == "__main__":
    run(main)
