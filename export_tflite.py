"""Export a trained model of the project (student or teacher) to TFLite and measure parity.

    python export_tflite.py --model runs/unet4_from_unet16_T2_l0.9_sT_s0/student.keras \
        --data ../shared/data/tgs-salt --out exports/unet4 --quant fp32,fp16,int8
    # prints one row per format:
    #   format     size_kb  mean_iou  kaggle_map  d_mean_iou  d_kaggle_map  max_abs_diff
    #   keras        ...
    #   fp32         512.3    0.8...     0.7...     +0.0000      +0.0000       2.4e-07
    #   ...
    # and writes OUT/<name>_<format>.tflite, a sidecar OUT/<name>_<format>.tflite.json (the
    # preprocessing the Pi must apply, and the file's size_bytes and sha256) and OUT/export.json (the table).

Formats: fp32; fp16 (float16 weights); int8 (int8 weights and activations, calibrated on
`--calib` training images preprocessed exactly as in training; float input/output unless
--int8-io). Conversion goes through Keras 3's `model.export(..., format="litert")` (SavedModel ->
TFLiteConverter.from_saved_model), builtin ops only, so tflite-runtime on a Pi can run it. Each converted
file is then loaded by the Pi runtime (tflite-runtime, else ai-edge-litert, in a subprocess: it cannot share
a process with TensorFlow): an op or op version it lacks removes the file and ends the export with
`error: <file>: the Pi runtime (<name version>) cannot run it: <op / message>`, exit 2 (neither runtime
installed: a `note:` line, no check).
Parity is measured on the validation split of the model's run (its split.json) with the TFLite
interpreter, against the Keras model on the same images.
"""

from __future__ import annotations

from common.backend import require_tensorflow

require_tensorflow()

import argparse
import time
from pathlib import Path

import numpy as np

from common import io
from common.cli import UserError, run
from common.config import HelpFormatter
from pi.sidecar import file_digest, sidecar_path
from student.export import FORMATS, convert, logits_head


