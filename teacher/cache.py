r"""Teacher-output cache: the teacher's logits for every image and its horizontal flip, computed once.

    python -m teacher.cache --teacher runs/cpu/teacher/teacher.keras --data cache/tgs.npz \
        --unlabelled cache/tgs.npz --out runs/cpu/teacher/cache
    # prints: cached logits of 1 teacher(s) for 4200 images x 2 views (float16, 275.3 MB) -> runs/cpu/teacher/cache
    #         (built in 361.8 s, peak RSS 1898 MB: unet8, one busy CPU thread; 21,200 images: 1389.4 MB on disk)

`distill_train.py --teacher-cache CACHE` then trains with no teacher in the graph: the soft target
is sigmoid(cached_logits / T), so one cache serves every T. Several --teacher files average their
logits (an ensemble). The cache records each teacher file's SHA-256, the image ids and the
preprocessing, and a fingerprint of every image's pixels; a cache that does not cover the run's ids,
was made from other teachers than --teacher names, or from other pixels under the same ids, is
refused. Files: CACHE/logits.npy (N, 2, S, S) float16, loaded memory-mapped (view 0: the image,
view 1: the flipped image, in flipped orientation); CACHE/meta.json (also `build_s`, the build time).
The format is distill.cache's, which writes and reads it; this command computes the logits.

Repeated values take either spelling: `--unlabelled A B` or `--unlabelled A --unlabelled B` (the
same for --teacher and --data). An id in several inputs is cached once if its pixels agree, and
refused if they differ; an unlabelled image under the id of a labelled one is refused. In an image
folder only *.png files count (other files are ignored); a .png that is not a readable 101x101 8-bit
grayscale PNG is refused, naming it. Every refusal comes before the cache dir is touched.

Streamed: every image is read and checked first (an unlabelled folder's images are not kept), then
the teachers predict `CHUNK` (512) images at a time, reading a folder's PNGs again for their chunk, and
each chunk's float16 logits go straight into logits.npy in the temp dir, so memory does not grow with
the number of unlabelled images (the file holds the same bytes as the earlier all-at-once build:
tests/test_cache_stream.py). What remains is the framework and one forward pass: `--batch-size 16`
(default 64, the bits of every earlier cache) halves the forward pass's memory; its logits can differ
from the default's in the last float bit.

The cache dir is replaced as a whole: both files are written into `.CACHE.partial-<pid>` next to
it, then swapped into place, so a kill at any moment leaves the old cache or the new one, never new
logits under old meta (leftovers of killed builds are cleaned up on the next start). While a build
runs, the lock file `.CACHE.lock` next to it refuses a second build of the same dir, and
`common.io.is_locked(CACHE)` is true (the sweep skips the job).
"""

from __future__ import annotations

from common.backend import choose_backend

choose_backend()

import argparse
import resource
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from tqdm import tqdm

