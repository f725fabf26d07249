"""Loader on the real quirks (8-bit RGB images, 16-bit masks, 1-indexed column-major RLE), split, cache."""

import csv
import io
import re
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from common.cli import UserError, run
from data.pipeline import Batches, prep_images, prep_masks
from data.split import stratified_split
from data.tgs import KAGGLE_ZIP, KaggleDownload, cache_meta, load_data, load_npz, load_tgs_dir, sample_ids, save_npz
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


# ---------------------------------------------------------------- data.prepare: the download as Kaggle ships it


def _zip_of(folder, prefix=""):
    """The PNGs under folder as zip bytes, named prefix + their path below folder (train.zip: images/, masks/)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(folder.rglob("*.png")):
            z.write(p, prefix + p.relative_to(folder).as_posix())
    return buf.getvalue()


def pack_kaggle(src, out, top="", inner_top=False):
    """A Kaggle-layout folder packed as Kaggle ships it: out (a .zip) holds train.zip (images/, masks/), test.zip
    (images/), train.csv, depths.csv, sample_submission.csv; under a `top` folder, and the inner zips' members under
    train/ and test/ with inner_top. Returns out."""
    src, out = Path(src), Path(out)
    with zipfile.ZipFile(out, "w") as z:
        z.writestr(top + "train.zip", _zip_of(src / "train", "train/" if inner_top else ""))
        if (src / "test" / "images").is_dir():
            z.writestr(top + "test.zip", _zip_of(src / "test", "test/" if inner_top else ""))
        for name in ("train.csv", "depths.csv"):
            if (src / name).exists():
                z.write(src / name, top + name)
        z.writestr(top + "sample_submission.csv", "id,rle_mask\n")
    return out


def unzipped_once(src, out):
    """The competition zip unzipped once: out/train.zip, out/test.zip next to the CSVs."""
    out = Path(out)
    with zipfile.ZipFile(pack_kaggle(src, out.with_suffix(".zip"))) as z:
        z.extractall(out)
    return out


def write_test_images(root, n, seed=1):
    rng = np.random.default_rng(seed)
    (root / "test" / "images").mkdir(parents=True)
    ids = [f"t{k:09x}" for k in range(n)]
    for i in ids:
        Image.fromarray(rng.integers(0, 256, (101, 101), dtype=np.uint8)).save(root / "test" / "images" / f"{i}.png")
    return ids


def prepare(argv, capsys):
    """data.prepare as the command line runs it: (exit code, stdout, stderr)."""
    from data.prepare import main

    with pytest.raises(SystemExit) as e:
        run(main, [str(a) for a in argv])
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


@pytest.fixture
def kaggle(tmp_path):
    """A small download in the Kaggle layout (8 labelled, 10 test images) and that download in every form."""
    src = tmp_path / "tgs"
    write_kaggle(src, n=8)
    write_test_images(src, 10)
    return {
        "folder": src,
        "zip": pack_kaggle(src, tmp_path / "tgs-salt-identification-challenge.zip"),
        "zip, top folder": pack_kaggle(src, tmp_path / "top.zip", top="tgs-salt-identification-challenge/"),
        "inner top folders": pack_kaggle(src, tmp_path / "inner.zip", inner_top=True),
        "folder with zips": unzipped_once(src, tmp_path / "once"),
        "download folder": pack_kaggle(src, (tmp_path / "kaggle").mkdir() or tmp_path / "kaggle" / KAGGLE_ZIP).parent,  # -p kaggle
    }


FORMS = ["folder", "zip", "zip, top folder", "inner top folders", "folder with zips", "download folder"]


@pytest.mark.parametrize("form", FORMS)
def test_prepare_reads_every_form_of_the_download_alike(kaggle, form, tmp_path, capsys):
    code, out, err = prepare(["--data", kaggle[form], "--out", tmp_path / "c.npz", "--max-unlabelled", "4", "--seed", "3"], capsys)
    assert code == 0, err
    assert re.fullmatch(
        rf"cached 8 labelled \+ 4 of 10 unlabelled images \(seed 3\) to {re.escape(str(tmp_path / 'c.npz'))} \(\d+\.\d MB\); loads in \d+\.\d\d s\n",
        out,
    ), out
    want = load_tgs_dir(kaggle["folder"], progress=False)
    got, test = load_npz(tmp_path / "c.npz"), load_npz(tmp_path / "c.npz", "test")
    assert got.ids == want.ids
    np.testing.assert_array_equal(got.images, want.images)
    np.testing.assert_array_equal(got.masks, want.masks)
    np.testing.assert_array_equal(got.depths, want.depths)
    all_test = sorted(p.stem for p in (kaggle["folder"] / "test" / "images").glob("*.png"))
    assert test.ids == sample_ids(all_test, 4, 3) and len(test.ids) == 4 and test.ids == sorted(test.ids)
    for k, i in enumerate(test.ids):
        np.testing.assert_array_equal(test.images[k], np.array(Image.open(kaggle["folder"] / "test" / "images" / f"{i}.png")))
    meta = cache_meta(tmp_path / "c.npz")
    assert meta["source"] == str(kaggle[form]) and meta["form"] == {"folder": "folder", "folder with zips": "folder with zips"}.get(
        form, "zip"
    )
    assert (meta["labelled"], meta["unlabelled"], meta["unlabelled_total"], meta["max_unlabelled"], meta["seed"]) == (8, 4, 10, 4, 3)
    assert not list(Path(tempfile.gettempdir()).glob("tgs-prepare-*"))  # the temporary files are gone


def test_max_unlabelled_is_a_seeded_sample(kaggle, tmp_path, capsys):
    def cached(*extra, name):
        code, out, err = prepare(["--data", kaggle["zip"], "--out", tmp_path / name, *extra], capsys)
        assert code == 0, err
        return load_npz(tmp_path / name, "test").ids, out

    all_ids = sorted(p.stem for p in (kaggle["folder"] / "test" / "images").glob("*.png"))
    every, out = cached(name="all.npz")
    assert every == all_ids and "+ 10 unlabelled images to" in out and cache_meta(tmp_path / "all.npz")["seed"] is None
    a, _ = cached("--max-unlabelled", "5", name="a.npz")
    b, _ = cached("--max-unlabelled", "5", "--seed", "0", name="b.npz")
    c, _ = cached("--max-unlabelled", "5", "--seed", "1", name="c.npz")
    assert b == sample_ids(all_ids, 5, 0) and c == sample_ids(all_ids, 5, 1) and b != c and set(b) <= set(all_ids)
    assert a == all_ids[:5]  # without --seed: the first 5 by id
    more, out = cached("--max-unlabelled", "50", name="more.npz")
    assert more == all_ids and "+ 10 unlabelled images (all there are; --max-unlabelled 50)" in out
    code, out, err = prepare(["--data", kaggle["zip"], "--out", tmp_path / "none.npz", "--no-test"], capsys)
    assert code == 0 and "+ 0 unlabelled images" in out, err
    with pytest.raises(UserError, match="no unlabelled test images"):
        load_npz(tmp_path / "none.npz", "test")


def test_sample_ids_matches_the_documented_recipe():
    ids = [f"{k:010x}" for k in range(50)][::-1]
    pick = np.random.default_rng(7).choice(50, size=6, replace=False)
    assert sample_ids(ids, 6, 7) == sorted(sorted(ids)[k] for k in pick)
    assert sample_ids(ids, None) == sample_ids(ids, 50) == sample_ids(ids, 99) == sorted(ids)
    assert sample_ids(ids, 6) == sorted(ids)[:6]


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garbage(path):
    path.write_bytes(b"<html>Please log in</html>")


def _rewrite(path, edit):
    """Rebuild the zip at path with edit({name: bytes}) applied."""
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    edit(members)
    with zipfile.ZipFile(path, "w") as z:
        for n, data in members.items():
            z.writestr(n, data)


def _inner(members, name, edit):
    with zipfile.ZipFile(io.BytesIO(members[name])) as z:
        inner = {n: z.read(n) for n in z.namelist()}
    edit(inner)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for n, data in inner.items():
            z.writestr(n, data)
    members[name] = buf.getvalue()


def _flip_a_byte(path, member):
    """Damage one stored member's data in place: its CRC no longer matches."""
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(member)
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + info.compress_size // 2] ^= 0xFF
    path.write_bytes(bytes(data))