def output_paths(args, model_path: Path, out: Path) -> dict:
    """{format: OUT/<name>_<format>.tflite}, after checking --quant, --calib and --out; creates nothing."""
    formats = [f.strip() for f in args.quant.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise UserError(f"--quant {args.quant!r}: unknown format(s) {bad}; choose from {', '.join(FORMATS)}")
    if args.calib < 1:
        raise UserError(f"--calib must be >= 1, got {args.calib}")
    for up in (out, *out.parents):  # a file on the way would end in a raw FileExistsError/NotADirectoryError
        if up.exists():
            if not up.is_dir():
                raise UserError(
                    f"--out {out} exists and is not a directory" if up == out else f"--out {out}: {up} exists and is not a directory"
                )
            break
    name = args.name or model_path.stem
    targets = {f: out / f"{name}_{f}.tflite" for f in formats}
    if not args.overwrite:
        taken = [str(p) for p in targets.values() if p.exists()] + ([str(out / "export.json")] if (out / "export.json").exists() else [])
        if taken:
            raise UserError(f"{taken[0]} exists; pass --overwrite to replace it")
    return targets


def parity_row(fmt: str, path: Path, probs, keras_probs, scores: dict, base: dict, threshold: float) -> dict:
    """One row of the parity table: size, scores and their difference to the Keras model, max |dp|, mask agreement."""
    return {
        "format": fmt,
        "file": str(path),
        "size_kb": round(path.stat().st_size / 1024, 1),
        "mean_iou": scores["mean_iou"],
        "kaggle_map": scores["kaggle_map"],
        "d_mean_iou": round(scores["mean_iou"] - base["mean_iou"], 6),
        "d_kaggle_map": round(scores["kaggle_map"] - base["kaggle_map"], 6),
        "max_abs_diff": float(np.abs(probs - keras_probs).max()),
        "pixel_agreement": round(float(((probs > threshold) == (keras_probs > threshold)).mean()), 6),
    }


PARITY = 0.005  # |mean IoU of a quantized file - the Keras model's| above this gets a note (the int8 parity bar of the Pi frontier)


def parity_notes(rows, limit: float = PARITY) -> list[str]:
    """`note:` lines for the exports whose validation mean IoU is more than `limit` off the Keras model's."""
    return [
        f"note: {r['format']} mean IoU is {r['d_mean_iou']:+.4f} off the Keras model's (more than {limit}): try --calib with more "
        "images, or ship fp16; an int8 CONCATENATION gives all its inputs one scale, so a tensor concatenated with a "
        "wider-ranged one loses precision wherever else it is used (models/mbv2.py, lraspp's aspp_relu6)"
        for r in rows
        if r["format"] != "keras" and abs(r["d_mean_iou"]) > limit
    ]


def print_table(rows) -> None:
    print(f"{'format':8s} {'size_kb':>9s} {'mean_iou':>9s} {'kaggle_map':>10s} {'d_mean_iou':>10s} {'d_kaggle':>9s} {'max_abs_diff':>12s}")
    for r in rows:
        print(
            f"{r['format']:8s} {r['size_kb']:9.1f} {r['mean_iou']:9.4f} {r['kaggle_map']:10.4f} {r['d_mean_iou']:+10.4f} "
            f"{r['d_kaggle_map']:+9.4f} {r['max_abs_diff']:12.2e}"
        )


def parse_args(argv) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--model", required=True, help="a single-output .keras model of the project")
    ap.add_argument("--data", required=True, help="Kaggle TGS folder or .npz cache (calibration + parity)")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--quant", default=",".join(FORMATS), help=f"comma-separated formats, any of {', '.join(FORMATS)}")
    ap.add_argument("--int8-io", action="store_true", help="int8 input/output tensors (default: float in, float out)")
    ap.add_argument(
        "--output",
        choices=("probability", "logits"),
        default="probability",
        help="export the sigmoid output or the logits (salt = logit > 0 at threshold 0.5)",
    )
    ap.add_argument("--calib", type=int, default=200, help="training images used to calibrate int8")
    ap.add_argument("--split", default="", help="split.json for calibration/parity (default: next to --model)")
    ap.add_argument("--name", default="", help="file name stem (default: the model file's stem)")
    ap.add_argument("--overwrite", action="store_true", help="replace existing files of the same name in --out")
    return ap.parse_args(argv)


def calibration_and_validation(args, model_path: Path, spec: dict):
    """(int8 calibration images, preprocessed; the validation split) from --data and the run's split.json."""
    from data.pipeline import prep_images
    from data.split import load_split
    from data.tgs import load_data

    data = load_data(args.data)
    split_path = Path(args.split) if args.split else model_path.parent / "split.json"
    if split_path.exists():
        split = load_split(split_path)
        train, val = data.subset(split["train"]), data.subset(split["val"])
    else:
        print(f"note: no split file {split_path}; calibrating and scoring on all {len(data)} images", flush=True)
        train = val = data
    rng = np.random.default_rng(0)
    calib_idx = np.sort(rng.choice(len(train), min(args.calib, len(train)), replace=False))
    return prep_images(train.images[calib_idx], spec), val


def export_format(args, model, spec: dict, fmt: str, path: Path, calib, val, keras_probs, base: dict) -> dict:
    """Convert `model` (the Keras model, or its logits head) to one format, write the sidecar, and score the file
    against the Keras model: its parity row."""
    from metrics.segmentation import score_masks
    from models.files import TFLiteModel

    t0 = time.perf_counter()
    convert(model, fmt, path, calib, args.int8_io)
    side = {
        **spec,
        "output": args.output,
        "quant": fmt,
        "int8_io": bool(args.int8_io and fmt == "int8"),
        "model_name": model.name,
        "source": str(Path(args.model)),
        **file_digest(path.read_bytes()),  # size_bytes, sha256: the Pi refuses a truncated or damaged copy
    }
    io.write_json(sidecar_path(path), side)
    probs = TFLiteModel(path, spec=side, threads=2).predict_probs(val.images)
    threshold = spec["threshold"]
    row = parity_row(fmt, path, probs, keras_probs, score_masks(probs > threshold, val.masks), base, threshold)
    return {**row, "convert_s": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> int:
    args = parse_args(argv)
    model_path, out = Path(args.model), Path(args.out)
    targets = output_paths(args, model_path, out)

    from data.pipeline import crop_probs, prep_images
    from metrics.segmentation import score_masks
    from models.files import load_keras_with_spec

    model, spec = load_keras_with_spec(model_path)
    calib, val = calibration_and_validation(args, model_path, spec)
    keras_probs = crop_probs(model.predict(prep_images(val.images, spec), batch_size=64, verbose=0), spec)
    base = score_masks(keras_probs > spec["threshold"], val.masks)
    rows = [parity_row("keras", model_path, keras_probs, keras_probs, base, base, spec["threshold"])]
    export_model = logits_head(model) if args.output == "logits" else model
    out.mkdir(parents=True, exist_ok=True)  # only now: bad input above leaves nothing behind
    for fmt, path in targets.items():
        rows.append(export_format(args, export_model, spec, fmt, path, calib, val, keras_probs, base))
    report = {"model": str(model_path), "n_val": len(val), "output": args.output, "int8_io": args.int8_io, "rows": rows}
    io.write_json(out / "export.json", report)
    print_table(rows)
    for line in parity_notes(rows):
        print(line, flush=True)
    print(f"wrote {len(targets)} model(s) and {out / 'export.json'} ({len(val)} validation images)", flush=True)
    return 0


if __name__ == "__main__":
    run(main)
