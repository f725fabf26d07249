"""The teacher-output cache's format, written and read here: the files, their layout, meta.json, the writer, the reader.

A cache dir holds two files. LOGITS = logits.npy: (N, 2, S, S) float16, np.save's layout (a version 1.0 header,
then the rows in order), row j = image j of meta's "ids", view 0 the image's logits, view 1 those of its horizontal
flip in flipped orientation (a black-box cache: the mirrored map); read memory-mapped (`TeacherCache`) or per batch by
plain reads (`CachedRows`). META = meta.json (`cache_meta`): format, teacher files and their SHA-256, ensemble weights,
the predict batch size (since 2026-11-28), preprocessing spec, ids, views, and a fingerprint per image (a 64-bit
BLAKE2b of its 101x101 uint8 pixels, aligned with ids), the build time. Written as a whole (`new_cache`: a temp dir
swapped into place), the logits all at once (`write_cache`) or chunk by chunk (`logits_writer`); who computes them:
`python -m teacher.cache` (teacher/cache.py).

`TeacherCache.check` refuses a cache that was made from other teacher files,
other weights or other preprocessing than the run asks for; `TeacherCache.take(ids, images)` one
whose logits belong to other pixels under the same ids (caches of earlier versions have no
fingerprints and are taken as they are). `TeacherCache(path, tta=True)` (distill_train.py --teacher-tta)
gives flip-averaged logits instead of the two views (`flip_average`); refused for a black-box cache,
whose flipped view is only the mirrored map.
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from common import io
from common.cli import UserError
from common.io import file_sha256

FORMAT = "tgs-teacher-cache/1"
FINGERPRINT = "blake2b-64 of the 101x101 uint8 image"
LOGITS, META = "logits.npy", "meta.json"  # the cache dir's two files
DTYPE = np.float16  # the stored logits
VIEWS = ("image", "hflip")  # view 0, view 1: the teacher's output on the image and on its flip
MIRRORED_VIEWS = ("image", "hflip (mirrored)")  # a black-box cache's: view 1 is the mirrored map


def fingerprint(image) -> str:
    """A 64-bit hash (16 hex digits) of one image's uint8 pixels: same ids, other pixels -> other fingerprints."""
    return hashlib.blake2b(np.ascontiguousarray(image, dtype=np.uint8).tobytes(), digest_size=8).hexdigest()


# ---- writing ------------------------------------------------------------------------------------------


def teacher_files(paths, names=()) -> list[dict]:
    """meta.json's "teachers": each teacher file's path and SHA-256 (what `TeacherCache.check` compares), and its model
    name where `names` gives them (what run names call an ensemble of several kinds: unet16_resunet8)."""
    names = list(names) or [""] * len(paths)
    return [{"path": str(t), "sha256": file_sha256(t), **({"model_name": n} if n else {})} for t, n in zip(paths, names)]


def cache_meta(teachers: list[dict], spec: dict, ids: list, fingerprints: list, build_s: float, views=VIEWS, **source) -> dict:
    """meta.json of a cache of these ids: `teachers` (teacher_files; [] for black-box probabilities), `source`
    what else says where the logits came from (weights and batch_size of teachers; "source" of probabilities)."""
    return {
        "format": FORMAT,
        "teachers": teachers,
        **source,
        "spec": spec,
        "n": len(ids),
        "views": list(views),
        "ids": ids,
        "fingerprint": FINGERPRINT,
        "fingerprints": fingerprints,
        "build_s": build_s,
    }


@contextmanager
def new_cache(out: Path):
    """Yields a fresh temp dir next to `out` (`.OUT.partial-<pid>`) to write LOGITS (`logits_writer`) and META
    (`write_meta`) into; swapped into place as one when the block ends (common.io.atomic_dir), so a kill at any
    moment leaves the old cache or the new one, never new logits under old meta."""
    with io.atomic_dir(out) as tmp:
        yield tmp


