"""Read the Kaggle TGS Salt layout, and the compact `.npz` cache made by `data.prepare`.

    DIR/train/images/<id>.png   101x101 8-bit grayscale images (RGB with equal channels in the real set),
                                read by pi/image_io.py (the Pi's reader: its docstring has the table of modes)
    DIR/train/masks/<id>.png    101x101 masks, 16-bit 0/65535 in the real set; any non-zero = salt
    DIR/train.csv               id,rle_mask (1-indexed, column-major); used when masks/ is absent
    DIR/depths.csv              id,z (optional)
    DIR/test/images/<id>.png    unlabelled images (optional)

Every problem is a one-line `UserError` naming the file or value.
"""

from __future__ import annotations

import contextlib
import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from common.cli import UserError
from pi.image_io import ImageError, read_gray
from pi.tgs_common import ORIG_SIZE, rle_decode


@dataclass
class TgsData:
    ids: list  # image ids (file stems)
    images: np.ndarray  # (N, 101, 101) uint8 grayscale
    masks: np.ndarray | None  # (N, 101, 101) bool, None for unlabelled images
    depths: np.ndarray  # (N,) float32, NaN where unknown
    source: str = ""
    files: list | None = None  # the PNG file of each image (None when read from a .npz), for messages

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, ids) -> TgsData:
        index = {i: k for k, i in enumerate(self.ids)}
        missing = [i for i in ids if i not in index]
        if missing:
            raise UserError(f"{len(missing)} split ids are not in {self.source} (first: {missing[0]})")
        sel = np.array([index[i] for i in ids], dtype=np.int64)
        masks = None if self.masks is None else self.masks[sel]
        files = None if self.files is None else [self.files[k] for k in sel]
        return TgsData(list(ids), self.images[sel], masks, self.depths[sel], self.source, files)

    def where(self, k: int) -> str:
        """Where image k came from, for messages: its PNG file, or the source and the id."""
        if self.files is not None:
            return str(self.files[k])
        return f"{self.source} (id {self.ids[k]})" if self.source else f"image id {self.ids[k]}"


