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

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from common import io  # noqa: E402
from common.cli import UserError, run  # noqa: E402

FORMAT = "tgs-teacher-cache/1"


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class TeacherCache:
    def __init__(self, path):
        self.path = Path(path)
        meta_path, arr_path = self.path / "meta.json", self.path / "logits.npy"
        if not meta_path.exists() or not arr_path.exists():
            raise UserError(f"{self.path} is not a teacher cache (needs meta.json and logits.npy)")
        try:
            self.meta = json.loads(meta_path.read_text())
            self.logits = np.load(arr_path, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise UserError(f"cannot read teacher cache {self.path}: {e}") from None
        if self.meta.get("format") != FORMAT or self.logits.shape[0] != len(self.meta["ids"]):
            raise UserError(f"teacher cache {self.path} is damaged or of another format")
        self.index = {i: k for k, i in enumerate(self.meta["ids"])}

    def check(self, teachers, spec: dict) -> None:
        """Refuse a cache made from other teacher files or other preprocessing."""
        if teachers:
            want = sorted(file_sha256(t) for t in teachers)
            if want != sorted(t["sha256"] for t in self.meta["teachers"]):
                raise UserError(f"teacher cache {self.path} was made from other teacher file(s) than {', '.join(map(str, teachers))}")
        for k in ("input_size", "resize_mode"):
            if self.meta["spec"][k] != spec[k]:
                raise UserError(f"teacher cache {self.path} has {k}={self.meta['spec'][k]}, the run uses {spec[k]}")

    def take(self, ids) -> np.ndarray:
        """(N, 2, S, S, 1) float16 logits for these ids, in order."""
        missing = [i for i in ids if i not in self.index]
        if missing:
            raise UserError(f"teacher cache {self.path} does not cover {len(missing)} of the run's images (first: {missing[0]})")
        sel = np.array([self.index[i] for i in ids], dtype=np.int64)
        return np.asarray(self.logits[sel])[..., None]


def teacher_logits(teachers, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Mean logits of the teachers for x (N, S, S, 1) -> (N, S, S)."""
    from tqdm import tqdm

    from common.unet import logits_model

    heads = [logits_model(t) for t in teachers]
    out = np.empty(x.shape[:3], np.float32)
    for s in tqdm(range(0, len(x), batch_size), desc="teacher logits", unit="batch", leave=False):
        xb = x[s : s + batch_size]
        out[s : s + batch_size] = np.mean([h.predict(xb, verbose=0)[..., 0] for h in heads], axis=0)
    return out


def build_cache(teacher_paths, data_paths, unlabelled_paths, out: Path, overwrite: bool) -> dict:
    from data.pipeline import prep_images
    from data.tgs import load_data, load_unlabelled
    from teacher.soft import load_teacher

    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"cache dir {out} is not empty; pass --overwrite to replace it")
    teachers = [load_teacher(t) for t in teacher_paths]
    shapes = {tuple(t.inputs[0].shape[1:]) for t in teachers}
    if len(shapes) > 1:
        raise UserError(f"the teachers take different input sizes: {sorted(shapes)}")
    side = Path(teacher_paths[0]).with_name(Path(teacher_paths[0]).name + ".json")
    from data.pipeline import make_spec

    spec = json.loads(side.read_text()) if side.exists() else make_spec(int(teachers[0].inputs[0].shape[1]), "pad")
    parts = [load_data(p) for p in data_paths] + [load_unlabelled(u) for u in unlabelled_paths]
    ids, images = [], []
    for p in parts:
        for i, im in zip(p.ids, p.images):
            if i not in ids:
                ids.append(i)
                images.append(im)
    x = prep_images(np.stack(images), spec)
    logits = np.stack([teacher_logits(teachers, x), teacher_logits(teachers, x[:, :, ::-1])], axis=1).astype(np.float16)
    out.mkdir(parents=True, exist_ok=True)
    with io.atomic_path(out / "logits.npy", suffix=".npy") as tmp:
        np.save(tmp, logits)
    meta = {"format": FORMAT, "teachers": [{"path": str(t), "sha256": file_sha256(t)} for t in teacher_paths],
            "spec": spec, "n": len(ids), "views": ["image", "hflip"], "ids": ids}
    io.write_json(out / "meta.json", meta)
    return meta


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", action="append", required=True, help="teacher .keras (repeat for an ensemble)")
    ap.add_argument("--data", action="append", required=True, help="labelled data folder or .npz (repeatable)")
    ap.add_argument("--unlabelled", action="append", default=[], help="unlabelled image folder or .npz (repeatable)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out)
    meta = build_cache(args.teacher, args.data, args.unlabelled, out, args.overwrite)
    size = (out / "logits.npy").stat().st_size / 1e6
    print(f"cached logits of {len(args.teacher)} teacher(s) for {meta['n']} images x 2 views (float16, {size:.1f} MB) -> {out}")
    return 0


if __name__ == "__main__":
    run(main)