@contextmanager
def logits_writer(path: Path, n: int, size: int):
    """LOGITS written in row order: yields `write(rows)`, which appends rows (k, 2, size, size) of the next images,
    stored as float16; `n` rows in all. The file holds np.save's bytes of the whole array (its version 1.0 header,
    then the rows) by plain writes: a memory map's written pages would count in the RSS (1.4 GB for 21,200 images)."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(DTYPE)), "fortran_order": False, "shape": (n, 2, size, size)}
    written = 0
    with io.naming(path), open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)

        def write(rows: np.ndarray) -> None:
            nonlocal written
            if rows.shape[1:] != (2, size, size):
                raise ValueError(f"cache rows of shape {rows.shape[1:]}, the cache holds (2, {size}, {size})")
            f.write(rows.astype(DTYPE).data)
            written += len(rows)

        yield write
    if written != n:
        raise ValueError(f"{written} cache rows written into {path}, its header says {n}")


def write_meta(folder: Path, meta: dict) -> None:
    io.write_json(Path(folder) / META, meta)


def write_cache(out: Path, logits: np.ndarray, meta: dict) -> None:
    """A cache of logits (N, 2, S, S) computed all at once: LOGITS and META into a new dir (`new_cache`)."""
    with new_cache(out) as tmp:
        with logits_writer(tmp / LOGITS, len(logits), logits.shape[-1]) as write:
            write(logits)
        write_meta(tmp, meta)


# ---- reading ------------------------------------------------------------------------------------------


class TeacherCache:
    def __init__(self, path, tta: bool = False):
        self.path = Path(path)
        meta_path, arr_path = self.path / META, self.path / LOGITS
        if not meta_path.exists() or not arr_path.exists():
            raise UserError(f"{self.path} is not a teacher cache (needs {META} and {LOGITS})")
        try:
            self.meta = json.loads(meta_path.read_text())
            self.logits = np.load(arr_path, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise UserError(f"cannot read teacher cache {self.path}: {e}") from None
        fps = self.meta.get("fingerprints")
        if (
            self.meta.get("format") != FORMAT
            or self.logits.shape[0] != len(self.meta["ids"])
            or (fps is not None and len(fps) != len(self.meta["ids"]))
        ):
            raise UserError(f"teacher cache {self.path} is damaged or of another format")
        self.index = {i: k for k, i in enumerate(self.meta["ids"])}
        self.tta = bool(tta)
        if self.tta and not self.has_flip_view:
            raise UserError(
                f"--teacher-tta needs the teacher's own output on the flipped images, and teacher cache {self.path} holds "
                "black-box probabilities whose flipped view is the mirrored map (its flip average is the map itself); "
                "leave --teacher-tta out or build the cache from the teacher with `python -m teacher.cache --teacher ...`"
            )

    @property
    def has_flip_view(self) -> bool:
        """Whether view 1 is the teacher's output on the flipped image (a black-box cache's is the mirrored map)."""
        return bool(self.meta["teachers"]) and tuple(self.meta.get("views", VIEWS)) == VIEWS

    @property
    def weights(self) -> list[float]:
        """The ensemble weights the cached logits were averaged with (normalised; equal when unrecorded)."""
        n = len(self.meta["teachers"])
        return normalise_weights(self.meta.get("weights") or [1.0] * n) if n else []

    @property
    def label(self) -> str:
        """What the soft target is, for run names: "unet8", "unet8x2" (ensemble), "unet8x2w0.75-0.25", "blackbox"."""
        if not self.meta["teachers"]:
            return "blackbox"
        kind = self.meta["spec"].get("model_name", "cached")  # caches that name no teacher's model: the spec's
        return ensemble_label([t.get("model_name") or kind for t in self.meta["teachers"]], self.weights)

    def check(self, teachers, spec: dict, weights=None) -> None:
        """Refuse a cache made from other teacher files, other ensemble weights or other preprocessing."""
        if teachers and not self.meta["teachers"]:
            raise UserError(f"teacher cache {self.path} holds black-box probabilities, not the output of {', '.join(map(str, teachers))}")
        if weights and not teachers:
            raise UserError("--teacher-weights with --teacher-cache needs the --teacher files too (the weights pair with them)")
        if teachers:
            want = [file_sha256(t) for t in teachers]
            have = [t["sha256"] for t in self.meta["teachers"]]
            if sorted(want) != sorted(have):
                raise UserError(f"teacher cache {self.path} was made from other teacher file(s) than {', '.join(map(str, teachers))}")
            if weights:
                asked = dict(zip(want, normalise_weights(weights)))
                cached = dict(zip(have, self.weights))
                if any(abs(asked[h] - cached[h]) > 1e-6 for h in have):
                    raise UserError(
                        f"teacher cache {self.path} averaged its teachers with weights "
                        f"{' '.join(f'{w:g}' for w in self.weights)}, not --teacher-weights {' '.join(f'{w:g}' for w in weights)}; "
                        "build a cache with `python -m teacher.cache ... --teacher-weights` or leave --teacher-cache out"
                    )
        for k in ("input_size", "resize_mode"):
            if self.meta["spec"][k] != spec[k]:
                raise UserError(f"teacher cache {self.path} has {k}={self.meta['spec'][k]}, the run uses {spec[k]}")

    def select(self, ids, images=None) -> np.ndarray:
        """The cache rows of these ids (int64, aligned with ids), after the coverage and fingerprint checks of `take`."""
        ids = list(ids)
        missing = [i for i in ids if i not in self.index]
        if missing:
            raise UserError(f"teacher cache {self.path} does not cover {len(missing)} of the run's images (first: {missing[0]})")
        sel = np.array([self.index[i] for i in ids], dtype=np.int64)
        have = self.meta.get("fingerprints")
        if images is not None and have is not None:
            if len(images) != len(ids):
                raise ValueError(f"take: {len(images)} images for {len(ids)} ids")
            for i, k, im in zip(ids, sel, images):
                if fingerprint(im) != have[k]:
                    raise UserError(
                        f"teacher cache {self.path} was made from other pixels for image {i} than the run's data "
                        "(same id, other image); rebuild it with `python -m teacher.cache` from this data"
                    )
        return sel

    def rows(self, ids, images=None) -> CachedRows:
        """Like `take`, but nothing is read now: `CachedRows.gather` reads a batch's rows from logits.npy when asked, so
        memory does not grow with the number of images (the unlabelled images' logits: 1.2 GB for 18,000)."""
        return CachedRows(self.path / LOGITS, self.logits, self.select(ids, images), self.tta)

    def take(self, ids, images=None) -> np.ndarray:
        """(N, 2, S, S, 1) float16 logits for these ids, in order; with `tta` (--teacher-tta) both views are
        the flip-averaged logits (`flip_average`): view 0 in the image's orientation, view 1 its mirror.

        With images ((N, 101, 101) uint8, aligned with ids), refuse a cache whose logits were computed
        from other pixels under one of these ids (a cache without fingerprints is not checked)."""
        views = np.asarray(self.logits[self.select(ids, images)])
        if self.tta:
            flip_average(views)
        return views[..., None]


class CachedRows:
    """The cached logits of some images, read per batch from logits.npy by plain reads (os.pread), not kept in memory.

    `gather(rows, out)`: row r = 2 * j + v is image j's view v (0: the image, 1: its flip, flipped orientation), as in
    the arrays `take` returns, reshaped to (2N, S, S, 1); with `tta` the flip-averaged views (`flip_average`, the same
    float16 values). Plain reads go through the page cache and do not count in the process's RSS, where a memory map's
    touched pages would (an epoch touches most of them). len() is the number of rows (2N), as for the arrays."""

    def __init__(self, path, logits: np.ndarray, sel: np.ndarray, tta: bool = False):
        self.path, self.sel, self.tta = Path(path), np.asarray(sel, np.int64), bool(tta)
        self.offset, self.size = int(logits.offset), int(logits.shape[-1])
        self.view_bytes = self.size * self.size * 2
        self.shape = (2 * len(self.sel), self.size, self.size, 1)
        self.dtype = np.dtype(np.float16)
        self._fd = None

    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self):  # a worker process opens its own file
        return {**self.__dict__, "_fd": None}

    def _read(self, k: int, view: int) -> np.ndarray:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        pos = self.offset + (2 * int(self.sel[k]) + view) * self.view_bytes
        buf = os.pread(self._fd, self.view_bytes, pos)
        if len(buf) != self.view_bytes:
            raise UserError(f"teacher cache {self.path} is shorter than its header says (damaged)")
        return np.frombuffer(buf, np.float16).reshape(self.size, self.size)

    def gather(self, rows, out: np.ndarray) -> np.ndarray:
        """out[i] = row rows[i] (float16 (len(rows), S, S, 1)); returns out."""
        for i, r in enumerate(np.asarray(rows, np.int64)):
            k, v = divmod(int(r), 2)
            if self.tta:  # both views of the image, through flip_average itself
                out[i, ..., 0] = flip_average(np.stack([self._read(k, 0), self._read(k, 1)])[None])[0, v]
            else:
                out[i, ..., 0] = self._read(k, v)
        return out

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)