def read_png(path: Path, what: str = "image") -> np.ndarray:
    """Read a PNG as its raw numpy array (masks, probability maps: any bit depth, no mode rules);
    corrupt/truncated files raise a UserError naming the file. Images go through `read_image`."""
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.array(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise UserError(f"cannot read {what} {path}: {e}") from None
    return arr


def read_image(path: Path) -> np.ndarray:
    """A 101x101 8-bit grayscale PNG -> (101, 101) uint8, by the same rules as the Pi (pi/image_io.py's table)."""
    try:
        return read_gray(path, ORIG_SIZE)
    except ImageError as e:
        raise UserError(str(e)) from None


def read_mask(path: Path) -> np.ndarray:
    arr = read_png(path, "mask")
    if arr.ndim == 3:
        arr = arr[..., 0]
    if arr.shape != (ORIG_SIZE, ORIG_SIZE):
        raise UserError(f"mask {path} is {arr.shape[-1]}x{arr.shape[0]}, expected {ORIG_SIZE}x{ORIG_SIZE}")
    return arr != 0


def list_pngs(folder: Path, what: str) -> list[Path]:
    if not folder.is_dir():
        raise UserError(f"{what} folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png" and not p.name.startswith("."))
    if not files:
        raise UserError(f"{what} folder {folder} holds no .png images")
    return files


@contextlib.contextmanager
def _progress(it, total, desc, show):
    """`with _progress(...) as it: for x in it: ...`: a tqdm bar, closed (its line cleared) before an error
    raised in the loop propagates, so `error: ...` is printed on a line of its own, not on the bar's."""
    if not show:
        yield it
        return
    from tqdm import tqdm

    bar = tqdm(it, total=total, desc=desc, unit="img", leave=False)
    try:
        yield bar
    finally:
        bar.close()


def index_image_folder(folder) -> TgsData:
    """A folder of PNGs (or a folder with an images/ subfolder) as ids and files, no pixels read (`images` is None):
    for readers that stream the images (teacher.cache)."""
    folder = Path(folder)
    if (folder / "images").is_dir():
        folder = folder / "images"
    files = list_pngs(folder, "image")
    ids = [p.stem for p in files]
    return TgsData(ids, None, None, np.full(len(ids), np.nan, np.float32), str(folder), files)


def iter_images(index: TgsData, progress: bool = True, verb: str = "reading"):
    """The images of an `index_image_folder` one by one, read with a progress bar (closed before an error propagates)."""
    with _progress(index.files, len(index), f"{verb} {index.source}", progress) as bar:
        for p in bar:
            yield read_image(p)


def load_image_folder(folder, progress: bool = True) -> TgsData:
    """Unlabelled images: a folder of PNGs (or a folder with an images/ subfolder)."""
    index = index_image_folder(folder)
    images = np.empty((len(index), ORIG_SIZE, ORIG_SIZE), np.uint8)  # filled in place: no list of arrays + a stacked copy
    for k, im in enumerate(iter_images(index, progress)):
        images[k] = im
    index.images = images
    return index


def read_rle_csv(path: Path) -> dict:
    """train.csv -> {id: rle string}; header must be id,rle_mask."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {path}: {e}") from None
    if not rows or [c.strip() for c in rows[0][:2]] != ["id", "rle_mask"]:
        raise UserError(f"{path}: expected header 'id,rle_mask'")
    out = {}
    for n, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        out[row[0].strip()] = row[1].strip() if len(row) > 1 else ""
    return out


def read_depths(path: Path) -> dict:
    out = {}
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or "id" not in reader.fieldnames or "z" not in reader.fieldnames:
                raise UserError(f"{path}: expected header 'id,z'")
            for n, row in enumerate(reader, start=2):
                try:
                    z = float(row["z"])
                except (TypeError, ValueError):
                    raise UserError(f"{path} line {n}: depth {row['z']!r} of {row['id']} is not a number") from None
                if not math.isfinite(z):
                    raise UserError(f"{path} line {n}: depth of {row['id']} is {z}")
                out[row["id"]] = z
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {path}: {e}") from None
    return out


def load_tgs_dir(path, progress: bool = True) -> TgsData:
    """Labelled training images of a Kaggle TGS folder, checked for the real set's quirks."""
    root = Path(path)
    if not root.exists():
        raise UserError(f"data dir {root} does not exist")
    if not root.is_dir():
        raise UserError(f"data path {root} is neither a folder nor a .npz cache")
    img_dir, mask_dir, csv_path = root / "train" / "images", root / "train" / "masks", root / "train.csv"
    if not img_dir.is_dir():
        raise UserError(f"data dir {root} has no train/images folder (expected the Kaggle TGS layout)")
    files = list_pngs(img_dir, "image")
    ids = [p.stem for p in files]
    rles = read_rle_csv(csv_path) if csv_path.exists() else None
    if rles is not None:
        extra = sorted(set(rles) - set(ids))
        if extra:
            raise UserError(f"{csv_path} lists {len(extra)} ids without an image in {img_dir} (first: {extra[0]})")
    if not mask_dir.is_dir() and rles is None:
        raise UserError(f"{root} has neither train/masks/ nor train.csv: no labels")
    images = np.empty((len(ids), ORIG_SIZE, ORIG_SIZE), np.uint8)
    masks = np.empty((len(ids), ORIG_SIZE, ORIG_SIZE), bool)
    with _progress(files, len(files), f"reading {root}", progress) as bar:
        for k, p in enumerate(bar):
            images[k] = read_image(p)
            if mask_dir.is_dir():
                mp = mask_dir / p.name
                if not mp.exists():
                    raise UserError(f"image {p} has no mask {mp}")
                masks[k] = read_mask(mp)
            if rles is not None:
                if p.stem not in rles:
                    raise UserError(f"image {p} has no row in {csv_path}")
                try:
                    m = rle_decode(rles[p.stem], (ORIG_SIZE, ORIG_SIZE))
                except ValueError as e:
                    raise UserError(f"{csv_path}: bad RLE for {p.stem}: {e}") from None
                if not mask_dir.is_dir():
                    masks[k] = m
                elif not np.array_equal(m, masks[k]):
                    raise UserError(f"{csv_path}: RLE of {p.stem} disagrees with {mask_dir / p.name}")
    depths = np.full(len(ids), np.nan, np.float32)
    if (root / "depths.csv").exists():
        z = read_depths(root / "depths.csv")
        depths[:] = [z.get(i, np.nan) for i in ids]
    return TgsData(ids, images, masks, depths, str(root), files)


# ---- compact cache -------------------------------------------------------------------------


def save_npz(data: TgsData, path, test: TgsData | None = None) -> None:
    """uint8 images, bit-packed masks, ids, depths (and optional unlabelled test images), atomically."""
    from common.io import atomic_path

    arrays = {
        "ids": np.array(data.ids),
        "images": data.images,
        "masks": np.packbits(data.masks.reshape(len(data), -1), axis=1),
        "depths": data.depths,
        "source": np.array(data.source),
    }
    if test is not None:
        arrays.update(test_ids=np.array(test.ids), test_images=test.images)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays)