from common import io
from common.cli import UserError, run
from common.config import HelpFormatter
from data.pipeline import prep_images
from data.tgs import (
    TgsData,
    check_not_labelled,
    index_image_folder,
    iter_images,
    load_data,
    load_unlabelled,
    read_image,
    read_png,
    unlabelled_folder,
)
from distill.cache import (
    LOGITS,
    META,
    MIRRORED_VIEWS,
    TeacherCache,
    cache_meta,
    fingerprint,
    logits_writer,
    new_cache,
    normalise_weights,
    teacher_files,
    write_cache,
    write_meta,
)
from distill.teachers import load_teacher
from models.files import model_spec
from models.predict import predict
from models.registry import logits_model
from pi.sidecar import make_spec
from pi.tgs_common import ORIG_SIZE, pad_amounts


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse an --out that is a file (or under one), a non-empty dir without --overwrite, or with it a non-empty dir
    that is not a cache (the whole dir is replaced: cache/ of the README's data, say, would be lost)."""
    for p in (out, *out.parents):
        if p.exists() and not p.is_dir():
            raise UserError(f"--out {out} exists and is not a directory" if p == out else f"--out {out}: {p} is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(f"cache dir {out} is not empty; pass --overwrite to replace it")
    io.check_replaceable(out, lambda d: (d / META).is_file(), "teacher cache")  # a cache holds META


class ImageRows:
    """The cache's images in row order, handed out as uint8 arrays by slice (`rows[s:e]`), without holding them all.

    Rows of in-memory inputs (a .npz, a labelled Kaggle folder) are kept as arrays; rows of an unlabelled
    folder are kept as their PNG files and read again when their chunk is predicted, each checked against
    the fingerprint taken in the first pass (a file changed in between is refused, naming it). So memory
    does not grow with the number of unlabelled images (17,000 PNGs would be 173 MB as uint8)."""

    def __init__(self):
        self.segments: list = []  # (first row, array of rows | list of (file, fingerprint))
        self.n = 0
        self.tail: tuple = (ORIG_SIZE, ORIG_SIZE)

    def add(self, part, keep: list[int], fps: list[str]) -> None:
        """Rows `keep` of `part` (a TgsData; images None for a folder read lazily), with their fingerprints."""
        if part.images is None:
            seg = [(part.files[k], fp) for k, fp in zip(keep, fps)]
        else:
            seg = part.images if len(keep) == len(part) else np.take(part.images, np.asarray(keep, np.int64), axis=0)
            if not self.n:
                self.tail = tuple(part.images.shape[1:])
        self.segments.append((self.n, seg))
        self.n += len(keep)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, sl: slice) -> np.ndarray:
        s, e, step = sl.indices(self.n)
        if step != 1:
            raise ValueError("ImageRows takes contiguous slices")
        out = np.empty((max(e - s, 0),) + self.tail, np.uint8)
        for start, seg in self.segments:
            a, b = max(s, start), min(e, start + len(seg))
            if a >= b:
                continue
            if isinstance(seg, np.ndarray):
                out[a - s : b - s] = seg[a - start : b - start]
                continue
            for k in range(a, b):
                path, fp = seg[k - start]
                out[k - s] = read_image(path)
                if fingerprint(out[k - s]) != fp:
                    raise UserError(f"image {path} changed while the cache was built; build it again")
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        a = self[:]
        return a if dtype is None else a.astype(dtype)


def _unlabelled_input(path) -> TgsData:
    """An --unlabelled input: a .npz's test part (in memory), or a folder's PNGs as ids and files (read when checked,
    and again chunk by chunk when predicted: see ImageRows)."""
    path = Path(path)
    return load_unlabelled(path) if path.suffix == ".npz" else index_image_folder(unlabelled_folder(path))


def collect_images(data_paths, unlabelled_paths):
    """(ids, images (ImageRows: N x 101 x 101 uint8 by slice), fingerprints) of every input, each id once, in input order.

    An id in several inputs (e.g. --data D --data D) is kept once when its pixels agree, refused when they
    differ; an unlabelled image under the id of a labelled one is refused (data.tgs.check_not_labelled).
    Every image is read and checked here; those of unlabelled folders are not kept (ImageRows reads them again)."""
    labelled = [(p, load_data(p)) for p in data_paths]
    parts = labelled + [(u, _unlabelled_input(u)) for u in unlabelled_paths]
    for _, part in parts[len(labelled) :]:
        check_not_labelled(part, [d for _, d in labelled])
    ids, fps, seen = [], [], {}
    rows = ImageRows()
    for n, (src, part) in enumerate(parts):
        keep, kept_fps = [], []
        for k, (i, im) in enumerate(zip(part.ids, part.images if part.images is not None else iter_images(part, verb="checking"))):
            fp = fingerprint(im)
            if i not in seen:
                seen[i] = (len(ids), n, k)
                ids.append(i)
                fps.append(fp)
                keep.append(k)
                kept_fps.append(fp)
            elif fps[seen[i][0]] != fp:
                raise UserError(
                    f"image id {i} is in {_where(parts[seen[i][1]], seen[i][2])} and in {_where((src, part), k)} with different pixels; "
                    "a cache holds one image per id (rename one, or leave one input out)"
                )
        rows.add(part, keep, kept_fps)
    return ids, rows, fps


def _where(item, k: int) -> str:
    """An input's image k for messages: its PNG file, or the input and the id."""
    src, part = item
    return part.where(k) if part.files is not None else f"{src} (id {part.ids[k]})"


@contextmanager
def claim(out: Path, overwrite: bool):
    """Hold the cache dir's lock (`.OUT.lock` next to it) while building; undo a killed build's leftovers."""
    out.parent.mkdir(parents=True, exist_ok=True)
    io.acquire_lock(out, sibling=True, what="cache dir")  # a second cache job on the same dir (another sweep) is refused
    try:
        if io.is_locked(out):  # a run of an earlier version locks OUT/.lock
            raise UserError(f"cache dir {out} is in use by another run (lock file {out / '.lock'})")
        io.recover_dir(out)
        check_out(out, overwrite)  # again: another job may have finished it while this one was loading
        yield
    finally:
        io.release_lock(out, sibling=True)


# images per predict call (--batch-size): distill.teachers.ensemble_logits' batch, so every cache holds the bits it
# always did. A forward pass's memory grows with it and its speed does not (unet8, 128x128, 1 thread: 1720 MB peak
# at 64, 833 MB at 16); other batch sizes can change a logit in its last float bit (the backend's kernels differ)
BATCH = 64
CHUNK = 512  # images preprocessed and predicted at once (a multiple of BATCH: the same batches as one pass over all)


def teacher_views(heads, x: np.ndarray, weights, batch: int = BATCH) -> np.ndarray:
    """(n, S, S, 1) float32 images -> (n, 2, S, S) float32: the teachers' (weighted) mean logits for each
    image (view 0) and its horizontal flip (view 1, in flipped orientation).

    The arithmetic of `distill.teachers.ensemble_logits` batch by batch (float64 average stored as float32),
    so a cache built chunk by chunk holds the bits of one built from all images at once (tested)."""
    w = normalise_weights(weights) if weights else None
    out = np.empty((len(x), 2) + x.shape[1:3], np.float32)
    for v, xv in enumerate((x, x[:, :, ::-1])):
        for s in range(0, len(x), batch):
            xb = xv[s : s + batch]
            out[s : s + batch, v] = np.average([predict(h, xb, batch)[..., 0] for h in heads], axis=0, weights=w)
    return out


def stream_logits(path: Path, heads, images, spec: dict, weights, chunk: int = CHUNK, batch: int = BATCH) -> None:
    """The cache's logits of `images` (uint8 rows by slice: an array or ImageRows) written into the .npy file `path`
    (distill.cache.logits_writer), `chunk` images at a time: peak memory is one chunk's float32 images and logits
    whatever N (the old code held float32 copies of all images, both views and their logits: 8.5 GB for 21,200
    images). The bytes are np.save's of the whole array (tested)."""
    if chunk % batch:
        raise ValueError(f"chunk {chunk} must be a multiple of the batch size {batch}")
    size = int(spec["input_size"])
    with logits_writer(path, len(images), size) as write, tqdm(total=len(images), desc="teacher logits", unit="img", leave=False) as bar:
        for s in range(0, len(images), chunk):
            part = images[s : s + chunk]
            write(teacher_views(heads, prep_images(part, spec), weights, batch))
            bar.update(len(part))


def build_cache(
    teacher_paths, data_paths, unlabelled_paths, out: Path, overwrite: bool, weights=None, chunk: int = 0, batch: int = BATCH
) -> dict:
    """Predict and write the cache of these teachers (see the module doc), `chunk` images at a time (default: the
    multiple of `batch` nearest above CHUNK), `batch` per predict call."""
    chunk = chunk or -(-CHUNK // batch) * batch
    t0 = time.perf_counter()
    out = Path(out)
    check_out(out, overwrite)
    teachers = [load_teacher(t) for t in teacher_paths]
    shapes = {tuple(t.inputs[0].shape[1:]) for t in teachers}
    if len(shapes) > 1:
        raise UserError(f"the teachers take different input sizes: {sorted(shapes)}")
    if weights and len(weights) != len(teachers):
        raise UserError(f"--teacher-weights has {len(weights)} values for {len(teachers)} teacher(s)")
    w = normalise_weights(weights or [1.0] * len(teachers))
    spec = model_spec(teacher_paths[0], teachers[0])
    size = int(spec["input_size"])
    if shapes.pop()[:2] != (size, size):
        raise UserError(f"sidecar of {teacher_paths[0]} says input_size {size}, the teacher takes {teachers[0].inputs[0].shape[1]}")
    ids, images, fps = collect_images(data_paths, unlabelled_paths)  # every image read and checked before the lock
    heads = [logits_model(t) for t in teachers]
    with claim(out, overwrite), new_cache(out) as tmp:
        stream_logits(tmp / LOGITS, heads, images, spec, w, chunk, batch)
        build_s = round(time.perf_counter() - t0, 1)
        names = [model_spec(p, t).get("model_name", "") for p, t in zip(teacher_paths, teachers)]
        meta = cache_meta(teacher_files(teacher_paths, names), spec, ids, fps, build_s, weights=w, batch_size=batch)
        write_meta(tmp, meta)
    return meta


def merge_caches(cache_dirs, out: Path, overwrite: bool, weights=None, chunk: int = CHUNK) -> dict:
    """An ensemble's cache from the caches of its members, with no teacher run again: per image (matched by id, its
    pixels' fingerprints equal) and view, the weighted mean of the members' logits. Weights are per cache (default: its
    number of teachers, so every teacher counts once, as with --teacher A B). The meta is the one `--teacher A B`
    writes (every member's teacher files and their weights, the first cache's spec), so a student's `--teacher A B
    --teacher-cache OUT` accepts it; its logits equal a rebuilt cache's to float16's last bit (each member's were
    rounded to float16 once before the mean)."""
    t0 = time.perf_counter()
    out = Path(out)
    check_out(out, overwrite)
    if len(cache_dirs) < 2:
        raise UserError("--from-caches needs two caches or more (one cache is its own ensemble)")
    if weights and len(weights) != len(cache_dirs):
        raise UserError(f"--teacher-weights has {len(weights)} values for {len(cache_dirs)} cache(s)")
    caches = [TeacherCache(c) for c in cache_dirs]
    first = caches[0]
    ids, fps = first.meta["ids"], first.meta.get("fingerprints")
    for c in caches:
        if not c.has_flip_view:
            raise UserError(
                f"teacher cache {c.path} holds black-box probabilities: merge caches of teacher files (teacher.cache --teacher)"
            )
        for k in ("input_size", "resize_mode", "scale"):
            if c.meta["spec"].get(k) != first.meta["spec"].get(k):
                raise UserError(f"teacher cache {c.path} has {k}={c.meta['spec'].get(k)}, {first.path} has {first.meta['spec'].get(k)}")
        if sorted(c.meta["ids"]) != sorted(ids):
            raise UserError(f"teacher caches {first.path} and {c.path} hold different images ({len(ids)} and {len(c.meta['ids'])} ids)")
        theirs = c.meta.get("fingerprints")
        if fps is None or theirs is None or any(theirs[c.index[i]] != f for i, f in zip(ids, fps)):
            raise UserError(f"teacher caches {first.path} and {c.path} hold other pixels under the same ids (or no fingerprints)")
    w = normalise_weights(weights or [len(c.meta["teachers"]) for c in caches])
    teachers, tw = [], []
    for c, wc in zip(caches, w):
        for t, wt in zip(c.meta["teachers"], c.weights):
            name = t.get("model_name") or c.meta["spec"].get("model_name", "")  # single-kind caches name it in the spec
            teachers.append({**t, "model_name": name} if name else dict(t))
            tw.append(wc * wt)
    shas = [t["sha256"] for t in teachers]
    if len(set(shas)) < len(shas):
        raise UserError("the caches share a teacher file: it would count twice in the ensemble")
    rows = [np.array([c.index[i] for i in ids]) for c in caches]
    size = int(first.meta["spec"]["input_size"])
    with claim(out, overwrite), new_cache(out) as tmp:
        with logits_writer(tmp / LOGITS, len(ids), size) as write:
            for s in tqdm(range(0, len(ids), chunk), desc="merge caches", unit="chunk", leave=False):
                z = sum(wc * c.logits[r[s : s + chunk]].astype(np.float32) for c, r, wc in zip(caches, rows, w))
                write(z)
        build_s = round(time.perf_counter() - t0, 1)
        batch = {c.meta.get("batch_size") for c in caches}
        source = {"weights": tw, "merged_from": [str(c.path) for c in caches], **({"batch_size": batch.pop()} if len(batch) == 1 else {})}
        meta = cache_meta(teachers, first.meta["spec"], ids, fps, build_s, **source)
        write_meta(tmp, meta)
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


def build_cache_from_probabilities(
    prob_dir: Path, data_paths, unlabelled_paths, input_size: int, out: Path, overwrite: bool, eps: float = 1e-4
) -> dict:
    """Black-box teacher: per-image probability maps -> logits = log(p / (1 - p)), p clipped to [eps, 1 - eps].

    A 101x101 map is reflect-padded to the input size like the images. No flipped view exists, so
    view 1 is the mirrored map: the teacher is assumed to be flip-equivariant (see the README).
    """
    t0 = time.perf_counter()
    out = Path(out)
    check_out(out, overwrite)
    if not prob_dir.is_dir():
        raise UserError(f"probability folder {prob_dir} does not exist")
    spec = make_spec(input_size, "pad")
    ids, _, fps = collect_images(data_paths, unlabelled_paths)
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
    with claim(out, overwrite):
        source = {"probabilities": str(prob_dir), "eps": eps, "flip_view": "mirrored map"}
        build_s = round(time.perf_counter() - t0, 1)
        meta = cache_meta([], {**spec, "model_name": "blackbox"}, ids, fps, build_s, MIRRORED_VIEWS, source=source)
        write_cache(out, logits, meta)
    return meta


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--teacher", action="extend", nargs="+", help="teacher .keras; several for an ensemble (--teacher A B or --teacher A --teacher B)"
    )
    ap.add_argument("--teacher-weights", type=float, nargs="+", default=None, help="ensemble weights, one per --teacher (default equal)")
    src.add_argument(
        "--from-caches",
        action="extend",
        nargs="+",
        help="an ensemble's cache from its members' caches (mean logits, no teacher run again; --teacher-weights: one per cache)",
    )
    src.add_argument("--from-probabilities", help="folder of <id>.png (8/16-bit) or <id>.npy probability maps from a black-box teacher")
    ap.add_argument("--input-size", type=int, default=128, help="with --from-probabilities: the students' input size")
    ap.add_argument("--data", action="extend", nargs="+", default=[], help="labelled data folder(s) or .npz (--data A B or repeated)")
    ap.add_argument(
        "--unlabelled", action="extend", nargs="+", default=[], help="unlabelled image folder(s) or .npz (--unlabelled A B or repeated)"
    )
    ap.add_argument("--out", required=True, help="cache folder (logits.npy + meta.json); the students' --teacher-cache")
    ap.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    ap.add_argument(
        "--batch-size",
        type=int,
        default=BATCH,
        help=f"images per teacher forward pass (default {BATCH}, the bits of every earlier cache); 16 halves the peak memory",
    )
    args = ap.parse_args(argv)
    if not 1 <= args.batch_size <= CHUNK:
        raise UserError(f"--batch-size {args.batch_size} must be between 1 and {CHUNK}")
    out = Path(args.out)
    check_out(out, args.overwrite)
    if args.from_caches:
        if args.data or args.unlabelled:
            raise UserError("--from-caches takes its images from the caches: leave out --data and --unlabelled")
        meta = merge_caches(args.from_caches, out, args.overwrite, args.teacher_weights)
        what = f"mean logits of {len(args.from_caches)} caches ({len(meta['teachers'])} teachers)"
    elif not args.data:
        raise UserError("--data is required (the labelled images)")
    elif args.from_probabilities:
        meta = build_cache_from_probabilities(
            Path(args.from_probabilities), args.data, args.unlabelled, args.input_size, out, args.overwrite
        )
        what = f"black-box probabilities from {args.from_probabilities}"
    else:
        meta = build_cache(args.teacher, args.data, args.unlabelled, out, args.overwrite, args.teacher_weights, batch=args.batch_size)
        what = f"logits of {len(args.teacher)} teacher(s)"
    size = (out / LOGITS).stat().st_size / 1e6
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux
    print(
        f"cached {what} for {meta['n']} images x 2 views (float16, {size:.1f} MB) -> {out} "
        f"(built in {meta['build_s']:.1f} s, peak RSS {rss:.0f} MB)",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    run(main)