def flip_average(views: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """In place: (N, 2, S, S) logits of each image (view 0) and of its flip (view 1, flipped orientation) ->
    view 0 = (z(x) + flip(z(flip(x)))) / 2, the flip-averaged logits in the image's orientation, view 1 = its
    mirror, so a flipped training view gets the same map flipped. Averaged in float32 (exact for float16
    inputs), stored in the array's dtype (one rounding to float16); `chunk` images at a time."""
    for s in range(0, len(views), chunk):
        v = views[s : s + chunk]
        m = (v[:, 0].astype(np.float32) + v[:, 1, :, ::-1].astype(np.float32)) / 2
        v[:, 0] = m
        v[:, 1] = m[:, :, ::-1]
    return views


def normalise_weights(weights) -> list[float]:
    w = [float(x) for x in weights]
    if not w or min(w) < 0 or sum(w) <= 0 or not all(np.isfinite(w)):
        raise UserError(f"ensemble weights {w} must be non-negative numbers with a positive sum")
    return [x / sum(w) for x in w]


def ensemble_label(names, weights=None) -> str:
    """Run-name part for a soft target from these teachers: unet8, unet8x2, unet8_unet16, unet8x2w0.75-0.25."""
    names = list(names)
    if not names:
        return "none"
    base = names[0] if len(names) == 1 else (f"{names[0]}x{len(names)}" if len(set(names)) == 1 else "_".join(names))
    w = normalise_weights(weights) if weights else None
    if w and len(w) > 1 and max(w) - min(w) > 1e-9:
        base += "w" + "-".join(f"{x:.3g}" for x in w)
    return base
