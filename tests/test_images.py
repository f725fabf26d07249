"""One image reader (pi/image_io.py) for training and the Pi: the same PNG gives the same pixels, or a refusal, on both.

Every PNG mode of the decision table in pi/image_io.py is written once into a folder, then read
(a) in-process by the training loader (data.tgs) and (b) by the Pi side in a subprocess under
PI_PYTHON (numpy + pillow + tflite-runtime, no TensorFlow), from a copy of pi/ alone, importing
`image_io` the way pi/infer.py does. Without PI_PYTHON the Pi half is skipped.

    PI_PYTHON=.venv-pi/bin/python .venv/bin/python -m pytest -q tests/test_images.py
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from common.cli import UserError
from data.tgs import load_image_folder, read_image
from pi.image_io import ImageError, check_header, read_gray
from tests.conftest import ROOT

PI_PYTHON = os.environ.get("PI_PYTHON")
needs_pi = pytest.mark.skipif(not PI_PYTHON, reason="PI_PYTHON (the Pi environment) is set by the test runner")

RNG = np.random.default_rng(7)
G = RNG.integers(0, 256, (101, 101), dtype=np.uint8)  # the gray picture every accepted file holds
OPAQUE = np.full((101, 101), 255, np.uint8)
SEMI = OPAQUE.copy()
SEMI[50, 50] = 254  # one pixel not quite opaque is enough to refuse


def _palette_image(colours: np.ndarray, index: np.ndarray) -> Image.Image:
    im = Image.fromarray(index, "P")
    im.putpalette(colours.astype(np.uint8).ravel().tolist())
    return im


def _raw_png(a: np.ndarray, depth: int, colour_type: int) -> bytes:
    """A PNG written by hand (Pillow cannot write 16-bit RGB): filter 0 on every row."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    h, w = a.shape[:2]
    raw = b"".join(b"\x00" + a[r].tobytes() for r in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def _png(im: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def make_cases() -> dict:
    """name -> (PNG bytes, expected pixels or the refusal's needle)."""
    rgb = np.stack([G, G, G], -1)
    colour = rgb.copy()
    colour[10, 20, 1] ^= 1  # a single pixel with unequal channels
    perm = RNG.permutation(256).astype(np.uint8)  # a gray palette whose entries are not their indices
    gray_pal = np.stack([perm] * 3, -1)
    index = RNG.integers(0, 255, (101, 101), dtype=np.uint8)  # entry 255 unused
    colour_pal = gray_pal.copy()
    colour_pal[index[0, 0], 0] ^= 1  # one used entry is not gray
    bits = G > 127
    cases = {
        "L": (_png(Image.fromarray(G)), G),
        "RGB_equal": (_png(Image.fromarray(rgb)), G),
        "RGB_unequal": (_png(Image.fromarray(colour)), "colour image (mode RGB)"),
        "P_gray_palette": (_png(_palette_image(gray_pal, index)), perm[index]),  # palette values, not indices
        "P_colour_palette": (_png(_palette_image(colour_pal, index)), "colour image (mode P, colour palette)"),
        "LA_opaque": (_png(Image.fromarray(np.stack([G, OPAQUE], -1), "LA")), G),
        "LA_transparent": (_png(Image.fromarray(np.stack([G, SEMI], -1), "LA")), "has transparent pixels (1 with alpha < 255)"),
        "RGBA_opaque_equal": (_png(Image.fromarray(np.dstack([rgb, OPAQUE]), "RGBA")), G),
        "RGBA_transparent": (_png(Image.fromarray(np.dstack([rgb, SEMI]), "RGBA")), "has transparent pixels"),
        "RGBA_opaque_unequal": (_png(Image.fromarray(np.dstack([colour, OPAQUE]), "RGBA")), "colour image (mode RGBA)"),
        "I16": (_png(Image.fromarray(G.astype(np.uint16) * 257)), "16-bit image: expected 8-bit"),
        "RGB16": (_raw_png(rgb.astype(">u2") * 257, 16, 2), "16-bit image: expected 8-bit"),  # Pillow: mode "RGB"
        "LA16": (_raw_png(np.stack([G, OPAQUE], -1).astype(">u2") * 257, 16, 4), "16-bit image: expected 8-bit"),
        "bilevel": (_png(Image.fromarray(bits)), bits.astype(np.uint8) * 255),
        "L4": (_png(Image.fromarray(G // 17 * 17), bits=4), G // 17 * 17),  # 4-bit gray, scaled to 0..255
        "L_tRNS_used": (_png(Image.fromarray(G), transparency=int(G[0, 0])), "has transparent pixels"),
        "P_tRNS_unused": (_png(_palette_image(gray_pal, index), transparency=255), perm[index]),  # no pixel uses it
        "P_tRNS_used": (_png(_palette_image(gray_pal, index), transparency=int(index[0, 0])), "has transparent pixels"),
        "corrupt": (b"\x89PNG\r\n\x1a\nnot really a png", "cannot read image"),
        "truncated": (_png(Image.fromarray(rgb))[:300], "cannot read image"),
        "jpeg": (_png(Image.fromarray(G), "JPEG"), "not a PNG file (JPEG data)"),
        "wrong_size": (_png(Image.fromarray(G[:100, :99])), "is 99x100, expected 101x101"),
    }
    return cases


CASES = make_cases()
ACCEPTED = sorted(k for k, (_, want) in CASES.items() if isinstance(want, np.ndarray))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("modes")
    for name, (data, _) in CASES.items():
        (d / f"{name}.png").write_bytes(data)
    return d


def train_read(path):
    """The training side: pixels, or the one-line message of the UserError."""
    try:
        return read_image(path)
    except UserError as e:
        return str(e)


def test_pillow_opens_the_files_in_the_intended_modes(folder):
    """The table is per PIL mode: check each file really is in the mode its name says (Pillow may change)."""
    modes = {
        "L": "L",
        "RGB_equal": "RGB",
        "P_gray_palette": "P",
        "LA_opaque": "LA",
        "RGBA_transparent": "RGBA",
        "I16": "I;16",
        "RGB16": "RGB",
        "bilevel": "1",
        "L_tRNS_used": "L",
    }
    for name, mode in modes.items():
        with Image.open(folder / f"{name}.png") as im:
            assert im.mode == mode, (name, im.mode)


@pytest.mark.parametrize("name", sorted(CASES))
def test_training_reader(folder, name):
    path = folder / f"{name}.png"
    want = CASES[name][1]
    got = train_read(path)
    if isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray), got
        assert got.shape == (101, 101) and got.dtype == np.uint8 and got.flags.c_contiguous
        np.testing.assert_array_equal(got, want)
    else:
        assert isinstance(got, str) and want in got and str(path) in got, got
        assert "\n" not in got
        with pytest.raises(ImageError) as e:
            read_gray(path)
        assert str(e.value) == got and isinstance(e.value, ValueError)


HEADER_REFUSED = {"I16", "RGB16", "LA16", "jpeg", "wrong_size", "corrupt"}  # decided by the header: format, size, depth


def header_read(path):
    """check_header's verdict: None (passes) or the message of its ImageError."""
    try:
        check_header(path)
    except ImageError as e:
        return str(e)
    return None


@pytest.mark.parametrize("name", sorted(CASES))
def test_header_check_refuses_in_read_grays_words(folder, name):
    """pi/infer.py checks every image's header before it writes anything, then reads them batch by batch: the header
    check refuses what the header decides, word for word as read_gray; the rest (pixels, image data) is read_gray's."""
    path = folder / f"{name}.png"
    verdict = header_read(path)
    if name in HEADER_REFUSED:
        assert verdict is not None and verdict == train_read(path), (verdict, train_read(path))
    else:
        assert verdict is None, verdict  # accepted, or refused only for its pixels or its (truncated) data


def test_header_check_on_a_missing_file_and_a_folder(folder, tmp_path):
    for path in (tmp_path / "missing.png", tmp_path):
        assert header_read(path) == train_read(path) and header_read(path).startswith(f"cannot read image {path}: ")


def test_folder_loader_uses_the_same_reader(folder, tmp_path):
    good = tmp_path / "good"
    good.mkdir()
    for name in ACCEPTED:
        shutil.copy(folder / f"{name}.png", good / f"{name}.png")
    d = load_image_folder(good, progress=False)
    assert d.ids == ACCEPTED
    for k, name in enumerate(ACCEPTED):
        np.testing.assert_array_equal(d.images[k], CASES[name][1])
    shutil.copy(folder / "P_colour_palette.png", good / "zz.png")
    with pytest.raises(UserError, match=r"zz\.png: colour image"):
        load_image_folder(good, progress=False)


PI_READ = r"""
import json, sys
sys.path.insert(0, sys.argv[1])  # as pi/infer.py does: its own folder, then plain imports
from image_io import ImageError, check_header, read_gray
out = {}
for p in sys.argv[2:]:
    try:
        a = read_gray(p)
        out[p] = {"shape": list(a.shape), "dtype": str(a.dtype), "hex": a.tobytes().hex()}
    except ImageError as e:
        out[p] = {"error": str(e)}
    try:
        check_header(p)
        out[p]["header"] = None
    except ImageError as e:
        out[p]["header"] = str(e)
bad = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "data", "common", "pi", "imageio"))
print(json.dumps({"images": out, "bad_modules": bad}))
"""


@pytest.fixture(scope="module")
def pi_copy(tmp_path_factory):
    """pi/ alone, as it is copied to the Raspberry Pi."""
    d = tmp_path_factory.mktemp("pi_copy")
    shutil.copytree(ROOT / "pi", d / "pi", ignore=shutil.ignore_patterns("__pycache__"))
    return d


@needs_pi
def test_pi_reader_agrees_with_training(folder, pi_copy):
    paths = [str(folder / f"{name}.png") for name in sorted(CASES)]
    p = subprocess.run([PI_PYTHON, "-c", PI_READ, str(pi_copy / "pi"), *paths], cwd=pi_copy, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert res["bad_modules"] == []
    for path in paths:
        pi_side, train_side = res["images"][path], train_read(path)
        if isinstance(train_side, np.ndarray):
            assert "error" not in pi_side, (path, pi_side)
            assert pi_side["shape"] == [101, 101] and pi_side["dtype"] == "uint8"
            a = np.frombuffer(bytes.fromhex(pi_side["hex"]), np.uint8).reshape(101, 101)
            assert np.array_equal(a, train_side), path
        else:
            assert pi_side.get("error") == train_side, (path, pi_side.get("error"), train_side)
        assert pi_side["header"] == header_read(path), path


# ---------------------------------------------------------------- progress bars end their line before `error: ...`


def screen(text: str) -> list[str]:
    """What a terminal shows: "\\r" returns to the line's start and later characters overwrite earlier ones."""
    lines = []
    for raw in text.split("\n"):
        cells: list[str] = []
        for seg in raw.split("\r"):
            cells[: len(seg)] = list(seg)
        lines.append("".join(cells).rstrip())
    while lines and not lines[-1]:
        lines.pop()
    return lines


def test_screen_helper():
    assert screen("abc\rX\n") == ["Xbc"]
    assert screen("bar 0%\r      \rerror: e\n") == ["error: e"]


def test_training_progress_bar_is_closed_before_the_error(folder, tmp_path, capsys):
    d = tmp_path / "imgs"
    d.mkdir()
    shutil.copy(folder / "L.png", d / "a.png")
    shutil.copy(folder / "corrupt.png", d / "b.png")
    shutil.copy(folder / "L.png", d / "c.png")
    with pytest.raises(UserError) as e:
        load_image_folder(d, progress=True)
    print(f"error: {e.value}", file=sys.stderr)  # as common.cli.run prints it
    err = capsys.readouterr().err
    assert "reading" in err  # a bar was drawn
    assert screen(err)[-1] == f"error: {e.value}", screen(err)


@needs_pi
def test_pi_progress_bar_line_ends_before_the_error(pi_copy):
    code = r"""
import contextlib, sys
sys.path.insert(0, "pi")
from infer import UserError, cli, progress
def entry(argv):
    with contextlib.closing(progress(range(10), 10, "infer", True)) as bar:
        for k in bar:
            if k == 5:
                raise UserError("boom")
cli(entry)
"""
    p = subprocess.run([PI_PYTHON, "-c", code], cwd=pi_copy, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "infer [" in p.stderr, p.stderr
    assert screen(p.stderr)[-1] == "error: boom", screen(p.stderr)
    assert screen(p.stderr)[-2].startswith("infer [")


# ---------------------------------------------------------------- pi/infer.py end to end on a refused image

BUILD = r"""
import sys, keras
i = keras.Input((128, 128, 1))
z = keras.layers.Conv2D(1, 3, padding="same")(i)
keras.Model(i, keras.layers.Activation("sigmoid")(z)).export(sys.argv[1], format="litert", verbose=False)
"""


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A Conv2D(1, 3) + sigmoid .tflite with its sidecar (TensorFlow in this environment builds it, ~15 s)."""
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("TensorFlow is needed to build a .tflite model")
    from pi.sidecar import make_spec

    d = tmp_path_factory.mktemp("tflite")
    subprocess.run(
        [sys.executable, "-c", BUILD, str(d / "tiny.tflite")],
        check=True,
        capture_output=True,
        timeout=600,
        env={**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    (d / "tiny.tflite.json").write_text(json.dumps(make_spec(128, "pad")))
    return d / "tiny.tflite"


@needs_pi
def test_infer_accepts_the_accepted_and_refuses_one_bad_image(folder, pi_copy, tiny_model, tmp_path):
    good = tmp_path / "good"
    good.mkdir()
    for name in ACCEPTED:
        shutil.copy(folder / f"{name}.png", good / f"{name}.png")
    p = subprocess.run(
        [PI_PYTHON, "pi/infer.py", "--model", tiny_model, "--images", good, "--out", tmp_path / "m", "--progress"],
        cwd=pi_copy,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    assert sorted(q.stem for q in (tmp_path / "m").glob("*.png")) == ACCEPTED
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    shutil.copy(folder / "RGBA_transparent.png", bad / "b_transparent.png")
    p = subprocess.run(
        [PI_PYTHON, "pi/infer.py", "--model", tiny_model, "--images", bad, "--out", tmp_path / "m2"],
        cwd=pi_copy,
        capture_output=True,
        text=True,
        timeout=300,
    )
    err = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(err) == 1 and "Traceback" not in p.stderr, p.stderr
    assert err[0] == f"error: {train_read(bad / 'b_transparent.png')}"  # word for word the training side's message
    assert not (tmp_path / "m2").exists() or not any((tmp_path / "m2").iterdir())


@needs_pi
def test_infer_error_in_the_loop_ends_the_bar_line_first(folder, pi_copy, tiny_model, tmp_path):
    """pi/infer.py's own bar: an error while writing the third mask is printed on a line of its own."""
    code = r"""
import sys
sys.path.insert(0, "pi")
import infer
real, calls = infer.write_atomic, []
def failing_write(path, data, shown=None):
    calls.append(path)
    if len(calls) == 3:
        raise infer.UserError("disk full (simulated)")
    real(path, data)
infer.write_atomic = failing_write
infer.cli(infer.main, sys.argv[1:])
"""
    good = tmp_path / "good"
    good.mkdir()
    for name in ACCEPTED:
        shutil.copy(folder / f"{name}.png", good / f"{name}.png")
    p = subprocess.run(
        [PI_PYTHON, "-c", code, "--model", tiny_model, "--images", good, "--out", tmp_path / "m", "--batch", "1", "--progress"],
        cwd=pi_copy,
        capture_output=True,
        text=True,
        timeout=300,
    )
    shown = screen(p.stderr)
    assert p.returncode == 2 and shown[-1] == "error: disk full (simulated)", p.stderr
    assert shown[-2].startswith("infer [") and f" 2/{len(ACCEPTED)} " in shown[-2], shown
