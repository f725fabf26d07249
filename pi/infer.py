"""Segment TGS images on a Raspberry Pi with a .tflite model (no TensorFlow, no project imports).

    python pi/infer.py --model student_int8.tflite --images test/images --out masks --submission sub.csv
    # prints: wrote 18000 masks to masks (salt in 11112 images), 3.1 ms/image (batch 8, 1 thread)

Reads every <id>.png in --images (101x101 8-bit grayscale, sorted; image_io.py's table says which PNG
modes are accepted, the same as in training), applies the preprocessing of the model's sidecar
(<model>.tflite.json, written by export_tflite.py: reflect-pad or resize to the input size; without
it: pad to the model's input size, threshold 0.5, with a warning), runs the model (float32 or
int8/uint8 tensors, --batch images per call where the model allows a dynamic batch), crops back to
101x101 and thresholds. Writes one 0/255 <id>.png per image and optionally a Kaggle submission CSV
(id,rle_mask; 1-indexed column-major RLE; empty = no salt). Bad input: one line `error: ...`, exit 2.
Needs numpy, pillow and tflite-runtime or ai-edge-litert: pip install -r pi/requirements.txt

The model file is checked before the runtime loads it (a damaged one would crash the process): its
size and sha256 against the sidecar, its flatbuffer structure (tflite_check.py), then its input and
output shapes. Every image's header is checked (format, size, bit depth, mode) before anything is
written; the images are then read, inferred and written batch by batch, so memory does not grow
with their number. The masks go to a hidden folder inside --out and are moved into --out (one
rename each) only once every image has been inferred, and the CSV is written to a temporary file
renamed at the end: an image refused for its pixels, a full disk or Ctrl-C leave --out and the
submission as they were.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import errno
import io
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from image_io import ImageError, check_header
from image_io import read_gray as _read_gray
from runner import ModelError, TFLiteSegmenter
from runner import check_model_file as _check_model_file
from tgs_common import ORIG_SIZE, rle_encode


class UserError(Exception):
    """Bad input: reported as one line `error: ...`, exit code 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage + error
        raise UserError(f"{message} (see --help)")


def progress(it, total, desc, enabled):
    """A dependency-free progress bar on stderr. Use it as `with contextlib.closing(progress(...)) as bar:`
    so that an error raised in the loop ends the bar's line before `error: ...` is printed."""
    t0, drawn = time.perf_counter(), False
    try:
        for k, x in enumerate(it, 1):
            yield x
            if enabled and (k == total or k % max(1, total // 50) == 0):
                rate = k / max(time.perf_counter() - t0, 1e-9)
                sys.stderr.write(f"\r{desc} [{'#' * int(30 * k / total):30s}] {k}/{total} {rate:.1f}/s")
                sys.stderr.flush()
                drawn = True
    finally:
        if drawn:  # a bar line was started: end it, whether the loop finished or not
            sys.stderr.write("\n")
            sys.stderr.flush()


@contextlib.contextmanager
def quiet_runtime(drop=("INFO: Created TensorFlow Lite XNNPACK delegate",)):
    """Hide the runtime's C++ 'INFO: Created ... XNNPACK delegate' line; pass anything else through."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        fd = None
    if fd is None:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            sys.stderr.writelines(x for x in tmp.read().decode(errors="replace").splitlines(True) if not x.startswith(drop))


def check_model_file(path: Path) -> None:
    """Missing, not its sidecar's size/sha256, empty, not TFLite or a damaged flatbuffer: one UserError naming it."""
    try:
        _check_model_file(path)
    except ModelError as e:
        raise UserError(str(e)) from None


def load_model(path: Path, threads: int) -> TFLiteSegmenter:
    check_model_file(path)
    try:
        with quiet_runtime():
            model = TFLiteSegmenter(path, threads=threads)
    except ModelError as e:
        raise UserError(str(e)) from None
    return model


def read_gray(path: Path) -> np.ndarray:
    """A 101x101 8-bit grayscale PNG -> (101, 101) uint8 by image_io.py's rules (the training code's too)."""
    try:
        return _read_gray(path, ORIG_SIZE)
    except ImageError as e:
        raise UserError(str(e)) from None


def check_images(files: list[Path], show: bool) -> None:
    """Every image's header (format, size, bit depth, mode), refused with read_gray's message; pixels not decoded."""
    with contextlib.closing(progress(files, len(files), "check", show)) as bar:
        for p in bar:
            try:
                check_header(p, ORIG_SIZE)
            except ImageError as e:
                raise UserError(str(e)) from None


@contextlib.contextmanager
def disk_full_names(path: Path):
    """A full disk (ENOSPC, EDQUOT) inside the block is one UserError naming `path`: `no space left writing PATH`."""
    try:
        yield
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UserError(f"no space left writing {path}") from None
        raise


def write_atomic(path: Path, data: bytes, shown: Path | None = None) -> None:
    """`data` into a temporary file next to `path`, renamed onto it; a full disk names `shown` (default `path`)."""
    with disk_full_names(shown or path):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "w", **kw):
    """A file object writing to a temporary file next to `path`, renamed to `path` when the block ends without an
    error; removed otherwise. A full disk while it is written names `path`."""
    with disk_full_names(path):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, mode, **kw) as f:
                yield f
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


@contextlib.contextmanager
def staging(out: Path):
    """A hidden folder inside `out` for this run's masks; removed, with whatever is left in it, when the block ends."""
    stage = Path(tempfile.mkdtemp(dir=out, prefix=".infer-"))
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def png_bytes(mask: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).save(buf, format="PNG")
    return buf.getvalue()


