r"""Score a model (.keras or .tflite) or a folder of predicted masks against TGS labels.

    python evaluate.py --model runs/unet4_baseline_s0/student.keras --data ../shared/data/tgs-salt
    python evaluate.py --model exports/unet4/student_int8.tflite --data ../shared/data/tgs-salt --split runs/unet4_baseline_s0/split.json
    python evaluate.py --pred-masks OUT_DIR --data ../shared/data/tgs-salt --split all
    python evaluate.py --model runs/cpu/teacher/teacher.keras --data cache/tgs.npz --split all \
        --save-probabilities runs/cpu/teacher_blackbox/probabilities   # + <id>.png 16-bit probability maps
    python evaluate.py --model exports/unet4/student_int8.tflite --data held_out.npz --split all --per-image counts.csv
    # + one CSV row per image: id,tp,fp,fn,tn,kaggle (pixel counts on the 101x101 pixels, the Kaggle score)
    # prints one JSON object, e.g.
    # {"n_images": 320, "mean_iou": 0.87.., "salt_iou": 0.78.., "kaggle_map": 0.73.., "split": "val", "model": "..."}

--split val (default for a model): the validation ids of the split.json next to the model (or next
to the .tflite's source model); all: every labelled image in --data; or a split.json / text file of
ids. Predictions are cropped (or resized) back to 101x101 before scoring; threshold 0.5 unless the
model's sidecar says otherwise. Scored as training scores its runs (training.scoring); the metrics: see
metrics/segmentation.py. --save-probabilities also writes each
scored image's 101x101 probability map as a 16-bit PNG (p * 65535): what a black-box teacher hands
over (`python -m teacher.cache --from-probabilities DIR`); the folder appears complete or not at all.
--per-image writes the per-image counts that training keeps in metrics.json (`val_counts_per_image`), for any model
and data: two models' files on the same images pair by id, so their mean-IoU difference can be bootstrapped as
experiments.results does (experiments.results.paired_mean_iou on the two count arrays).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from common.cli import UserError, run
from common.config import HelpFormatter
from metrics.segmentation import score_masks
from training.scoring import file_probs, per_image_csv


def select(data, split: str, model_path: Path | None):
    from data.split import load_split, read_ids_file

    if split == "all":
        return data, "all"
    if split == "val":
        candidates = []
        if model_path is not None:
            candidates.append(model_path.parent / "split.json")
            from pi.sidecar import SidecarError, read_sidecar

            try:
                side = read_sidecar(model_path)
            except SidecarError as e:
                raise UserError(str(e)) from None
            if side is not None and isinstance(side.get("source"), str):
                candidates.append(Path(side["source"]).parent / "split.json")
        for c in candidates:
            if c.exists():
                return data.subset(load_split(c)["val"]), "val"
        raise UserError(f"no split.json next to {model_path}; pass --split all or --split IDS_FILE")
    return data.subset(read_ids_file(split)), split


def read_pred_masks(folder: Path, ids) -> np.ndarray:
    from data.tgs import read_mask

    if not folder.is_dir():
        raise UserError(f"prediction folder {folder} does not exist")
    out = np.empty((len(ids), 101, 101), bool)
    for k, i in enumerate(ids):
        p = folder / f"{i}.png"
        if not p.exists():
            raise UserError(f"no predicted mask {p} for image {i}")
        out[k] = read_mask(p)
    return out


def check_probabilities_out(folder: Path, overwrite: bool) -> None:
    """Refuse a --save-probabilities that is a file, a non-empty folder without --overwrite, or with it a folder that
    holds anything but .png maps: the folder is replaced as a whole."""
    from common import io

    if folder.exists() and not folder.is_dir():
        raise UserError(f"--save-probabilities {folder} exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise UserError(f"--save-probabilities folder {folder} is not empty; pass --overwrite to replace it")
    io.check_replaceable(
        folder, lambda d: all(f.is_file() and f.suffix == ".png" for f in d.iterdir()), "folder of .png maps", "--save-probabilities"
    )


def save_probabilities(folder: Path, ids, probs: np.ndarray, overwrite: bool) -> None:
    """<id>.png 16-bit maps, written into a temporary folder that replaces `folder` when complete (common.io.atomic_dir:
    a kill leaves the old maps or the new ones)."""
    from PIL import Image

    from common import io

    check_probabilities_out(folder, overwrite)
    with io.atomic_dir(folder) as tmp:
        for i, p in zip(ids, probs):
            Image.fromarray(np.round(np.clip(p, 0, 1) * 65535).astype(np.uint16)).save(tmp / f"{i}.png")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", help=".keras or .tflite model")
    what.add_argument("--pred-masks", help="folder of <id>.png masks (any non-zero = salt)")
    ap.add_argument("--data", required=True, help="Kaggle TGS folder or .npz cache with the labels")
    ap.add_argument("--split", default=None, help="val | all | split.json | ids.txt (default: val for a model, all for masks)")
    ap.add_argument("--threads", type=int, default=2, help="TFLite interpreter threads")
    ap.add_argument("--out", default="", help="also write the JSON to this file")
    ap.add_argument("--save-probabilities", default="", help="with --model: write <id>.png 16-bit probability maps here")
    ap.add_argument("--per-image", default="", help="also write one CSV row per image here: id,tp,fp,fn,tn,kaggle")
    ap.add_argument(
        "--overwrite", action="store_true", help="replace a non-empty --save-probabilities folder or an existing --per-image file"
    )
    args = ap.parse_args(argv)
    if args.save_probabilities and not args.model:
        raise UserError("--save-probabilities needs --model")
    if args.save_probabilities:
        check_probabilities_out(Path(args.save_probabilities), args.overwrite)  # before the model runs

    from data.tgs import load_data

    model_path = Path(args.model) if args.model else None
    if model_path is not None:
        if not model_path.exists():
            raise UserError(f"model file {model_path} does not exist")
        if model_path.suffix not in (".keras", ".tflite"):
            raise UserError(f"model file {model_path} must be .keras or .tflite")
    data = load_data(args.data, progress=sys.stderr.isatty())
    if data.masks is None:
        raise UserError(f"{args.data} holds no labels")
    subset, split_name = select(data, args.split or ("val" if model_path else "all"), model_path)
    if model_path is None:
        pred = read_pred_masks(Path(args.pred_masks), subset.ids)
        source = {"pred_masks": args.pred_masks}
    else:
        probs, threshold = file_probs(model_path, subset.images, args.threads)
        pred = probs > threshold
        if args.save_probabilities:
            save_probabilities(Path(args.save_probabilities), subset.ids, probs, args.overwrite)
        source = {"model": str(model_path), "threshold": threshold}
    result = {**score_masks(pred, subset.masks), "split": split_name, **source}
    if args.per_image:
        from common import io

        if Path(args.per_image).exists() and not args.overwrite:
            raise UserError(f"--per-image {args.per_image} exists; pass --overwrite to replace it")
        io.write_text(args.per_image, per_image_csv(subset.ids, pred, subset.masks))
        result["per_image"] = args.per_image
    text = json.dumps(result)
    if args.out:
        from common import io

        io.write_text(args.out, text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    run(main)
