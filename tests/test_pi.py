"""Export to TFLite with parity, and the Raspberry Pi program in its own TensorFlow-free environment.

PI_PYTHON (set by .ci/run) is a Python whose environment holds only pi/requirements.txt
(tflite-runtime 2.14, numpy<2, pillow): pi/infer.py must work there on models exported by
TensorFlow 2.21. Without it the tests use this interpreter, in a subprocess without TensorFlow.
"""

import ast
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from pi.tgs_common import postprocess, preprocess, rle_decode, rle_encode
from tests.conftest import ROOT, cli

PI_PYTHON = os.environ.get("PI_PYTHON", sys.executable)


def pi(*args):
    return subprocess.run([PI_PYTHON, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=300)


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


def test_export_refuses_to_overwrite(exported, runs, synth_dir):
    before = (exported / "teacher_fp32.tflite").read_bytes()
    p = cli("export_tflite.py", "--model", runs["teacher"] / "teacher.keras", "--data", synth_dir, "--out", exported, check=False)
    assert p.returncode == 2 and "--overwrite" in p.stderr
    assert (exported / "teacher_fp32.tflite").read_bytes() == before


def test_evaluate_tflite_equals_export_table(exported, runs, synth_dir):
    rows = {r["format"]: r for r in json.loads((exported / "export.json").read_text())["rows"]}
    # export runs TensorFlow's interpreter, evaluate (no TensorFlow loaded) tflite-runtime's: fp32 agrees to
    # float precision; int8 kernels may differ by a quantization step on a few pixels
    for fmt, tol in (("fp32", 1e-6), ("int8", 5e-3)):
        out = json.loads(cli("evaluate.py", "--model", exported / f"teacher_{fmt}.tflite", "--data", synth_dir).stdout)
        assert abs(out["mean_iou"] - rows[fmt]["mean_iou"]) <= tol and abs(out["kaggle_map"] - rows[fmt]["kaggle_map"]) <= tol


@pytest.mark.parametrize("fmt", ["fp32", "int8"])
def test_pi_infer_masks_and_submission(exported, runs, synth_dir, tmp_path, fmt):
    model = exported / f"teacher_{fmt}.tflite"
    p = pi("pi/infer.py", "--model", model, "--images", synth_dir / "test" / "images", "--out", tmp_path / "m", "--submission",
           tmp_path / "sub.csv")
    assert p.returncode == 0, p.stderr
    ids = sorted(q.stem for q in (synth_dir / "test" / "images").glob("*.png"))
    written = {}
    for i in ids:
        a = np.array(Image.open(tmp_path / "m" / f"{i}.png"))
        assert a.shape == (101, 101) and set(np.unique(a)) <= {0, 255}
        written[i] = a > 0
    with open(tmp_path / "sub.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id", "rle_mask"] and len(rows) == len(ids) + 1
    for i, rle in rows[1:]:
        np.testing.assert_array_equal(rle_decode(rle), written[i])  # the CSV decodes back to the PNGs
    if fmt == "fp32":  # same masks as the Keras model on the same preprocessing
        import keras

        import common.layers  # noqa: F401

        m = keras.saving.load_model(runs["teacher"] / "teacher.keras")
        spec = json.loads((exported / "teacher_fp32.tflite.json").read_text())
        gray = np.stack([np.array(Image.open(synth_dir / "test" / "images" / f"{i}.png"))[..., 0] for i in ids])
        probs = postprocess(m.predict(preprocess(gray, spec), verbose=0), spec)
        differ = sum(int((written[i] != (probs[k] > 0.5)).sum()) for k, i in enumerate(ids))
        assert differ <= 5, differ  # at most a few pixels sitting exactly at the threshold


def test_pi_benchmark(exported, tmp_path):
    p = pi("pi/benchmark.py", "--model", exported / "teacher_int8.tflite", "--threads", "1", "--runs", "3", "--json", tmp_path / "b.json")
    assert p.returncode == 0, p.stderr
    b = json.loads((tmp_path / "b.json").read_text())
    r = b["results"][0]
    assert r["threads"] == 1 and r["median_ms"] > 0 and r["p90_ms"] >= r["median_ms"] and b["macs"] and b["macs"] > 1e6


def test_pi_bad_input(exported, tmp_path):
    (tmp_path / "notflite.tflite").write_bytes(b"\x00" * 64)
    (tmp_path / "empty").mkdir()
    (tmp_path / "small").mkdir()
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(tmp_path / "small" / "a.png")
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    good = exported / "teacher_fp32.tflite"
    cases = [
        (["--model", tmp_path / "notflite.tflite", "--images", tmp_path / "small"], "not a TFLite model"),
        (["--model", tmp_path / "missing.tflite", "--images", tmp_path / "small"], "does not exist"),
        (["--model", good, "--images", tmp_path / "small"], "100x100"),
        (["--model", good, "--images", tmp_path / "empty"], "no .png"),
        (["--model", good, "--images", tmp_path / "corrupt"], "cannot read image"),
        (["--model", good, "--images", tmp_path / "nope"], "does not exist"),
        (["--model", good, "--images", tmp_path / "small", "--threads", "0"], "--threads"),
        (["--model", good, "--images", tmp_path / "small", "--threshold", "1.5"], "--threshold"),
    ]
    for k, (argv, needle) in enumerate(cases):
        p = pi("pi/infer.py", *argv, "--out", tmp_path / f"out{k}")
        err = p.stderr.strip().splitlines()
        assert p.returncode == 2 and err and err[-1].startswith("error:") and needle in err[-1], (argv, p.stderr)
        assert "Traceback" not in p.stderr
        assert not (tmp_path / f"out{k}").exists() or not any((tmp_path / f"out{k}").iterdir())


def test_pi_imports_nothing_from_the_project_nor_tensorflow():
    allowed = {"argparse", "csv", "io", "json", "os", "sys", "tempfile", "time", "pathlib", "numpy", "PIL", "platform", "warnings",
               "runner", "tgs_common", "infer", "__future__", "ai_edge_litert", "tflite_runtime", "tensorflow"}
    for f in (ROOT / "pi").glob("*.py"):
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            for n in names:
                assert n.split(".")[0] in allowed, f"{f.name} imports {n}"
    # tensorflow appears only in runner.py's branch for processes that already loaded it (the project's own tools)
    src = (ROOT / "pi" / "runner.py").read_text()
    assert 'if "tensorflow" in sys.modules:' in src


@pytest.mark.skipif("PI_PYTHON" not in os.environ, reason="PI_PYTHON (the Pi environment) is set by .ci/run")
def test_pi_environment_has_no_tensorflow():
    code = "import importlib.util as u, numpy; print(u.find_spec('tensorflow') is None, u.find_spec('keras') is None, numpy.__version__)"
    out = subprocess.run([PI_PYTHON, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[:2] == ["True", "True"] and out[2].startswith("1.")


def test_rle_round_trip_and_errors():
    rng = np.random.default_rng(0)
    for _ in range(20):
        m = rng.random((101, 101)) < rng.random()
        np.testing.assert_array_equal(rle_decode(rle_encode(m)), m)
    assert rle_encode(np.zeros((101, 101), bool)) == ""
    assert rle_encode(np.ones((101, 101), bool)) == "1 10201"
    for bad in ("1 2 3", "a 2", "0 5", "5 0", "10200 5", "10 5 12 3"):
        with pytest.raises(ValueError):
            rle_decode(bad)
