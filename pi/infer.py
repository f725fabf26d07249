"""Segment TGS images on a Raspberry Pi with a .tflite model (no TensorFlow, no project imports).

    python pi/infer.py --model student_int8.tflite --images test/images --out masks --submission sub.csv
    # prints: wrote 1000 masks to masks (salt in 612 images), 3.1 ms/image, 1 thread(s)

Reads every <id>.png in --images, applies the preprocessing in the model's sidecar
(<model>.tflite.json, written by export_tflite.py: pad or resize to the input size), runs the model
(float or int8 tensors), crops back to 101x101 and thresholds. Writes one 0/255 <id>.png per image
and optionally a Kaggle submission CSV (id,rle_mask; 1-indexed column-major RLE; empty = no salt).
Needs numpy, pillow and tflite-runtime or ai-edge-litert (pi/requirements.txt).
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from runner import ModelError, TFLiteSegmenter  # noqa: E402
from tgs_common import ORIG_SIZE, rle_encode, to_gray  # noqa: E402


class UserError(Exception):
    pass


def progress(it, total, desc, enabled):
    """A dependency-free progress bar on stderr."""
    t0 = time.perf_counter()
    for k, x in enumerate(it, 1):
        yield x
        if enabled and (k == total or k % max(1, total // 50) == 0):
            rate = k / max(time.perf_counter() - t0, 1e-9)
            bar = "#" * int(30 * k / total)
            sys.stderr.write(f"\r{desc} [{bar:30s}] {k}/{total} {rate:.0f} img/s")
            sys.stderr.flush()
    if enabled:
        sys.stderr.write("\n")


def read_gray(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            arr = np.array(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise UserError(f"cannot read image {path}: {e}") from None
    try:
        g = to_gray(arr)
    except ValueError as e:
        raise UserError(f"image {path}: {e}") from None
    if g.shape != (ORIG_SIZE, ORIG_SIZE):
        raise UserError(f"image {path} is {g.shape[1]}x{g.shape[0]}, expected {ORIG_SIZE}x{ORIG_SIZE}")
    return g


def write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def png_bytes(mask: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).save(buf, format="PNG")
    return buf.getvalue()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--images", required=True, help="folder of 101x101 <id>.png images")
    ap.add_argument("--out", required=True, help="folder for the <id>.png masks")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--threshold", type=float, default=None, help="probability threshold (default: the sidecar's, 0.5)")
    ap.add_argument("--submission", default="", help="also write a Kaggle submission CSV")
    ap.add_argument("--overwrite", action="store_true", help="write into an --out folder that already holds files")
    ap.add_argument("--progress", action="store_true", help="progress bar even when stderr is not a terminal")
    args = ap.parse_args(argv)
    if args.threads < 1:
        raise UserError(f"--threads {args.threads} must be >= 1")
    if args.threshold is not None and not 0 < args.threshold < 1:
        raise UserError(f"--threshold {args.threshold} must be in (0, 1)")
    folder, out = Path(args.images), Path(args.out)
    if not folder.is_dir():
        raise UserError(f"image folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png" and not p.name.startswith("."))
    if not files:
        raise UserError(f"image folder {folder} holds no .png images")
    try:
        model = TFLiteSegmenter(args.model, threads=args.threads)
    except ModelError as e:
        raise UserError(str(e)) from None
    if not model.has_sidecar:
        print(f"warning: no sidecar {args.model}.json; assuming reflect-pad to {model.spec['input_size']}, threshold 0.5", file=sys.stderr)
    if args.threshold is not None:
        model.spec["threshold"] = args.threshold
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise UserError(f"output folder {out} is not empty; pass --overwrite to write into it")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write_test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write to {out}: {e.strerror or e}") from None

    gray = np.stack([read_gray(p) for p in files])  # fail on a bad image before writing anything
    show = args.progress or sys.stderr.isatty()
    t0 = time.perf_counter()
    scores = np.concatenate([model.predict_scores(gray[s : s + 32]) for s in progress(range(0, len(gray), 32), -(-len(gray) // 32),
                                                                                      "infer", show)])
    dt = time.perf_counter() - t0
    masks = scores > model.threshold
    rows = []
    for p, m in zip(files, masks):
        write_atomic(out / f"{p.stem}.png", png_bytes(m))
        rows.append([p.stem, rle_encode(m)])
    if args.submission:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows([["id", "rle_mask"], *rows])
        sub = Path(args.submission)
        sub.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(sub, buf.getvalue().encode())
    print(f"wrote {len(files)} masks to {out} (salt in {int(masks.any(axis=(1, 2)).sum())} images), "
          f"{1000 * dt / len(files):.1f} ms/image, {args.threads} thread(s)" + (f"; submission {args.submission}" if args.submission else ""))
    return 0


def cli(entry=None, argv=None) -> None:
    """Run entry(argv) (default: main); bad input -> one line `error: ...` and exit code 2."""
    try:
        code = (entry or main)(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - one line, never a traceback
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"error: unexpected {type(e).__name__}: {msg}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code)


if __name__ == "__main__":
    cli()