ZIP_DAMAGE = {
    "truncated": (lambda p: _truncate(p), "damaged or incomplete download"),
    "not_a_zip": (lambda p: _garbage(p), "damaged or incomplete download"),
    "no_train_zip": (lambda p: _rewrite(p, lambda m: m.pop("train.zip")), "holds neither train.zip nor train/images/"),
    "empty": (lambda p: _rewrite(p, lambda m: m.clear()), "empty zip"),
    "inner_not_a_zip": (lambda p: _rewrite(p, lambda m: m.update({"train.zip": b"nonsense"})), "train.zip (a damaged"),
    "bad_crc": (lambda p: _flip_a_byte(p, "test.zip"), "test.zip (a damaged"),
    "no_images": (
        lambda p: _rewrite(p, lambda m: _inner(m, "train.zip", lambda i: [i.pop(n) for n in list(i) if n.startswith("images/")])),
        "train.zip holds no images/",
    ),
    "no_labels": (
        lambda p: _rewrite(
            p, lambda m: (m.pop("train.csv"), _inner(m, "train.zip", lambda i: [i.pop(n) for n in list(i) if n.startswith("masks/")]))
        ),
        "{zip} has neither train/masks/ nor train.csv: no labels",
    ),
    "missing_mask": (
        lambda p: _rewrite(p, lambda m: _inner(m, "train.zip", lambda i: i.pop("masks/0000000001.png"))),
        "image {zip}:train.zip:images/0000000001.png has no mask {zip}:train.zip:masks/0000000001.png",
    ),
    "rle_disagrees": (
        lambda p: _rewrite(p, lambda m: m.update({"train.csv": m["train.csv"].replace(b"0000000000,", b"0000000000,1 5", 1)})),
        "{zip}:train.csv: RLE of 0000000000 disagrees with {zip}:train.zip:masks/0000000000.png",
    ),
    "corrupt_png": (
        lambda p: _rewrite(
            p,
            lambda m: _inner(
                m, "train.zip", lambda i: i.update({sorted(n for n in i if n.startswith("images/"))[0]: b"\x89PNG\r\n\x1a\nxx"})
            ),
        ),
        "cannot read image {zip}:train.zip:images/0000000000.png",
    ),
    "bad_test_png": (
        lambda p: _rewrite(p, lambda m: _inner(m, "test.zip", lambda i: i.update({n: b"GIF89a" for n in i}))),
        "cannot read image {zip}:test.zip:images/t000000000.png: not a PNG",
    ),
}


