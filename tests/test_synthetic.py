"""data.synthetic writes exactly the Kaggle TGS Salt layout, deterministically."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage.io import imread

from data.synthetic import generate, make_sample
from pi.tgs_common import rle_decode

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic") / "tgs"
    return out, generate(out, n_train=200, n_test=30, seed=3)


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_layout_and_counts(synth):
    out, r = synth
    assert len(r["train_ids"]) == 200 and len(r["test_ids"]) == 30
    ids = r["train_ids"] + r["test_ids"]
    assert len(set(ids)) == len(ids) and all(re.fullmatch(r"[0-9a-f]{10}", i) for i in ids)
    assert sorted(p.stem for p in (out / "train" / "images").glob("*.png")) == sorted(r["train_ids"])
    assert sorted(p.stem for p in (out / "train" / "masks").glob("*.png")) == sorted(r["train_ids"])
    assert sorted(p.stem for p in (out / "test" / "images").glob("*.png")) == sorted(r["test_ids"])
    assert not (out / "test" / "masks").exists()


def test_images_are_8bit_rgb_with_equal_channels(synth):
    out, r = synth
    for i in r["train_ids"][:20] + r["test_ids"][:5]:
        sub = "train" if i in r["train_ids"] else "test"
        a = imread(out / sub / "images" / f"{i}.png")
        assert a.shape == (101, 101, 3) and a.dtype == np.uint8
        assert (a[..., 0] == a[..., 1]).all() and (a[..., 0] == a[..., 2]).all()
        assert a.std() > 10


def test_masks_are_16bit_0_or_65535(synth):
    out, r = synth
    for i in r["train_ids"][:20]:
        p = out / "train" / "masks" / f"{i}.png"
        assert Image.open(p).mode in ("I;16", "I")
        m = imread(p)
        assert m.shape == (101, 101) and m.dtype == np.uint16
        assert set(np.unique(m).tolist()) <= {0, 65535}


def test_empty_fraction_and_n_salt(synth):
    out, r = synth
    rows = _csv(out / "train.csv")
    empty = sum(not row["rle_mask"] for row in rows)
    assert abs(empty / len(rows) - 0.4) <= 0.1
    assert r["n_salt"] == len(rows) - empty


def test_train_csv_rle_matches_mask_pngs(synth):
    out, r = synth
    rows = _csv(out / "train.csv")
    assert list(rows[0]) == ["id", "rle_mask"]
    assert [row["id"] for row in rows] == r["train_ids"]
    for row in rows:
        png = imread(out / "train" / "masks" / f"{row['id']}.png") > 0
        assert np.array_equal(rle_decode(row["rle_mask"], (101, 101)), png), row["id"]


def test_rle_is_column_major_one_indexed(tmp_path):
    """Decode by hand (independently of pi.tgs_common) for a few masks."""
    generate(tmp_path, n_train=10, n_test=0, seed=5, empty_fraction=0.0)
    for row in _csv(tmp_path / "train.csv"):
        flat = np.zeros(101 * 101, bool)
        nums = [int(v) for v in row["rle_mask"].split()]
        for s, n in zip(nums[::2], nums[1::2]):
            flat[s - 1 : s - 1 + n] = True
        png = imread(tmp_path / "train" / "masks" / f"{row['id']}.png") > 0
        assert np.array_equal(flat.reshape(101, 101).T, png)


def test_depths_cover_all_ids(synth):
    out, r = synth
    rows = _csv(out / "depths.csv")
    assert list(rows[0]) == ["id", "z"]
    z = {row["id"]: int(row["z"]) for row in rows}
    assert set(z) == set(r["train_ids"]) | set(r["test_ids"])
    assert all(0 < v < 1000 for v in z.values())


def test_deterministic(tmp_path):
    a = generate(tmp_path / "a", n_train=6, n_test=2, seed=7)
    b = generate(tmp_path / "b", n_train=6, n_test=2, seed=7)
    c = generate(tmp_path / "c", n_train=6, n_test=2, seed=8)
    assert a == b and a["train_ids"] != c["train_ids"]
    for name in ("train.csv", "depths.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    i = a["train_ids"][0]
    img = (tmp_path / "a" / "train" / "images" / f"{i}.png").read_bytes()
    assert img == (tmp_path / "b" / "train" / "images" / f"{i}.png").read_bytes()
    assert img != (tmp_path / "c" / "train" / "images" / f"{c['train_ids'][0]}.png").read_bytes()


def test_refuses_non_empty_out_dir(tmp_path):
    generate(tmp_path, n_train=2, n_test=1, seed=0)
    with pytest.raises(FileExistsError):
        generate(tmp_path, n_train=2, n_test=1, seed=0)
    generate(tmp_path / "fresh", n_train=1, n_test=0)  # an existing but empty train/ is fine
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    generate(empty, n_train=1, n_test=0)


def test_make_sample():
    rng = np.random.default_rng(0)
    g, m = make_sample(rng, size=64, with_salt=True)
    assert g.shape == m.shape == (64, 64) and g.dtype == np.uint8 and m.dtype == bool and m.any()
    g, m = make_sample(rng, with_salt=False)
    assert g.shape == (101, 101) and not m.any()
    imgs = np.stack([make_sample(rng, with_salt=bool(k % 2))[0] for k in range(20)])
    assert 100 < imgs.mean() < 150 and imgs.min() < 30 and imgs.max() > 225


def test_cli(tmp_path):
    out = tmp_path / "d"
    p = subprocess.run(
        [sys.executable, "-m", "data.synthetic", "--out", str(out), "--n-train", "5", "--n-test", "2", "--seed", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert re.fullmatch(rf"wrote 5 train \(\d with salt\) \+ 2 test images to {re.escape(str(out))}\n", p.stdout)
    p = subprocess.run([sys.executable, "-m", "data.synthetic", "--out", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.startswith("error:") and "Traceback" not in p.stderr
