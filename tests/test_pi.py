"""The Raspberry Pi programs (pi/) in their own TensorFlow-free environment, plus export parity.

PI_PYTHON (set by .ci/run) is a Python whose environment holds only pi/requirements.txt
(tflite-runtime 2.14, numpy<2, pillow): pi/infer.py and pi/benchmark.py must work there on models
exported by TensorFlow 2.21. Without it the tests use this interpreter. The Pi programs always run
in a subprocess (TensorFlow and tflite-runtime cannot share a process), from a copy of pi/ alone.

    PI_PYTHON=.venv-pi/bin/python .venv/bin/python -m pytest -q tests/test_pi.py
"""

import ast
import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from pi.tgs_common import pad_amounts, postprocess, preprocess, resize_bilinear, rle_decode, rle_encode, to_gray
from tests.conftest import ROOT, cli

PI_PYTHON = os.environ.get("PI_PYTHON", sys.executable)
PI_PYTHON = os.path.abspath(PI_PYTHON) if os.sep in PI_PYTHON else PI_PYTHON  # the programs run with another cwd
SPEC = {
    "format": "tgs-seg-sidecar/1",
    "orig_size": 101,
    "input_size": 128,
    "resize_mode": "pad",
    "scale": 1 / 255,
    "threshold": 0.5,
    "output": "probability",
    "quant": "fp32",
    "model_name": "tiny",
}


def pi(*args, cwd=ROOT):
    return subprocess.run([PI_PYTHON, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300)


# ---------------------------------------------------------------- tgs_common (numpy only)


def test_rle_hand_made_cases():
    m = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1]], bool)  # column-major: 1 1 0 | 0 1 0 | 0 0 1
    assert rle_encode(m) == "1 2 5 1 9 1"
    np.testing.assert_array_equal(rle_decode("1 2 5 1 9 1", (3, 3)), m)
    assert rle_encode(np.array([[0, 1], [1, 1]])) == "2 3"  # a run continues into the next column
    assert rle_encode(np.ones((101, 101), bool)) == "1 10201"
    assert rle_encode(np.zeros((101, 101), bool)) == ""
    for empty in ("", "  ", None, float("nan")):
        m = rle_decode(empty)
        assert m.shape == (101, 101) and m.dtype == bool and not m.any()


def test_rle_round_trip():
    rng = np.random.default_rng(0)
    for k in range(30):
        shape = (101, 101) if k % 3 else tuple(rng.integers(1, 20, 2))
        m = rng.random(shape) < rng.random()
        np.testing.assert_array_equal(rle_decode(rle_encode(m), shape), m)


@pytest.mark.parametrize(
    "bad, needle",
    [
        ("1 2 3", "odd"),
        ("a 2", "non-integer"),
        ("1.5 2", "non-integer"),
        ("0 5", "start"),
        ("5 0", "length"),
        ("5 -1", "length"),
        ("10200 5", "beyond"),
        ("10 5 12 3", "overlap"),
        ("20 2 10 2", "increasing"),
    ],
)
def test_rle_malformed(bad, needle):
    with pytest.raises(ValueError, match=needle):
        rle_decode(bad)


def test_to_gray():
    rgb = np.random.default_rng(0).integers(0, 256, (101, 101, 3), dtype=np.uint8)
    for a in (rgb[..., 0], rgb[..., :1], rgb, np.dstack([rgb, rgb[..., :1]])):
        np.testing.assert_array_equal(to_gray(a), rgb[..., 0])
    for bad in (rgb[..., :2], rgb.astype(np.float32), rgb.astype(np.uint16), rgb[None]):
        with pytest.raises(ValueError):
            to_gray(bad)


def test_pad_preprocess_and_crop_back():
    img = np.random.default_rng(1).integers(0, 256, (3, 101, 101), dtype=np.uint8)
    x = preprocess(img, SPEC)
    assert x.shape == (3, 128, 128, 1) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    b, e = pad_amounts(101, 128)
    assert (b, e) == (13, 14)
    scaled = img.astype(np.float32) * np.float32(1 / 255)
    np.testing.assert_array_equal(x[..., 0], np.pad(scaled, ((0, 0), (b, e), (b, e)), mode="reflect"))
    np.testing.assert_array_equal(x[:, b - 1, b:-e, 0], scaled[:, 1])  # reflect: the edge row is not repeated
    back = postprocess(x, SPEC)
    assert back.shape == (3, 101, 101) and back.dtype == np.float32
    np.testing.assert_array_equal(back, scaled)
    np.testing.assert_array_equal(np.round(back * 255).astype(np.uint8), img)
    assert preprocess(img[0], SPEC).shape == (1, 128, 128, 1)
    np.testing.assert_array_equal(postprocess(x[..., 0], SPEC), back)
    with pytest.raises(ValueError, match="100x100"):
        preprocess(np.zeros((100, 100), np.uint8), SPEC)
    with pytest.raises(ValueError, match="resize_mode"):
        preprocess(img, {**SPEC, "resize_mode": "crop"})


