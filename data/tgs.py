"""Read the Kaggle TGS Salt layout, and the compact `.npz` cache made by `data.prepare`.

    DIR/train/images/<id>.png   101x101 8-bit grayscale images (RGB with equal channels in the real set),
                                read by pi/image_io.py (the Pi's reader: its docstring has the table of modes)
    DIR/train/masks/<id>.png    101x101 masks, 16-bit 0/65535 in the real set; any non-zero = salt
    DIR/train.csv               id,rle_mask (1-indexed, column-major); used when masks/ is absent
    DIR/depths.csv              id,z (optional)
    DIR/test/images/<id>.png    unlabelled images (optional)

`KaggleDownload` also reads the download as Kaggle ships it: the competition zip (train.zip and test.zip inside), or
a folder holding train.zip/test.zip next to the CSVs (data.prepare caches any of them as one .npz).

Every problem is a one-line `UserError` naming the file or value.
"""

from __future__ import annotations

import contextlib
import csv
import math
import re
import shutil
import tempfile
import zipfile
import zlib
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


def _check_data_dir(root: Path) -> None:
    """Refuse a data path that is missing or not a folder (a zip gets a hint to cache it first)."""
    if not root.exists():
        raise UserError(f"data dir {root} does not exist")
    if not root.is_dir():
        hint = ""
        if root.suffix.lower() == ".zip":
            hint = f" (a Kaggle zip: cache it first with python -m data.prepare --data {root} --out cache/tgs.npz)"
        raise UserError(f"data path {root} is neither a folder nor a .npz cache{hint}")


def _csv_mask(rles: dict, p: Path, csv_path: Path) -> np.ndarray:
    """Image `p`'s mask decoded from its train.csv RLE; a missing row or a bad RLE is a UserError."""
    if p.stem not in rles:
        raise UserError(f"image {p} has no row in {csv_path}")
    try:
        return rle_decode(rles[p.stem], (ORIG_SIZE, ORIG_SIZE))
    except ValueError as e:
        raise UserError(f"{csv_path}: bad RLE for {p.stem}: {e}") from None


def load_tgs_dir(path, progress: bool = True, source: str = "") -> TgsData:
    """Labelled training images of a Kaggle TGS folder, checked for the real set's quirks.

    `source`: what the data is called in the progress bar and TgsData.source (default: the folder)."""
    root = Path(path)
    source = source or str(root)
    _check_data_dir(root)
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
    with _progress(files, len(files), f"reading {source}", progress) as bar:
        for k, p in enumerate(bar):
            images[k] = read_image(p)
            if mask_dir.is_dir():
                mp = mask_dir / p.name
                if not mp.exists():
                    raise UserError(f"image {p} has no mask {mp}")
                masks[k] = read_mask(mp)
            if rles is not None:
                m = _csv_mask(rles, p, csv_path)
                if not mask_dir.is_dir():
                    masks[k] = m
                elif not np.array_equal(m, masks[k]):
                    raise UserError(f"{csv_path}: RLE of {p.stem} disagrees with {mask_dir / p.name}")
    depths = np.full(len(ids), np.nan, np.float32)
    if (root / "depths.csv").exists():
        z = read_depths(root / "depths.csv")
        depths[:] = [z.get(i, np.nan) for i in ids]
    return TgsData(ids, images, masks, depths, source, files)


# ---- the Kaggle download as it comes: the competition zip, a folder holding train.zip/test.zip, or unzipped ----


KAGGLE_ZIP = "tgs-salt-identification-challenge.zip"  # what `kaggle competitions download -c tgs-salt-identification-challenge` writes
# what zipfile raises on a damaged, truncated, encrypted or oddly compressed archive or member
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError, ValueError)


def _member_name(name: str) -> str | None:
    """A zip member's name without a leading ./, or None for folders and what an archiver adds (__MACOSX/, dot files)."""
    while name.startswith("./"):
        name = name[2:]
    parts = name.split("/")
    if name.endswith("/") or "__MACOSX" in parts or any(p.startswith(".") for p in parts):
        return None
    return name


def sample_ids(ids, n: int | None, seed: int | None = None) -> list[str]:
    """n of ids, sorted (all of them, sorted, when n is None or >= len(ids)): the first n in sorted order when seed is
    None (Kaggle's ids are random hex, so that is an unbiased pick, and the first 1,000 of the 18,000 test ids are the
    1,000 unlabelled images every table here used), else a seeded random n (sorted first, then
    numpy.random.default_rng(seed).choice without replacement, then sorted). The same ids for the same set of ids, n
    and seed, whatever the order they are listed in."""
    ids = sorted(ids)
    if n is None or n >= len(ids):
        return ids
    if seed is None:
        return ids[:n]
    pick = np.random.default_rng(seed).choice(len(ids), size=n, replace=False)
    return sorted(ids[k] for k in pick)