@pytest.mark.parametrize("damage", sorted(ZIP_DAMAGE))
def test_prepare_bad_zip_is_one_line(kaggle, damage, tmp_path, capsys):
    path = kaggle["zip"]
    edit, needle = ZIP_DAMAGE[damage]
    edit(path)
    code, out, err = prepare(["--data", path, "--out", tmp_path / "c.npz"], capsys)
    assert code == 2 and "Traceback" not in err and out == "", err
    assert err.splitlines()[-1].startswith("error: ") and needle.format(zip=path) in err.splitlines()[-1], err
    assert "tgs-prepare-" not in err  # named by the download's members, never by the temporary files
    assert not (tmp_path / "c.npz").exists() and not list(Path(tempfile.gettempdir()).glob("tgs-prepare-*"))


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--max-unlabelled", "0"], "--max-unlabelled 0 must be at least 1"),
        (["--max-unlabelled", "-5"], "--max-unlabelled -5 must be at least 1"),
        (["--max-unlabelled", "3", "--no-test"], "contradict"),
        (["--max-unlabelled", "3", "--seed", "-1"], "--seed -1 must be >= 0"),
    ],
)
def test_prepare_refuses_bad_max_unlabelled(kaggle, argv, needle, tmp_path, capsys):
    code, out, err = prepare(["--data", kaggle["zip"], "--out", tmp_path / "c.npz", *argv], capsys)
    assert code == 2 and err.startswith("error: ") and needle in err and len(err.strip().splitlines()) == 1, err