def test_resize_preprocess():
    spec = {**SPEC, "resize_mode": "resize"}
    const = np.full((2, 101, 101), 77, np.uint8)
    x = preprocess(const, spec)
    assert x.shape == (2, 128, 128, 1)
    np.testing.assert_allclose(x, np.float32(77 / 255), rtol=1e-6)
    np.testing.assert_allclose(postprocess(x, spec), np.float32(77 / 255), rtol=1e-6)
    # half-pixel centres, edges clamped (cv2 INTER_LINEAR / skimage order=1): 2 -> 4
    np.testing.assert_allclose(resize_bilinear(np.array([[[0.0, 1.0]]]), (1, 4)), [[[0, 0.25, 0.75, 1]]])


def test_resize_matches_torch_bilinear():
    torch = pytest.importorskip("torch")
    a = np.random.default_rng(2).random((2, 101, 101), dtype=np.float32)
    for src, size in ((a, 128), (resize_bilinear(a, (128, 128)), 101), (a, 64)):
        ref = torch.nn.functional.interpolate(
            torch.from_numpy(src)[:, None], size=(size, size), mode="bilinear", align_corners=False, antialias=False
        )[:, 0].numpy()
        np.testing.assert_allclose(resize_bilinear(src, (size, size)), ref, atol=1e-5)


# ---------------------------------------------------------------- a tiny exported model