class KaggleDownload:
    """The Kaggle TGS download in whichever form it is, without unpacking it by hand; a context manager (it closes its
    zips and removes its temporary files on exit):

        DATA.zip                 the competition zip as Kaggle ships it (train.zip, test.zip, train.csv, depths.csv,
                                 sample_submission.csv; with or without a top folder; or the unzipped layout, zipped)
        DIR/train.zip, test.zip  the competition zip unzipped once, next to train.csv and depths.csv
        DIR/train/images, ...    the unzipped layout (load_tgs_dir); DIR/test.zip or DIR/test/images for the test images

    train.zip holds images/<id>.png and masks/<id>.png, test.zip images/<id>.png (under a top folder or not). Members are
    read with zipfile; the ones needed are written to a temporary folder in the Kaggle layout and read from there by
    load_tgs_dir and read_image (the Pi's rules), and messages name the member (`DATA.zip:train.zip:images/<id>.png`),
    never the temporary file. A damaged zip or a missing member is a one-line UserError.

        with KaggleDownload(path) as k:
            labelled = k.labelled()                       # TgsData of the train images and masks
            test = k.unlabelled(sample_ids(k.test_ids, 1000, seed=0))
    """

    def __init__(self, path):
        self.path = Path(path)
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._zips: list[zipfile.ZipFile] = []
        self._origin: dict[str, str] = {}  # temporary path -> where it came from
        self.train_dir: Path | None = None  # an unzipped DIR (train/images): load_tgs_dir reads it as it is
        self.test_dir: Path | None = None  # an unzipped DIR/test/images
        self._train: dict[str, dict[str, tuple]] = {}  # "images"/"masks" -> {id: (zip, member, origin)}
        self._csv: dict[str, tuple] = {}  # "train.csv"/"depths.csv" -> (zip or None, member or path, origin)
        self._test: dict[str, tuple] = {}  # id -> (zip, member, origin)
        self.train_source = str(self.path)  # where the labelled images are, for messages
        self.test_source = ""
        try:
            self._find()
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> KaggleDownload:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for z in self._zips:
            z.close()
        self._zips.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    @property
    def form(self) -> str:
        """How the download came: "zip", "folder with zips" (train.zip or test.zip in it) or "folder" (unzipped)."""
        if self.path.is_file():
            return "zip"
        return "folder" if self.train_dir is not None and not self._test else "folder with zips"

    @property
    def test_ids(self) -> list[str]:
        """Every unlabelled (test) image id, sorted; no pixels read."""
        if self.test_dir is not None:
            return sorted(p.stem for p in list_pngs(self.test_dir, "test image"))
        return sorted(self._test)

    # -- finding the parts

    def _tmpdir(self) -> Path:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="tgs-prepare-")
            self._origin[self._tmp.name] = str(self.path)
        return Path(self._tmp.name)

    def _open_zip(self, file, origin: str) -> zipfile.ZipFile:
        try:
            z = zipfile.ZipFile(file)
            names = z.namelist()
        except _ZIP_ERRORS as e:
            raise UserError(f"cannot read {origin} (a damaged or incomplete download? download it again): {_zip_reason(e)}") from None
        if not names:
            z.close()
            raise UserError(f"{origin} is an empty zip")
        self._zips.append(z)
        return z

    def _inner_zip(self, outer: zipfile.ZipFile, member: str, origin: str) -> zipfile.ZipFile:
        """A zip inside the zip, copied to a temporary file first (zipfile seeks in it, slowly in a compressed member)."""
        tmp = self._tmpdir() / f".{len(self._zips)}.zip"
        try:
            with outer.open(member) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except _ZIP_ERRORS as e:
            raise UserError(f"cannot read {origin} (a damaged or incomplete download? download it again): {_zip_reason(e)}") from None
        return self._open_zip(tmp, origin)

    def _find(self) -> None:
        """Locate the labelled and test parts of the download, whichever form it has."""
        p = self.path
        if not p.exists():
            raise UserError(f"data {p} does not exist")
        if p.is_dir() and not (p / "train" / "images").is_dir() and not (p / "train.zip").is_file() and (p / KAGGLE_ZIP).is_file():
            self.path = p = p / KAGGLE_ZIP  # the folder `kaggle competitions download -p DIR` wrote the zip to
        if p.is_dir():
            self._find_in_folder(p)
        else:
            self._find_in_zip(p)

    def _find_in_folder(self, p: Path) -> None:
        """Locate the parts in a folder: train/images or train.zip, the CSVs, test/images or test.zip."""
        self.train_dir = p if (p / "train" / "images").is_dir() else None
        self.test_dir = p / "test" / "images" if (p / "test" / "images").is_dir() else None
        if self.train_dir is None:
            if not (p / "train.zip").is_file():
                raise UserError(
                    f"data dir {p} has neither train/images nor train.zip (expected the Kaggle TGS layout, "
                    f"or the folder {KAGGLE_ZIP} unzips to)"
                )
            self.train_source = str(p / "train.zip")
            self._train = _pngs(self._open_zip(p / "train.zip", self.train_source), self.train_source, ("images", "masks"))
            for name in ("train.csv", "depths.csv"):
                if (p / name).is_file():
                    self._csv[name] = (None, p / name, str(p / name))
        if self.test_dir is None and (p / "test.zip").is_file():
            self._test = _pngs(self._open_zip(p / "test.zip", str(p / "test.zip")), str(p / "test.zip"), ("images",))["images"]
            self.test_source = str(p / "test.zip")
        elif self.test_dir is not None:
            self.test_source = str(self.test_dir)

    def _find_in_zip(self, p: Path) -> None:
        """Locate the parts in the competition zip: train.zip or train/images/, the CSVs, test.zip or test/images/."""
        if p.suffix.lower() != ".zip" and not zipfile.is_zipfile(p):
            raise UserError(
                f"data {p} is neither a folder nor a zip: expected {KAGGLE_ZIP} (kaggle competitions download "
                "-c tgs-salt-identification-challenge), or a folder in the Kaggle layout"
            )
        outer = self._open_zip(p, str(p))
        names = _outer_names(outer)

        def where(n):
            return f"{p}:{names[n]}"

        if "train.zip" in names:
            self.train_source = where("train.zip")
            self._train = _pngs(self._inner_zip(outer, names["train.zip"], self.train_source), self.train_source, ("images", "masks"))
        elif any(n.startswith("train/images/") for n in names):
            self._train = _pngs(outer, str(p), ("train/images", "train/masks"), names)
            self._train = {"images": self._train["train/images"], "masks": self._train["train/masks"]}
        else:
            listed = ", ".join(sorted(names)[:6]) + (", ..." if len(names) > 6 else "")
            raise UserError(f"{p} holds neither train.zip nor train/images/ (it holds {listed}): expected the competition zip {KAGGLE_ZIP}")
        for name in ("train.csv", "depths.csv"):
            if name in names:
                self._csv[name] = (outer, names[name], where(name))
        if "test.zip" in names:
            self._test = _pngs(self._inner_zip(outer, names["test.zip"], where("test.zip")), where("test.zip"), ("images",))["images"]
            self.test_source = where("test.zip")
        elif any(n.startswith("test/images/") for n in names):
            self._test = _pngs(outer, str(p), ("test/images",), names)["test/images"]
            self.test_source = f"{p}:test/images"

    # -- reading

    def _extract(self, z: zipfile.ZipFile | None, member, origin: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        self._origin[str(dest)] = origin
        if z is None:  # a file of the folder
            shutil.copyfile(member, dest)
            return
        try:
            data = z.read(member)
        except _ZIP_ERRORS as e:
            raise UserError(f"cannot read {origin} (a damaged or incomplete download? download it again): {_zip_reason(e)}") from None
        dest.write_bytes(data)

    @contextlib.contextmanager
    def _named(self):
        """UserErrors raised inside name the zip members, not the temporary files they were written to."""
        try:
            yield
        except UserError as e:
            raise UserError(self.rename(str(e))) from None

    def rename(self, text: str) -> str:
        """`text` with each temporary path replaced by where its file came from."""
        if self._tmp is None:
            return text
        tmp = self._tmp.name

        def sub(m):
            path, rest = Path(m.group(0)), []
            while str(path) not in self._origin and str(path) != tmp and path != path.parent:  # e.g. a mask that is not there
                rest.insert(0, path.name)
                path = path.parent
            return "/".join([self._origin.get(str(path), str(self.path)), *rest])

        return re.sub(re.escape(tmp) + r"[^\s:;,()'\"]*", sub, text)

    def labelled(self, progress: bool = True) -> TgsData:
        """The labelled images (train/images, masks from train/masks or train.csv, depths.csv), checked by load_tgs_dir."""
        if self.train_dir is not None:
            return load_tgs_dir(self.train_dir, progress)
        root = self._tmpdir() / "tgs"
        self._origin[str(root)] = str(self.path)
        for kind, folder in (("images", root / "train" / "images"), ("masks", root / "train" / "masks")):
            entries = self._train[kind]
            self._origin[str(folder)] = next(iter(entries.values()))[2].rsplit("/", 1)[0] if entries else f"{self.train_source}:{kind}"
            if not entries:
                if kind == "images":
                    raise UserError(f"{self.train_source} holds no images/<id>.png (expected the competition's train.zip)")
                continue
            with _progress(sorted(entries.items()), len(entries), f"unpacking {self.train_source} {kind}", progress) as bar:
                for i, (z, member, origin) in bar:
                    self._extract(z, member, origin, folder / f"{i}.png")
        for name, (z, member, origin) in self._csv.items():
            self._extract(z, member, origin, root / name)
        with self._named():
            data = load_tgs_dir(root, progress, source=str(self.path))
        data.files = [self._origin.get(str(f), str(f)) for f in data.files]
        return data

    def unlabelled(self, ids, progress: bool = True) -> TgsData | None:
        """The test images of these ids (e.g. `sample_ids(self.test_ids, n, seed)`), in this order; None if there are none."""
        ids = list(ids)
        if self.test_dir is not None:
            by_id = {p.stem: p for p in list_pngs(self.test_dir, "test image")}
            files = [by_id[i] for i in ids]
            source = str(self.test_dir)
        elif self._test:
            folder = self._tmpdir() / "tgs" / "test" / "images"
            files = [folder / f"{i}.png" for i in ids]
            source = self.test_source
        else:
            return None
        index = TgsData(ids, None, None, np.full(len(ids), np.nan, np.float32), source, files)
        images = np.empty((len(ids), ORIG_SIZE, ORIG_SIZE), np.uint8)
        with self._named(), _progress(files, len(files), f"reading {source}", progress) as bar:
            for k, (i, f) in enumerate(zip(ids, bar)):
                if self.test_dir is None:
                    self._extract(*self._test[i], f)
                images[k] = read_image(f)
                if self.test_dir is None:
                    f.unlink()  # read: the temporary copy is not needed any more
        index.images = images
        if self.test_dir is None:
            index.files = [self._test[i][2] for i in ids]
        return index


def _zip_reason(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__


def _outer_names(outer: zipfile.ZipFile) -> dict[str, str]:
    """The zip's members by normalized name (normalized name -> member), one top folder around everything stripped."""
    names = {}
    for info in outer.infolist():
        name = _member_name(info.filename)
        if name is not None:
            names[name] = info.filename
    top = {n.split("/", 1)[0] for n in names}
    # one top folder around everything (the download zipped as a folder): strip it
    if len(top) == 1 and all("/" in n for n in names) and not ({"train", "test"} & top):
        cut = len(next(iter(top))) + 1
        names = {n[cut:]: m for n, m in names.items()}
    return names


def _pngs(z: zipfile.ZipFile, origin: str, kinds: tuple, names: dict | None = None) -> dict[str, dict[str, tuple]]:
    """The PNGs of a zip by kind (the folder they are in: "images", "masks"; or a path such as "train/images") and id:
    {kind: {id: (zip, member, "ORIGIN:member")}}. With one-word kinds, the last folder of the member decides (any top
    folder is allowed: train.zip's images/ or train/images/); with paths, `names` (normalized name -> member) and the
    path. Two files of one kind and id are refused."""
    if names is None:
        names = {n: m for m in z.namelist() if (n := _member_name(m)) is not None}
    out = {k: {} for k in kinds}
    for name, member in names.items():
        folder, _, file = name.rpartition("/")
        stem, dot, ext = file.rpartition(".")
        if not dot or ext.lower() != "png":
            continue
        kind = folder if "/" in kinds[0] else folder.rpartition("/")[2]
        kind = "images" if kinds == ("images",) and not folder else kind  # test.zip with its images at the top
        if kind not in out:
            continue
        if stem in out[kind]:
            raise UserError(f"{origin} holds two {kind} with the id {stem}: {out[kind][stem][1]} and {member}")
        out[kind][stem] = (z, member, f"{origin}:{member}")
    return out


# ---- compact cache -------------------------------------------------------------------------


def save_npz(data: TgsData, path, test: TgsData | None = None, meta: dict | None = None) -> None:
    """uint8 images, bit-packed masks, ids, depths (and optional unlabelled test images), atomically.

    `meta`: how the cache was made (data.prepare: source, counts, --max-unlabelled, --seed), stored as JSON under
    "prepare"; `cache_meta` reads it back."""
    import json

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
    if meta is not None:
        arrays["prepare"] = np.array(json.dumps(meta, sort_keys=True))
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays)


def cache_meta(path) -> dict:
    """How a .npz cache was made (save_npz's `meta`: source, form, labelled, unlabelled, unlabelled_total,
    max_unlabelled, seed); {} for a cache made before this was recorded.

        python -c "from data.tgs import cache_meta; print(cache_meta('cache/tgs.npz'))"
    """
    import json

    try:
        with np.load(path, allow_pickle=False) as z:
            return json.loads(str(z["prepare"])) if "prepare" in z else {}
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read cache {path}: {e}") from None


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
