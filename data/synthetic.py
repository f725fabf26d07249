"""Synthetic seismic-looking data in the exact Kaggle TGS Salt layout (the embedded default data).

    python -m data.synthetic --out runs/demo/data --n-train 400 --n-test 100 --seed 0
    # prints: wrote 400 train (240 with salt) + 100 test images to runs/demo/data

Layered, folded and sometimes faulted reflectors; in about 60% of images 1-2 salt bodies, mostly
rising from the bottom or entering from a side, with a chaotic low-reflectivity texture and layers
dragged up along their flanks. Files as in the real set: 8-bit RGB images with equal channels
(train/images, test/images), 16-bit 0/65535 masks (train/masks), train.csv (id,rle_mask: 1-indexed
column-major RLE), depths.csv (id,z for every id). Deterministic for a given seed.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from common.cli import UserError, run
from pi.tgs_common import rle_encode

SIZE = 101


def _noise(rng, shape, sigma) -> np.ndarray:
    """Gaussian-smoothed white noise, rescaled to unit standard deviation."""
    n = gaussian_filter(rng.normal(size=shape), sigma, mode="reflect")
    return n / (n.std() + 1e-12)


def _blob(rng, size) -> np.ndarray:
    """Signed field (> 0 inside) of one wobbly salt body: a dome from below, a flank from a side, or a free blob."""
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    kind = rng.choice(["dome", "side", "blob"], p=[0.55, 0.3, 0.15])
    if kind == "dome":  # top of a diapir: a (sometimes flat, sometimes steep) parabola opening downwards
        cx, top, width = rng.uniform(0, 1), rng.uniform(-0.3, 0.95), rng.uniform(0.2, 0.9)
        field = (yy - top) - np.abs((xx - cx) / width) ** rng.uniform(1.5, 2.5) * rng.uniform(0.3, 1.5)
    elif kind == "side":  # a steep flank entering from the left or right
        edge, tilt = rng.uniform(0.05, 0.85), rng.uniform(-0.6, 0.6)
        x = xx if rng.random() < 0.5 else 1 - xx
        field = edge - x + (yy - 0.5) * tilt
    else:  # a detached body, an ellipse
        cy, cx = rng.uniform(0.15, 0.85, 2)
        ry, rx = rng.uniform(0.08, 0.3, 2)
        field = 1 - np.hypot((yy - cy) / ry, (xx - cx) / rx)
        field *= min(ry, rx)
    wobble = 0.6 * _noise(rng, (size, size), 10) + 0.4 * _noise(rng, (size, size), 4)
    return field + wobble * rng.uniform(0.02, 0.07)


def _salt_mask(rng, size) -> np.ndarray:
    """1-2 salt bodies covering between about 1% and 100% of the image (never empty)."""
    for _ in range(20):
        field = _blob(rng, size)
        if rng.random() < 0.25:
            field = np.maximum(field, _blob(rng, size))
        mask = field > 0
        if mask.mean() >= 0.01:
            return mask
    return np.ones((size, size), bool)


def make_sample(rng, size: int = SIZE, with_salt: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic (image uint8 (size, size), mask bool (size, size)) pair drawn from rng."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    mask = _salt_mask(rng, size) if with_salt else np.zeros((size, size), bool)
    # depth coordinate of each pixel: gentle dip + folding varying smoothly with x (+ a little with y)
    fold_x = gaussian_filter(rng.normal(size=size), rng.uniform(12, 25), mode="reflect")
    fold_x *= rng.uniform(1, 5) / (fold_x.std() + 1e-12)
    depth = yy + xx * rng.uniform(-0.35, 0.35) + fold_x[None, :] + _noise(rng, (size, size), 15) * rng.uniform(0, 2)
    if with_salt:  # layers dragged up along the salt flanks
        depth -= gaussian_filter(mask.astype(np.float64), rng.uniform(3, 7)) * rng.uniform(3, 12)
    if rng.random() < 0.4:  # one fault: a slanted line across which the layers shift vertically
        x0, angle = rng.uniform(15, 85), rng.uniform(-0.6, 0.6)
        side = (xx - x0) * np.cos(angle) - (yy - size / 2) * np.sin(angle) > 0
        depth += np.where(side, rng.choice([-1, 1]) * rng.uniform(3, 12), 0.0)
    # reflectors: a band of frequencies, amplitude varying laterally and with depth
    freq = rng.uniform(0.25, 0.9)
    layers = np.sin(depth * freq) + rng.uniform(0.2, 0.7) * np.sin(depth * freq * rng.uniform(1.7, 2.9) + rng.uniform(0, 2 * np.pi))
    layers *= 1 + 0.35 * _noise(rng, (size, size), 12)
    img = layers
    if with_salt:  # chaotic, weakly reflective interior; a boundary reflection of random strength and sign
        chaos = 0.6 * _noise(rng, (size, size), rng.uniform(0.8, 2.0)) + 0.4 * _noise(rng, (size, size), 4)
        img = np.where(mask, chaos * rng.uniform(0.3, 0.8), img)
        edge = gaussian_filter(mask.astype(np.float64), 1.0)
        img = img + edge * (1 - edge) * 4 * rng.uniform(-1.2, 1.2)
    img = img + rng.normal(0, rng.uniform(0.1, 0.4), img.shape)
    img = (img - img.mean()) / (img.std() + 1e-6) * rng.uniform(25, 50) + rng.uniform(110, 140)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), mask


def _ids(rng, n) -> list[str]:
    """n distinct 10-character lowercase hex ids."""
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        i = f"{int(rng.integers(0, 16**10)):010x}"
        if i not in seen:
            seen.add(i)
            out.append(i)
    return out


def _save_image(g: np.ndarray, path: Path) -> None:
    Image.fromarray(np.stack([g, g, g], -1)).save(path)


def generate(out_dir, n_train: int = 400, n_test: int = 100, seed: int = 0, size: int = SIZE, empty_fraction: float = 0.4) -> dict:
    """Write the Kaggle TGS layout under out_dir; raise FileExistsError if out_dir/train is non-empty.

    Returns {"train_ids": [...], "test_ids": [...], "n_salt": number of train masks with salt}.
    Exactly round(n * empty_fraction) train (and test) images have no salt.
    """
    out = Path(out_dir)
    if (out / "train").is_dir() and any((out / "train").iterdir()):
        raise FileExistsError(f"{out / 'train'} exists and is not empty")
    rng = np.random.default_rng(seed)
    ids = _ids(rng, n_train + n_test)
    train_ids, test_ids = ids[:n_train], ids[n_train:]
    depths = rng.integers(50, 960, len(ids))

    def salt_flags(n):
        return rng.permutation(np.arange(n) >= round(n * empty_fraction))

    for d in ("train/images", "train/masks", "test/images"):
        (out / d).mkdir(parents=True, exist_ok=True)
    rows, n_salt = [], 0
    for i, salty in zip(train_ids, salt_flags(n_train)):
        g, m = make_sample(rng, size, with_salt=bool(salty))
        n_salt += bool(m.any())
        _save_image(g, out / "train" / "images" / f"{i}.png")
        Image.fromarray(m.astype(np.uint16) * 65535).save(out / "train" / "masks" / f"{i}.png")
        rows.append([i, rle_encode(m)])
    for i, salty in zip(test_ids, salt_flags(n_test)):
        _save_image(make_sample(rng, size, with_salt=bool(salty))[0], out / "test" / "images" / f"{i}.png")
    with open(out / "train.csv", "w", newline="") as f:
        csv.writer(f).writerows([["id", "rle_mask"], *rows])
    with open(out / "depths.csv", "w", newline="") as f:
        csv.writer(f).writerows([["id", "z"], *zip(ids, depths.tolist())])
    return {"train_ids": train_ids, "test_ids": test_ids, "n_salt": n_salt}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder (its train/ must not exist or be empty)")
    ap.add_argument("--n-train", type=int, default=400)
    ap.add_argument("--n-test", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.n_train < 1 or args.n_test < 0:
        raise UserError("--n-train must be >= 1 and --n-test >= 0")
    try:
        r = generate(args.out, args.n_train, args.n_test, args.seed)
    except FileExistsError as e:
        raise UserError(str(e)) from None
    print(f"wrote {args.n_train} train ({r['n_salt']} with salt) + {args.n_test} test images to {args.out}")
    return 0


if __name__ == "__main__":
    run(main)
