"""Property-based tests (Hypothesis) for the parsers and codecs that take outside data: each input either round-trips
or is refused with the module's own error (UserError, or the Pi's ValueError/ImageError), never any other exception."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from common.cli import UserError


def read_or_refuse(reader, path, text):
    """`reader(path)` of a file holding `text`; None when it refuses with a UserError (any other exception fails)."""
    path.write_text(text)
    try:
        return reader(path)
    except UserError:
        return None


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(arrays(np.bool_, st.tuples(st.integers(1, 12), st.integers(1, 12))))
def test_rle_round_trips_any_mask(mask):
    from pi.tgs_common import rle_decode, rle_encode

    np.testing.assert_array_equal(rle_decode(rle_encode(mask), mask.shape), mask)


RLE_TEXT = st.one_of(
    st.text(max_size=40),
    st.lists(st.integers(-(2**70), 2**70), max_size=8).map(lambda xs: " ".join(map(str, xs))),
    st.lists(st.integers(0, 130), max_size=8).map(lambda xs: " ".join(map(str, xs))),
)


@SETTINGS
@given(RLE_TEXT)
def test_rle_decode_returns_a_mask_or_a_value_error(text):
    from pi.tgs_common import rle_decode, rle_encode

    try:
        m = rle_decode(text, (11, 11))
    except ValueError:
        return
    assert m.shape == (11, 11) and m.dtype == bool
    np.testing.assert_array_equal(rle_decode(rle_encode(m), (11, 11)), m)


CSV_BYTES = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "ignore")),
    st.lists(st.tuples(st.text("0123456789abcdef", min_size=1, max_size=10), st.text(max_size=20)), max_size=5).map(
        lambda rows: ("id,rle_mask\n" + "".join(f"{a},{b}\n" for a, b in rows)).encode("utf-8", "ignore")
    ),
    st.lists(st.tuples(st.text("0123456789abcdef", min_size=1, max_size=10), st.text(max_size=12)), max_size=5).map(
        lambda rows: ("id,z\n" + "".join(f"{a},{b}\n" for a, b in rows)).encode("utf-8", "ignore")
    ),
)


@SETTINGS
@given(CSV_BYTES)
def test_kaggle_csvs_are_read_or_refused(tmp_path, data):
    from data.tgs import read_depths, read_rle_csv

    path = tmp_path / "x.csv"
    path.write_bytes(data)
    for reader in (read_rle_csv, read_depths):
        try:
            out = reader(path)
        except UserError:
            continue
        assert isinstance(out, dict)


MODES = st.sampled_from(["1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I", "F", "CMYK"])


@SETTINGS
@given(MODES, st.integers(1, 3).map(lambda k: (101, 101) if k < 3 else (50, 101)), st.integers(0, 2**32 - 1), st.booleans())
def test_the_image_reader_reads_or_refuses_any_png(tmp_path, mode, size, seed, truncate):
    from PIL import Image

    from pi.image_io import ImageError, read_gray

    rng = np.random.default_rng(seed)
    gray = rng.integers(0, 256, size[::-1], dtype=np.uint8)
    im = Image.fromarray(gray, "L")
    if rng.random() < 0.5 or mode not in ("RGB", "RGBA", "LA"):
        im = im.convert(mode)
    else:  # channels that differ, or transparency
        im = Image.fromarray(rng.integers(0, 256, (*size[::-1], len(mode)), dtype=np.uint8), mode)
    buf = io.BytesIO()
    try:
        im.save(buf, format="PNG")
    except OSError:
        return  # a mode PNG cannot hold
    data = buf.getvalue()
    path = tmp_path / "x.png"
    path.write_bytes(data[: len(data) // 2] if truncate else data)
    try:
        out = read_gray(path)
    except ImageError:
        return
    assert out.shape == (101, 101) and out.dtype == np.uint8


PRESET = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(["name", "grid", "seeds", "lam", "x"]), children, max_size=4)
    ),
    max_leaves=12,
)


@SETTINGS
@given(st.one_of(PRESET.map(json.dumps), st.text(max_size=60)))
def test_the_preset_reader_reads_or_refuses(tmp_path, text):
    from experiments.sweep import load_config

    cfg = read_or_refuse(load_config, tmp_path / "preset.json", text)
    assert cfg is None or (isinstance(cfg, dict) and {"name", "grid", "seeds"} <= set(cfg))


@pytest.mark.parametrize("text", ["1" * 30 + " 3", "5 " + "9" * 25])
def test_rle_decode_refuses_huge_numbers_with_a_value_error(text):
    from pi.tgs_common import rle_decode

    with pytest.raises(ValueError, match="RLE"):
        rle_decode(text, (11, 11))


@SETTINGS
@given(st.one_of(PRESET.map(json.dumps), st.text(max_size=40), st.just('{"train": ["a"], "val": [1]}')))
def test_the_split_reader_reads_or_refuses(tmp_path, text):
    """split.json (data.split.load_split, checked with errors, not asserts): lists of id strings, or a UserError."""
    from data.split import load_split

    split = read_or_refuse(load_split, tmp_path / "split.json", text)
    assert split is None or all(isinstance(i, str) for part in ("train", "val") for i in split[part])
