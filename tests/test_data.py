"""Loader on the real quirks (8-bit RGB images, 16-bit masks, 1-indexed column-major RLE), split, cache."""

import csv

import numpy as np
import pytest
from PIL import Image

from common.cli import UserError
from data.pipeline import Batches, prep_images, prep_masks
from data.split import stratified_split
from data.tgs import load_data, load_npz, load_tgs_dir, save_npz
from pi.sidecar import make_spec
from pi.tgs_common import postprocess, rle_decode, rle_encode


def write_kaggle(root, n=6, seed=0, csv_masks=True, mask_dir=True):
    rng = np.random.default_rng(seed)
    (root / "train" / "images").mkdir(parents=True)
    if mask_dir:
        (root / "train" / "masks").mkdir(parents=True)
    rows, images, masks = [], [], []
    for k in range(n):
        i = f"{k:010x}"
        g = rng.integers(0, 256, (101, 101), dtype=np.uint8)
        m = np.zeros((101, 101), bool)
        if k % 2:
            r, c = rng.integers(0, 60, 2)
            m[r : r + 30, c : c + 20] = True
        Image.fromarray(np.stack([g, g, g], -1)).save(root / "train" / "images" / f"{i}.png")
        if mask_dir:
            Image.fromarray(m.astype(np.uint16) * 65535).save(root / "train" / "masks" / f"{i}.png")
        rows.append([i, rle_encode(m)])
        images.append(g)
        masks.append(m)
    if csv_masks:
        with open(root / "train.csv", "w", newline="") as f:
            csv.writer(f).writerows([["id", "rle_mask"], *rows])
    with open(root / "depths.csv", "w", newline="") as f:
        csv.writer(f).writerows([["id", "z"], *[[r[0], 100 + j] for j, r in enumerate(rows)]])
    return [r[0] for r in rows], np.stack(images), np.stack(masks)


def test_loader_reads_real_quirks(tmp_path):
    ids, images, masks = write_kaggle(tmp_path)
    with Image.open(tmp_path / "train" / "masks" / f"{ids[1]}.png") as im:
        assert np.array(im).dtype == np.uint16 and np.array(im).max() == 65535  # like the real set
    d = load_tgs_dir(tmp_path, progress=False)
    assert d.ids == ids
    np.testing.assert_array_equal(d.images, images)
    np.testing.assert_array_equal(d.masks, masks)
    np.testing.assert_array_equal(d.depths, 100 + np.arange(len(ids)))


def test_rle_is_one_indexed_column_major():
    m = np.zeros((101, 101), bool)
    m[0, 0] = True  # pixel 1
    m[1, 0] = True  # pixel 2: column-major, so (row 1, col 0) follows (0, 0)
    m[0, 1] = True  # pixel 102
    assert rle_encode(m) == "1 2 102 1"
    np.testing.assert_array_equal(rle_decode("1 2 102 1"), m)


def test_masks_from_train_csv_alone(tmp_path):
    ids, _, masks = write_kaggle(tmp_path, mask_dir=False)
    np.testing.assert_array_equal(load_tgs_dir(tmp_path, progress=False).masks, masks)


def _corrupt(root, ids):
    (root / "train" / "images" / f"{ids[0]}.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")


def _wrong_size(root, ids):
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(root / "train" / "images" / f"{ids[0]}.png")


def _no_mask(root, ids):
    (root / "train" / "masks" / f"{ids[0]}.png").unlink()


def _rle_disagrees(root, ids):
    text = (root / "train.csv").read_text().replace(f"{ids[0]},", f"{ids[0]},1 5", 1)
    (root / "train.csv").write_text(text)


def _bad_rle(root, ids):
    text = (root / "train.csv").read_text().replace(f"{ids[0]},", f"{ids[0]},1 x", 1)
    (root / "train.csv").write_text(text)


def _csv_id_without_image(root, ids):
    with open(root / "train.csv", "a") as f:
        f.write("ffffffffff,\n")


def _nan_depth(root, ids):
    (root / "depths.csv").write_text("id,z\n" + f"{ids[0]},nan\n")


def _truncated(root, ids):
    p = root / "train" / "images" / f"{ids[0]}.png"
    p.write_bytes(p.read_bytes()[:200])


@pytest.mark.parametrize(
    "damage,needle",
    [
        (_corrupt, "cannot read image"),
        (_wrong_size, "100x100, expected 101x101"),
        (_no_mask, "has no mask"),
        (_rle_disagrees, "disagrees"),
        (_bad_rle, "bad RLE"),
        (_csv_id_without_image, "without an image"),
        (_nan_depth, "depth"),
        (_truncated, "cannot read image"),
    ],
)
def test_loader_bad_input_names_the_problem(tmp_path, damage, needle):
    ids, _, _ = write_kaggle(tmp_path)
    damage(tmp_path, ids)
    with pytest.raises(UserError, match=needle):
        load_tgs_dir(tmp_path, progress=False)


def test_missing_and_empty_dirs(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_data(tmp_path / "nope")
    (tmp_path / "train" / "images").mkdir(parents=True)
    with pytest.raises(UserError, match="no .png"):
        load_data(tmp_path)


def test_npz_cache_round_trip(tmp_path):
    write_kaggle(tmp_path / "k", n=8)
    d = load_tgs_dir(tmp_path / "k", progress=False)
    save_npz(d, tmp_path / "c.npz")
    e = load_npz(tmp_path / "c.npz")
    assert e.ids == d.ids
    np.testing.assert_array_equal(e.images, d.images)
    np.testing.assert_array_equal(e.masks, d.masks)
    assert (tmp_path / "c.npz").stat().st_size < 8 * 101 * 101 * 2


def test_stratified_split_is_seeded_and_disjoint():
    rng = np.random.default_rng(0)
    masks = rng.random((200, 101, 101)) < rng.random((200, 1, 1)) * (rng.random((200, 1, 1)) < 0.6)
    ids = [f"{i:04d}" for i in range(200)]
    a, b, c = stratified_split(ids, masks, 0.2, 0), stratified_split(ids, masks, 0.2, 0), stratified_split(ids, masks, 0.2, 1)
    assert a == b and a["val"] != c["val"]
    assert not set(a["train"]) & set(a["val"]) and len(a["train"]) + len(a["val"]) == 200
    empty = {i for i, m in zip(ids, masks) if not m.any()}
    share = len(empty & set(a["val"])) / len(a["val"])
    assert abs(share - len(empty) / 200) < 0.05


def test_pad_crop_and_flip_batches():
    spec = make_spec(128, "pad")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 101, 101), dtype=np.uint8)
    masks = rng.random((5, 101, 101)) > 0.5
    x, y = prep_images(images, spec), prep_masks(masks, spec)
    assert x.shape == (5, 128, 128, 1) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    np.testing.assert_allclose(postprocess(x, spec) * 255, images, atol=1e-3)  # crop undoes the pad exactly
    np.testing.assert_array_equal(postprocess(y, spec) > 0.5, masks)
    assert x[0, 12, 20, 0] == x[0, 14, 20, 0]  # reflect padding around row 13 (the first original row)
    b = Batches(x, y, batch_size=5, shuffle=False, flip=True, seed=3)
    feed, _ = b[0]
    for k in range(5):  # each sample is either untouched or mirrored left-right (never up-down)
        same, mirrored = np.array_equal(feed["image"][k], x[k]), np.array_equal(feed["image"][k], x[k, :, ::-1])
        assert same or mirrored
        np.testing.assert_array_equal(feed["mask"][k], y[k] if same else y[k, :, ::-1])