BUILD = r"""
import json, os, sys
import numpy as np
import keras, tensorflow as tf
out = sys.argv[1]
keras.utils.set_random_seed(0)
i = keras.Input((128, 128, 1))
z = keras.layers.Conv2D(1, 3, padding="same", bias_initializer=keras.initializers.Constant(-0.3))(i)
model = keras.Model(i, keras.layers.Activation("sigmoid")(z))
model.save(f"{out}/tiny.keras")
model.export(f"{out}/tiny.tflite", format="litert", verbose=False)
keras.Model(i, z).export(f"{out}/tiny_logits.tflite", format="litert", verbose=False)
calib = np.random.default_rng(0).random((16, 128, 128, 1), dtype=np.float32)
model.export(f"{out}/tiny_int8.tflite", format="litert", verbose=False, optimizations=[tf.lite.Optimize.DEFAULT],
             representative_dataset=lambda: ([calib[k : k + 1]] for k in range(16)),
             target_spec={"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]},
             inference_input_type=tf.int8, inference_output_type=tf.uint8)
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """tiny*.tflite (+ sidecars) of a Conv2D(1, 3) + sigmoid model, a copy of pi/ alone, and 5 test images."""
    d = tmp_path_factory.mktemp("tiny")
    subprocess.run(
        [sys.executable, "-c", BUILD, str(d)],
        check=True,
        capture_output=True,
        timeout=600,
        env={**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    for name, extra in (("tiny", {}), ("tiny_logits", {"output": "logits"}), ("tiny_int8", {"quant": "int8"})):
        (d / f"{name}.tflite.json").write_text(json.dumps({**SPEC, "model_name": name, **extra}))
    shutil.copy(d / "tiny.tflite", d / "tiny_resize.tflite")
    (d / "tiny_resize.tflite.json").write_text(json.dumps({**SPEC, "resize_mode": "resize"}))
    shutil.copy(d / "tiny.tflite", d / "nosidecar.tflite")
    shutil.copytree(ROOT / "pi", d / "pi", ignore=shutil.ignore_patterns("__pycache__"))  # what the Pi gets
    rng = np.random.default_rng(3)
    (d / "images").mkdir()
    for k in range(5):
        g = rng.integers(0, 256, (101, 101), dtype=np.uint8)
        Image.fromarray(g if k == 4 else np.repeat(g[..., None], 3, axis=2)).save(d / "images" / f"img{k:02d}.png")  # RGB and L
    return d


def run_infer(tiny, model, out, *extra):
    return pi("pi/infer.py", "--model", tiny / model, "--images", tiny / "images", "--out", out, *extra, cwd=tiny)


def read_masks(folder):
    masks = {}
    for p in sorted(folder.glob("*.png")):
        a = np.array(Image.open(p))
        assert a.shape == (101, 101) and a.dtype == np.uint8 and set(np.unique(a)) <= {0, 255}
        masks[p.stem] = a > 0
    return masks


@pytest.fixture(scope="module")
def keras_probs(tiny):
    import keras

    model = keras.saving.load_model(tiny / "tiny.keras")
    files = sorted((tiny / "images").glob("*.png"))
    gray = np.stack([to_gray(np.array(Image.open(p))) for p in files])
    return {
        mode: postprocess(model.predict(preprocess(gray, {**SPEC, "resize_mode": mode}), verbose=0), SPEC | {"resize_mode": mode})
        for mode in ("pad", "resize")
    }


def test_infer_masks_equal_keras_and_submission_decodes(tiny, keras_probs, tmp_path):
    p = run_infer(tiny, "tiny.tflite", tmp_path / "m", "--submission", tmp_path / "sub.csv", "--batch", "3")
    assert p.returncode == 0 and p.stderr == "", p.stderr  # the runtime's XNNPACK INFO line is filtered
    line = p.stdout.strip().splitlines()[-1]
    assert re.match(rf"wrote 5 masks to {re.escape(str(tmp_path / 'm'))} \(salt in \d+ images\), \d+\.\d ms/image", line), line
    masks = read_masks(tmp_path / "m")
    assert list(masks) == [f"img{k:02d}" for k in range(5)]
    ref = keras_probs["pad"] > 0.5
    assert 0.02 < ref.mean() < 0.98  # both classes present
    assert sum(int((masks[i] != ref[k]).sum()) for k, i in enumerate(masks)) <= 5  # only pixels sitting at the threshold
    with open(tmp_path / "sub.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id", "rle_mask"] and [r[0] for r in rows[1:]] == list(masks)
    for i, rle in rows[1:]:
        np.testing.assert_array_equal(rle_decode(rle), masks[i])
    assert not list((tmp_path / "m").glob(".*")), "temporary files left behind"


def test_infer_resize_mode(tiny, keras_probs, tmp_path):
    assert run_infer(tiny, "tiny_resize.tflite", tmp_path / "m").returncode == 0
    masks = read_masks(tmp_path / "m")
    assert sum(int((m != (keras_probs["resize"][k] > 0.5)).sum()) for k, m in enumerate(masks.values())) <= 5


def test_infer_logits_threshold_and_int8(tiny, tmp_path):
    outs = {}
    for name, model in (("prob", "tiny.tflite"), ("logits", "tiny_logits.tflite"), ("int8", "tiny_int8.tflite")):
        p = run_infer(tiny, model, tmp_path / name, "--threshold", "0.3", "--batch", "2")
        assert p.returncode == 0, p.stderr
        outs[name] = np.stack(list(read_masks(tmp_path / name).values()))
    assert (outs["prob"] != outs["logits"]).sum() <= 5  # logit > log(0.3/0.7) <=> probability > 0.3
    assert (outs["prob"] == outs["int8"]).mean() > 0.97  # int8 input/uint8 output, (de)quantized by their scales


def test_infer_without_sidecar_warns(tiny, tmp_path):
    p = run_infer(tiny, "nosidecar.tflite", tmp_path / "m")
    assert p.returncode == 0 and "warning: no sidecar" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert len(read_masks(tmp_path / "m")) == 5


def test_infer_refuses_non_empty_out_unless_overwrite(tiny, tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "keep.txt").write_text("x")
    p = run_infer(tiny, "tiny.tflite", tmp_path / "m")
    assert p.returncode == 2 and "--overwrite" in p.stderr and len(list((tmp_path / "m").iterdir())) == 1
    assert run_infer(tiny, "tiny.tflite", tmp_path / "m", "--overwrite").returncode == 0
    assert len(read_masks(tmp_path / "m")) == 5


def test_infer_bad_input(tiny, tmp_path):
    (tmp_path / "notflite.tflite").write_bytes(b"\x00" * 64)
    (tmp_path / "garbage.tflite").write_bytes(b"\x00\x00\x00\x00TFL3" + b"\x07" * 200)
    for name in ("empty", "small", "corrupt", "truncated"):
        (tmp_path / name).mkdir()
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(tmp_path / "small" / "a.png")
    (tmp_path / "corrupt" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    good_png = (tiny / "images" / "img00.png").read_bytes()
    (tmp_path / "truncated" / "c.png").write_bytes(good_png[: len(good_png) // 2])
    (tmp_path / "afile").write_text("x")
    model, imgs = tiny / "tiny.tflite", tiny / "images"
    cases = [
        (["--model", tmp_path / "notflite.tflite", "--images", imgs], "not a TFLite model"),
        (["--model", tmp_path / "garbage.tflite", "--images", imgs], "is not a valid TFLite file"),
        (["--model", tmp_path / "missing.tflite", "--images", imgs], "does not exist"),
        (["--model", model, "--images", tmp_path / "small"], "a.png is 100x100, expected 101x101"),
        (["--model", model, "--images", tmp_path / "empty"], "no .png"),
        (["--model", model, "--images", tmp_path / "corrupt"], "b.png"),
        (["--model", model, "--images", tmp_path / "truncated"], "c.png"),
        (["--model", model, "--images", tmp_path / "nope"], "does not exist"),
        (["--model", model, "--images", imgs, "--threads", "0"], "--threads"),
        (["--model", model, "--images", imgs, "--threads", "two"], "--threads"),
        (["--model", model, "--images", imgs, "--threshold", "1.5"], "--threshold"),
        (["--model", model, "--images", imgs, "--batch", "0"], "--batch"),
    ]
    for k, (argv, needle) in enumerate(cases):
        p = pi("pi/infer.py", *argv, "--out", tmp_path / f"out{k}", cwd=tiny)
        err = p.stderr.strip().splitlines()
        assert p.returncode == 2 and len(err) == 1 and err[0].startswith("error: ") and needle in err[0], (argv, p.stderr)
        assert "Traceback" not in p.stderr
        assert not (tmp_path / f"out{k}").exists() or not any((tmp_path / f"out{k}").iterdir())
    p = pi("pi/infer.py", "--model", model, "--images", imgs, "--out", tmp_path / "afile" / "m", cwd=tiny)  # unwritable --out
    assert p.returncode == 2 and p.stderr.startswith("error: cannot write to") and len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_benchmark_tiny(tiny, tmp_path):
    p = pi("pi/benchmark.py", "--model", tiny / "tiny.tflite", "--threads", "1", "--runs", "3", "--json", tmp_path / "b.json", cwd=tiny)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    assert "median_ms" in p.stdout and "tiny.tflite" in p.stdout
    b = json.loads((tmp_path / "b.json").read_text())
    r = b["results"][0]
    assert r["threads"] == 1 and 0 < r["median_ms"] <= r["p90_ms"] and r["img_per_s"] > 0 and b["size_kb"] > 0
    assert b["macs"] == 128 * 128 * 1 * 3 * 3 * 1  # one 3x3 conv, 1 -> 1 channel, on 128x128
    p = pi("pi/benchmark.py", "--model", tiny / "tiny.keras", "--runs", "3", cwd=tiny)
    assert p.returncode == 2 and p.stderr.startswith("error: ") and "not a TFLite model" in p.stderr and "Traceback" not in p.stderr


def test_pi_imports_nothing_from_the_project_nor_tensorflow():
    allowed = {
        "argparse",
        "contextlib",
        "csv",
        "io",
        "json",
        "os",
        "sys",
        "tempfile",
        "time",
        "pathlib",
        "numpy",
        "PIL",
        "platform",
        "warnings",
        "runner",
        "tgs_common",
        "infer",
        "__future__",
        "ai_edge_litert",
        "tflite_runtime",
        "tensorflow",
        "math",
        "sidecar",
        "image_io",
        "shutil",
        "struct",
        "hashlib",
        "re",
        "typing",
        "tflite_check",
        "bench_csv",
        "errno",
    }
    for f in (ROOT / "pi").glob("*.py"):
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and node.level == 0
                else []
            )
            for n in names:
                assert n.split(".")[0] in allowed, f"{f.name} imports {n}"
    # tensorflow appears only in runner.py's branch for processes that already loaded it (the project's own tools)
    assert 'if "tensorflow" in sys.modules:' in (ROOT / "pi" / "runner.py").read_text()


@pytest.mark.skipif("PI_PYTHON" not in os.environ, reason="PI_PYTHON (the Pi environment) is set by .ci/run")
def test_pi_environment_has_no_tensorflow():
    code = "import importlib.util as u, numpy; print(u.find_spec('tensorflow') is None, u.find_spec('keras') is None, numpy.__version__)"
    out = subprocess.run([PI_PYTHON, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[:2] == ["True", "True"] and out[2].startswith("1.")


# ---------------------------------------------------------------- export_tflite.py on a trained U-Net (shared `runs` fixture)


@pytest.fixture(scope="module")
def exported(runs, synth_dir):
    out = runs["base"] / "export"
    cli("export_tflite.py", "--model", runs["teacher"] / "teacher.keras", "--data", synth_dir, "--out", out, "--calib", "64")
    return out


def test_export_table_and_parity(exported):
    rep = json.loads((exported / "export.json").read_text())
    rows = {r["format"]: r for r in rep["rows"]}
    assert set(rows) == {"keras", "fp32", "fp16", "int8"}
    assert rows["fp32"]["max_abs_diff"] < 1e-4  # fp32 equals Keras to float precision
    assert rows["fp32"]["d_mean_iou"] == 0 and rows["fp32"]["pixel_agreement"] == 1.0
    assert rows["fp16"]["max_abs_diff"] < 0.05
    assert rows["int8"]["pixel_agreement"] > 0.97 and abs(rows["int8"]["d_mean_iou"]) < 0.03
    assert rows["int8"]["size_kb"] < rows["fp16"]["size_kb"] < rows["fp32"]["size_kb"]
    for fmt in ("fp32", "fp16", "int8"):
        side = json.loads((exported / f"teacher_{fmt}.tflite.json").read_text())
        assert side["input_size"] == 104 and side["resize_mode"] == "pad" and side["quant"] == fmt
        data = (exported / f"teacher_{fmt}.tflite").read_bytes()  # what the Pi checks a copy against
        assert side["size_bytes"] == len(data) and side["sha256"] == hashlib.sha256(data).hexdigest()


def test_export_refuses_to_overwrite(exported, runs, synth_dir):
    before = (exported / "teacher_fp32.tflite").read_bytes()
    p = cli("export_tflite.py", "--model", runs["teacher"] / "teacher.keras", "--data", synth_dir, "--out", exported, check=False)
    assert p.returncode == 2 and "--overwrite" in p.stderr
    assert (exported / "teacher_fp32.tflite").read_bytes() == before


def test_evaluate_tflite_equals_export_table(exported, synth_dir):
    rows = {r["format"]: r for r in json.loads((exported / "export.json").read_text())["rows"]}
    # export runs TensorFlow's interpreter, evaluate (no TensorFlow loaded) tflite-runtime's: fp32 agrees to
    # float precision; int8 kernels may differ by a quantization step on a few pixels
    for fmt, tol in (("fp32", 1e-6), ("int8", 5e-3)):
        out = json.loads(cli("evaluate.py", "--model", exported / f"teacher_{fmt}.tflite", "--data", synth_dir).stdout)
        assert abs(out["mean_iou"] - rows[fmt]["mean_iou"]) <= tol and abs(out["kaggle_map"] - rows[fmt]["kaggle_map"]) <= tol


def test_pi_on_exported_unet(exported, synth_dir, tmp_path):
    """The Pi programs on a real U-Net export (int8; transposed convs; input 104)."""
    model, images = exported / "teacher_int8.tflite", synth_dir / "test" / "images"
    p = pi("pi/infer.py", "--model", model, "--images", images, "--out", tmp_path / "m", "--submission", tmp_path / "sub.csv")
    assert p.returncode == 0, p.stderr
    masks = read_masks(tmp_path / "m")
    assert len(masks) == len(list(images.glob("*.png")))
    with open(tmp_path / "sub.csv") as f:
        for i, rle in list(csv.reader(f))[1:]:
            np.testing.assert_array_equal(rle_decode(rle), masks[i])
    p = pi("pi/benchmark.py", "--model", model, "--threads", "1,2", "--runs", "3", "--json", tmp_path / "b.json")
    assert p.returncode == 0, p.stderr
    b = json.loads((tmp_path / "b.json").read_text())
    assert [r["threads"] for r in b["results"]] == [1, 2] and b["macs"] > 1e6