def load_npz(path, part: str = "train") -> TgsData:
    path = Path(path)
    try:
        z = np.load(path, allow_pickle=False)
        if part == "test":
            if "test_ids" not in z:
                raise UserError(f"cache {path} holds no unlabelled test images")
            ids = [str(i) for i in z["test_ids"]]
            return TgsData(ids, z["test_images"], None, np.full(len(ids), np.nan, np.float32), f"{path}:test")
        n = len(z["ids"])
        masks = np.unpackbits(z["masks"], axis=1, count=ORIG_SIZE * ORIG_SIZE).reshape(n, ORIG_SIZE, ORIG_SIZE).astype(bool)
        return TgsData([str(i) for i in z["ids"]], z["images"], masks, z["depths"], str(path))
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"cannot read cache {path}: {e}") from None


def load_data(path, progress: bool = True) -> TgsData:
    """Labelled data from a Kaggle folder or a `.npz` cache."""
    path = Path(path)
    if path.suffix == ".npz":
        if not path.exists():
            raise UserError(f"cache {path} does not exist")
        return load_npz(path)
    return load_tgs_dir(path, progress)


def check_not_labelled(unlabelled: TgsData, labelled) -> None:
    """Refuse an unlabelled image under the id (file stem) of a labelled one, naming both files: it would
    enter training twice, or put a validation image into the soft term."""
    where = {}
    for part in labelled:
        for k, i in enumerate(part.ids):
            where.setdefault(i, (part, k))
    for k, i in enumerate(unlabelled.ids):
        if i in where:
            part, j = where[i]
            raise UserError(
                f"unlabelled image {unlabelled.where(k)} has the id of the labelled image {part.where(j)}; "
                "an image is labelled or unlabelled, not both (remove or rename it)"
            )


def join_unlabelled(parts, labelled=()) -> TgsData | None:
    """Several unlabelled inputs as one set, each id once, in input order (None for no inputs).

    An id in several inputs is kept once when its pixels agree and refused when they differ (as in the
    teacher cache); an id of a labelled image (`labelled`: TgsData parts) is refused (`check_not_labelled`)."""
    parts = list(parts)
    if not parts:
        return None
    for part in parts:
        check_not_labelled(part, labelled)
    seen, rows = {}, []
    for p, part in enumerate(parts):
        for k, i in enumerate(part.ids):
            if i not in seen:
                seen[i] = (p, k)
                rows.append((p, k))
            elif not np.array_equal(part.images[k], parts[seen[i][0]].images[seen[i][1]]):
                first = parts[seen[i][0]].where(seen[i][1])
                raise UserError(
                    f"unlabelled image {part.where(k)} has the id of {first} but other pixels; "
                    "each image needs its own id (rename one, or leave one input out)"
                )
    if len(parts) == 1 and len(rows) == len(parts[0]):
        return parts[0]
    images = np.empty((len(rows),) + parts[0].images.shape[1:], np.uint8)
    for n, (p, k) in enumerate(rows):
        images[n] = parts[p].images[k]
    files = [parts[p].files[k] if parts[p].files is not None else parts[p].where(k) for p, k in rows]
    return TgsData(
        [parts[p].ids[k] for p, k in rows],
        images,
        None,
        np.array([parts[p].depths[k] for p, k in rows], np.float32),
        ", ".join(str(part.source) for part in parts),
        files,
    )


def unlabelled_folder(path: Path) -> Path:
    """An --unlabelled folder: itself, or a Kaggle folder's test/images."""
    return path / "test" / "images" if (path / "test" / "images").is_dir() else path


def count_unlabelled(paths) -> int:
    """How many images `--unlabelled PATHS` would give (ids counted once), without reading pixels: for run names."""
    ids = set()
    for path in map(Path, paths):
        if path.suffix == ".npz":
            try:
                with np.load(path, allow_pickle=False) as z:
                    ids.update(str(i) for i in z["test_ids"]) if "test_ids" in z else None
            except (OSError, ValueError) as e:
                raise UserError(f"cannot read cache {path}: {e}") from None
            continue
        ids.update(p.stem for p in list_pngs(unlabelled_folder(path), "unlabelled"))
    return len(ids)


def load_unlabelled(path, progress: bool = True) -> TgsData:
    """Unlabelled images from a folder of PNGs, a Kaggle folder's test/images, or a cache's test part."""
    path = Path(path)
    if path.suffix == ".npz":
        return load_npz(path, "test")
    return load_image_folder(unlabelled_folder(path), progress)
