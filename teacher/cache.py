"""Teacher-output cache: the teacher's logits for every image and its horizontal flip, computed once.

    python -m teacher.cache --teacher runs/cpu/teacher/teacher.keras --data cache/tgs.npz \
        --unlabelled cache/tgs.npz --out runs/cpu/teacher/cache
    # prints: cached logits of unet8 for 4200 images x 2 views (float16, 275.3 MB) -> runs/cpu/teacher/cache

`distill_train.py --teacher-cache CACHE` then trains with no teacher in the graph: the soft target
is sigmoid(cached_logits / T), so one cache serves every T. Several --teacher files average their
logits (an ensemble). The cache records each teacher file's SHA-256, the image ids and the
preprocessing; a cache that does not cover the run's ids, or was made from other teachers than
--teacher names, is refused. Files: CACHE/logits.npy (N, 2, S, S) float16, loaded memory-mapped
(view 0: the image, view 1: the flipped image, in flipped orientation); CACHE/meta.json.
"""

from __future__ import annotations

from common.backend import choose_backend

choose_backend()

import argparse
from pathlib import Path

import numpy as np

from common import io
from common.cli import UserError, run
from common.io import file_sha256
from data.pipeline import prep_images
from data.tgs import load_data, load_unlabelled, read_png
from distill.cache import FORMAT, normalise_weights
from distill.teachers import ensemble_logits, load_teacher
from models.files import model_spec
from pi.sidecar import make_spec
from pi.tgs_common import ORIG_SIZE, pad_amounts


def build_cache(teacher_paths, data_paths, unlabelled_paths, out: Path, overwrite: bool, weights=None) -> dict:
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"cache dir {out} is not empty; pass --overwrite to replace it")
    teachers = [load_teacher(t) for t in teacher_paths]
    shapes = {tuple(t.inputs[0].shape[1:]) for t in teachers}
    if len(shapes) > 1:
        raise UserError(f"the teachers take different input sizes: {sorted(shapes)}")
    if weights and len(weights) != len(teachers):
        raise UserError(f"--teacher-weights has {len(weights)} values for {len(teachers)} teacher(s)")
    w = normalise_weights(weights or [1.0] * len(teachers))
    spec = model_spec(teacher_paths[0], teachers[0])
    parts = [load_data(p) for p in data_paths] + [load_unlabelled(u) for u in unlabelled_paths]
    ids, images = [], []
    for p in parts:
        for i, im in zip(p.ids, p.images):
            if i not in ids:
                ids.append(i)
                images.append(im)
    x = prep_images(np.stack(images), spec)
    out.mkdir(parents=True, exist_ok=True)
    io.acquire_lock(out)  # a second cache job on the same dir (another sweep) is refused, not interleaved
    logits = np.stack([ensemble_logits(teachers, x, weights=w), ensemble_logits(teachers, x[:, :, ::-1], weights=w)], axis=1).astype(np.float16)
    with io.atomic_path(out / "logits.npy", suffix=".npy") as tmp:
        np.save(tmp, logits)
    meta = {"format": FORMAT, "teachers": [{"path": str(t), "sha256": file_sha256(t)} for t in teacher_paths], "weights": w,
            "spec": spec, "n": len(ids), "views": ["image", "hflip"], "ids": ids}
    io.write_json(out / "meta.json", meta)
    io.release_lock(out)
    return meta


def read_probability_map(path: Path, sizes: tuple[int, int]) -> np.ndarray:
    """A probability map from another program: 8/16-bit PNG (scaled by 255/65535) or .npy float in [0, 1]."""
    if path.suffix == ".npy":
        try:
            p = np.load(path, allow_pickle=False).astype(np.float64)
        except (OSError, ValueError) as e:
            raise UserError(f"cannot read probability map {path}: {e}") from None
    else:
        a = read_png(path, "probability map")
        a = a[..., 0] if a.ndim == 3 else a
        p = a.astype(np.float64) / (65535.0 if a.dtype == np.uint16 else 255.0)
    p = np.squeeze(p)
    if p.ndim != 2 or p.shape[0] != p.shape[1] or p.shape[0] not in sizes:
        raise UserError(f"probability map {path} is {p.shape}, expected {sizes[0]}x{sizes[0]} or {sizes[1]}x{sizes[1]}")
    if not np.isfinite(p).all() or p.min() < 0 or p.max() > 1:
        raise UserError(f"probability map {path} has values outside [0, 1] (min {np.nanmin(p):.3g}, max {np.nanmax(p):.3g})")
    return p