def check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write_test_{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write to {folder}: {e.strerror or e}") from None


def parse_args(argv) -> argparse.Namespace:
    """The command line, with --threads, --batch and --threshold checked."""
    ap = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a .tflite model (its sidecar <model>.tflite.json next to it)")
    ap.add_argument("--images", required=True, help="folder of 101x101 <id>.png images")
    ap.add_argument("--out", required=True, help="folder for the <id>.png masks (0/255)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--batch",
        type=int,
        default=8,
        help="images per model call where the model allows a dynamic batch (at most 32), else its fixed batch",
    )
    ap.add_argument("--threshold", type=float, default=None, help="probability threshold (default: the sidecar's, 0.5)")
    ap.add_argument("--submission", default="", help="also write a Kaggle submission CSV (id,rle_mask)")
    ap.add_argument("--overwrite", action="store_true", help="write into an --out folder that already holds files")
    ap.add_argument("--progress", action="store_true", help="progress bar even when stderr is not a terminal")
    args = ap.parse_args(argv)
    if args.threads < 1:
        raise UserError(f"--threads {args.threads} must be >= 1")
    if args.batch < 1:
        raise UserError(f"--batch {args.batch} must be >= 1")
    if args.threshold is not None and not 0 < args.threshold < 1:
        raise UserError(f"--threshold {args.threshold} must be in (0, 1)")
    return args


def list_images(folder: Path) -> list[Path]:
    """The visible <id>.png files in `folder`, sorted; a missing or empty folder is a UserError."""
    if not folder.is_dir():
        raise UserError(f"image folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png" and not p.name.startswith(".") and p.is_file())
    if not files:
        raise UserError(f"image folder {folder} holds no .png images")
    return files


def check_out_folder(out: Path, overwrite: bool) -> None:
    """Refuse an --out that is a file, or a non-empty folder without --overwrite."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not overwrite)):
        raise UserError(
            f"{out} is not a folder" if not out.is_dir() else f"output folder {out} is not empty; pass --overwrite to write into it"
        )


def open_model(model_path: Path, threads: int, threshold: float | None) -> TFLiteSegmenter:
    """The loaded model, its spec checked, a warning without a sidecar, and --threshold applied."""
    model = load_model(model_path, threads)
    if model.spec_problem:
        raise UserError(model.spec_problem)
    if not model.has_sidecar:
        print(
            f"warning: no sidecar {model_path}.json; assuming reflect-pad to the model's input {model.spec['input_size']}, "
            "probability output, threshold 0.5",
            file=sys.stderr,
        )
    if threshold is not None:
        model.spec["threshold"] = threshold
    return model


def infer_all(files: list[Path], model: TFLiteSegmenter, batch: int, stage: Path, out: Path, rows, show: bool):
    """Infer `files` batch by batch into `stage` (and CSV `rows`); returns (images with salt, seconds in the model)."""
    n_salt, model_s = 0, 0.0
    with contextlib.closing(progress(range(0, len(files), batch), -(-len(files) // batch), "infer", show)) as bar:
        for s in bar:
            chunk = files[s : s + batch]
            gray = np.stack([read_gray(p) for p in chunk])  # a refusal here leaves --out as it was
            t0 = time.perf_counter()
            masks = model.predict_scores(gray) > model.threshold
            model_s += time.perf_counter() - t0
            for p, m in zip(chunk, masks):
                write_atomic(stage / f"{p.stem}.png", png_bytes(m), shown=out / f"{p.stem}.png")
                if rows is not None:
                    rows.writerow([p.stem, rle_encode(m)])
                n_salt += bool(m.any())
    return n_salt, model_s


def main(argv=None) -> int:
    """Segment every image in --images into --out (and --submission); 0 when all are written."""
    args = parse_args(argv)
    folder, out, model_path = Path(args.images), Path(args.out), Path(args.model)
    check_model_file(model_path)
    files = list_images(folder)
    check_out_folder(out, args.overwrite)

    model = open_model(model_path, args.threads, args.threshold)
    show = args.progress or sys.stderr.isatty()
    check_images(files, show)  # every image's header checked before anything is written
    check_writable(out)
    sub = Path(args.submission) if args.submission else None
    if sub is not None:
        check_writable(sub.parent)

    batch = args.batch if model.dynamic_batch else model.batch
    with staging(out) as stage, atomic_open(sub, newline="") if sub is not None else contextlib.nullcontext() as csv_file:
        rows = csv.writer(csv_file, lineterminator="\n") if csv_file is not None else None
        if rows is not None:
            rows.writerow(["id", "rle_mask"])
        n_salt, model_s = infer_all(files, model, batch, stage, out, rows, show)
        for stem in dict.fromkeys(p.stem for p in files):  # all inferred: the masks move into --out, then the CSV
            os.replace(stage / f"{stem}.png", out / f"{stem}.png")
    print(
        f"wrote {len(files)} masks to {out} (salt in {n_salt} images), {1000 * model_s / len(files):.1f} ms/image "
        f"(batch {batch}, {args.threads} thread{'s' if args.threads > 1 else ''})" + (f"; submission {sub}" if sub else "")
    )
    return 0


def cli(entry=None, argv=None) -> None:
    """Run entry(argv) (default: main); bad input -> one line `error: ...` and exit code 2 (KDSEG_DEBUG=1: tracebacks)."""
    try:
        code = (entry or main)(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except OSError as e:
        print(f"error: {e.strerror or e}" + (f": {e.filename}" if e.filename else ""), file=sys.stderr)
        sys.exit(2)
    except Exception as e:  # noqa: BLE001 - one line, never a traceback
        if os.environ.get("KDSEG_DEBUG"):
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"error: unexpected {type(e).__name__}: {msg}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code)


if __name__ == "__main__":
    cli()