def test_max_unlabelled_without_test_images(tmp_path, capsys):
    write_kaggle(tmp_path / "k")
    code, out, err = prepare(["--data", tmp_path / "k", "--out", tmp_path / "c.npz", "--max-unlabelled", "3"], capsys)
    assert code == 2 and "holds no test images" in err and len(err.strip().splitlines()) == 1, err
    code, out, err = prepare(["--data", tmp_path / "k", "--out", tmp_path / "c.npz"], capsys)  # without: the labelled alone
    assert code == 0 and "cached 6 labelled + 0 unlabelled images" in out, err


@settings(max_examples=40, deadline=None)
@given(
    ids=st.sets(st.text("0123456789abcdef", min_size=1, max_size=10), max_size=40),
    n=st.one_of(st.none(), st.integers(1, 60)),
    seed=st.one_of(st.none(), st.integers(0, 2**32 - 1)),
    order=st.randoms(use_true_random=False),
)
def test_sample_ids_properties(ids, n, seed, order):
    """Sorted, distinct, drawn from ids, min(n, len) of them (all for n None); the same whatever order the ids are listed in."""
    listed = sorted(ids)
    order.shuffle(listed)
    got = sample_ids(listed, n, seed)
    assert got == sorted(got) and len(set(got)) == len(got) and set(got) <= ids
    assert len(got) == (len(ids) if n is None else min(n, len(ids)))
    assert got == sample_ids(sorted(ids), n, seed)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    top=st.sampled_from(["", "tgs-salt-identification-challenge/", "x/"]),
    inner_top=st.booleans(),
    dot_files=st.booleans(),
    n_test=st.integers(1, 6),
    cap=st.one_of(st.none(), st.integers(1, 8)),
)
def test_zip_layouts_give_the_folder_data(tmp_path_factory, top, inner_top, dot_files, n_test, cap):
    """Any of the layouts a download may come in (a top folder or not, inner top folders or not, archiver litter such as
    __MACOSX/ and ._ files) reads as the unzipped folder does."""
    d = tmp_path_factory.mktemp("layout")
    src = d / "tgs"
    write_kaggle(src, n=3)
    write_test_images(src, n_test)
    path = pack_kaggle(src, d / "k.zip", top=top, inner_top=inner_top)
    if dot_files:
        with zipfile.ZipFile(path, "a") as z:
            z.writestr(f"__MACOSX/{top}._train.zip", b"junk")
            z.writestr(f"{top}.DS_Store", b"junk")
    with KaggleDownload(src) as f, KaggleDownload(path) as k:
        want, got = f.labelled(progress=False), k.labelled(progress=False)
        assert got.ids == want.ids and np.array_equal(got.images, want.images) and np.array_equal(got.masks, want.masks)
        assert k.test_ids == f.test_ids and len(k.test_ids) == n_test
        picked = sample_ids(k.test_ids, cap, 0)
        u, v = k.unlabelled(picked, progress=False), f.unlabelled(picked, progress=False)
        assert u.ids == v.ids == picked and np.array_equal(u.images, v.images)
        assert all(str(path) in w for w in u.files)  # named by where they came from