def build_cache_from_probabilities(prob_dir: Path, data_paths, unlabelled_paths, input_size: int, out: Path, overwrite: bool,
                                   eps: float = 1e-4) -> dict:
    """Black-box teacher: per-image probability maps -> logits = log(p / (1 - p)), p clipped to [eps, 1 - eps].

    A 101x101 map is reflect-padded to the input size like the images. No flipped view exists, so
    view 1 is the mirrored map: the teacher is assumed to be flip-equivariant (see the README).
    """
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"cache dir {out} is not empty; pass --overwrite to replace it")
    if not prob_dir.is_dir():
        raise UserError(f"probability folder {prob_dir} does not exist")
    spec = make_spec(input_size, "pad")
    ids = []
    for part in [load_data(p) for p in data_paths] + [load_unlabelled(u) for u in unlabelled_paths]:
        ids += [i for i in part.ids if i not in set(ids)]
    logits = np.empty((len(ids), 2, input_size, input_size), np.float16)
    b, e = pad_amounts(ORIG_SIZE, input_size)
    for k, i in enumerate(ids):
        cands = [prob_dir / f"{i}{ext}" for ext in (".png", ".npy")]
        path = next((c for c in cands if c.exists()), None)
        if path is None:
            raise UserError(f"no probability map for image {i} in {prob_dir} (.png or .npy)")
        p = read_probability_map(path, (ORIG_SIZE, input_size))
        if p.shape[0] == ORIG_SIZE:
            p = np.pad(p, ((b, e), (b, e)), mode="reflect")
        z = np.log(np.clip(p, eps, 1 - eps) / (1 - np.clip(p, eps, 1 - eps)))
        logits[k, 0], logits[k, 1] = z, z[:, ::-1]
    out.mkdir(parents=True, exist_ok=True)
    with io.atomic_path(out / "logits.npy", suffix=".npy") as tmp:
        np.save(tmp, logits)
    meta = {"format": FORMAT, "teachers": [], "source": {"probabilities": str(prob_dir), "eps": eps, "flip_view": "mirrored map"},
            "spec": {**spec, "model_name": "blackbox"}, "n": len(ids), "views": ["image", "hflip (mirrored)"], "ids": ids}
    io.write_json(out / "meta.json", meta)
    return meta


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--teacher", action="append", help="teacher .keras (repeat for an ensemble)")
    ap.add_argument("--teacher-weights", type=float, nargs="+", default=None, help="ensemble weights, one per --teacher (default equal)")
    src.add_argument("--from-probabilities", help="folder of <id>.png (8/16-bit) or <id>.npy probability maps from a black-box teacher")
    ap.add_argument("--input-size", type=int, default=128, help="with --from-probabilities: the students' input size")
    ap.add_argument("--data", action="append", required=True, help="labelled data folder or .npz (repeatable)")
    ap.add_argument("--unlabelled", action="append", default=[], help="unlabelled image folder or .npz (repeatable)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.from_probabilities:
        meta = build_cache_from_probabilities(Path(args.from_probabilities), args.data, args.unlabelled, args.input_size, out,
                                              args.overwrite)
        what = f"black-box probabilities from {args.from_probabilities}"
    else:
        meta = build_cache(args.teacher, args.data, args.unlabelled, out, args.overwrite, args.teacher_weights)
        what = f"logits of {len(args.teacher)} teacher(s)"
    size = (out / "logits.npy").stat().st_size / 1e6
    print(f"cached {what} for {meta['n']} images x 2 views (float16, {size:.1f} MB) -> {out}")
    return 0


if __name__ == "__main__":
    run(main)
