"""pi/benchmark.py on several models (--models, --csv) and student.export's check that the Pi runtime loads each file.

The benchmark runs as on the Pi: PI_PYTHON (set by .ci/run and scripts/test.sh: tflite-runtime, numpy, pillow, no
TensorFlow; default this interpreter), from a copy of pi/ alone. student.export.convert needs the tensorflow backend and this
process has torch, so its checks run in ONE subprocess that also builds the models (~15 s of TensorFlow start-up).
"""

import csv
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT, run_with_tensorflow

PI_PYTHON = os.environ.get("PI_PYTHON", sys.executable)
COLUMNS = ["model", "path", "size_kb", "macs", "threads", "median_ms", "p90_ms", "img_per_s", "runtime", "machine"]

# argv: ROOT, OUT. Builds a.tflite / b.tflite (builtin ops) and flex.tflite (FlexAtan: a TensorFlow op without a
# builtin TFLite kernel), then runs student.export's checks and writes OUT/checks.json.
BUILD_AND_CHECK = r"""
import contextlib, io, json, os, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
out = Path(sys.argv[2])
import keras, tensorflow as tf
from student import export
from common.cli import UserError

keras.utils.set_random_seed(0)
models = {}
for name, filters in (("a", 1), ("b", 2)):
    i = keras.Input((64, 64, 1))
    z = keras.layers.Conv2D(filters, 3, padding="same")(i)
    z = keras.layers.Conv2D(1, 1, name="logits")(z)
    models[name] = keras.Model(i, keras.layers.Activation("sigmoid")(z))
    models[name].export(str(out / f"{name}.tflite"), format="litert", verbose=False)

f = tf.function(tf.math.atan, input_signature=[tf.TensorSpec([1, 4], tf.float32)])
conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
(out / "flex.tflite").write_bytes(conv.convert())

res = {}
def check(key, *args, **kwargs):
    try:
        export.check_pi_runtime(*args, **kwargs)
        res[key] = None
    except UserError as e:
        res[key] = str(e)

check("builtin", out / "a.tflite")
check("flex", out / "flex.tflite")
check("flex_shown", out / "flex.tflite", shown=Path("x/student_fp32.tflite"))

# the real check inside convert(): a builtin model is kept
export.convert(models["a"], "fp32", out / "ok" / "a_fp32.tflite", None, False)
res["ok_files"] = sorted(os.listdir(out / "ok"))

# a failing check inside convert(): it sees the temp file, and nothing is left behind
real, seen = export.check_pi_runtime, {}
def refuse(path, shown=None):
    seen.update(path=str(path), exists=path.is_file(), size=path.stat().st_size, target_exists=shown.exists())
    raise UserError(f"{shown}: the Pi runtime (test) cannot run it: op FlexTest")
export.check_pi_runtime = refuse
try:
    export.convert(models["a"], "fp32", out / "bad" / "a_fp32.tflite", None, False)
    res["bad_error"] = None
except UserError as e:
    res["bad_error"] = str(e)
res["bad_seen"], res["bad_files"] = seen, sorted(os.listdir(out / "bad"))
export.check_pi_runtime = real

# neither runtime importable: one note, printed once, no error
export.PI_RUNTIME_CHECK = export.PI_RUNTIME_CHECK.replace("tflite_runtime.interpreter", "no_such_runtime_1").replace(
    "ai_edge_litert.interpreter", "no_such_runtime_2")
buf = io.StringIO()
with contextlib.redirect_stdout(buf):
    check("none_1", out / "flex.tflite")
    check("none_2", out / "flex.tflite")
res["none_stdout"] = buf.getvalue()
(out / "checks.json").write_text(json.dumps(res))
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """a.tflite, b.tflite, flex.tflite, a copy of pi/ alone, and checks.json (student.export's checks)."""
    d = tmp_path_factory.mktemp("bench")
    run_with_tensorflow(BUILD_AND_CHECK, ROOT, d, timeout=600)
    shutil.copytree(ROOT / "pi", d / "pi", ignore=shutil.ignore_patterns("__pycache__"))  # what the Pi gets
    return d


def bench(built, *args):
    return subprocess.run([PI_PYTHON, "pi/benchmark.py", *map(str, args)], cwd=built, capture_output=True, text=True, timeout=300)


def read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], [dict(zip(rows[0], r)) for r in rows[1:]]


def one_error_line(p, needle=""):
    err = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(err) == 1 and err[0].startswith("error: ") and needle in err[0], p.stderr
    assert "Traceback" not in p.stderr


# ---------------------------------------------------------------- pi/benchmark.py


def test_benchmark_models_csv(built, tmp_path):
    out = tmp_path / "sub" / "out.csv"
    p = bench(built, "--models", built / "a.tflite", built / "b.tflite", "--threads", "1", "--runs", "3", "--warmup", "1", "--csv", out)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    header, rows = read_csv(out)
    assert header == COLUMNS and len(rows) == 2
    assert [r["model"] for r in rows] == ["a.tflite", "b.tflite"]
    assert [r["path"] for r in rows] == [str(built / "a.tflite"), str(built / "b.tflite")]
    # 3x3 conv (1 -> f channels) + 1x1 conv (f -> 1) on 64x64
    assert [int(r["macs"]) for r in rows] == [64 * 64 * (9 * f + f) for f in (1, 2)]
    for r in rows:
        assert r["threads"] == "1" and 0 < float(r["median_ms"]) <= float(r["p90_ms"]) and float(r["img_per_s"]) > 0
        assert float(r["size_kb"]) > 0 and r["machine"]
        assert re.fullmatch(r"(tflite-runtime|ai-edge-litert|tensorflow) \S+", r["runtime"]), r["runtime"]
    assert len({r["runtime"] for r in rows}) == 1
    table = p.stdout.strip().splitlines()
    assert table[0].split()[-1] == "runtime" and len(table) == 3
    assert all(line.endswith(rows[0]["runtime"]) for line in table[1:]) and "a.tflite" in table[1] and "b.tflite" in table[2]
    assert not [x for x in out.parent.iterdir() if x.name.startswith(".")], "temporary files left behind"


def test_benchmark_model_and_models_union_and_json(built, tmp_path):
    a, b = built / "a.tflite", built / "b.tflite"
    p = bench(built, "--model", a, "--models", a, b, "--threads", "1,2", "--runs", "2", "--warmup", "0", "--json", tmp_path / "b.json")
    assert p.returncode == 0, p.stderr
    rep = json.loads((tmp_path / "b.json").read_text())
    assert [(r["model"], r["threads"]) for r in rep["results"]] == [("a.tflite", 1), ("a.tflite", 2), ("b.tflite", 1), ("b.tflite", 2)]
    assert all(list(r) == COLUMNS for r in rep["results"])
    assert rep["runtime"] == rep["results"][0]["runtime"] and rep["runtime"] and rep["runs"] == 2 and rep["rounds"] == 5
    assert "model" not in rep  # the single-model keys only with one model
    p = bench(built, "--model", a, "--runs", "2", "--json", tmp_path / "one.json")
    one = json.loads((tmp_path / "one.json").read_text())
    assert p.returncode == 0 and one["model"] == str(a) and one["macs"] == 64 * 64 * 10 and one["runtime"] == rep["runtime"]


def test_run_pi_benchmark_reads_its_csv_back(built, tmp_path):
    """student.latency.run_pi_benchmark, the driver of benchmarks.arch_latency and experiments.frontier: the CSV's
    rows, checked, with the file name; a failing benchmark is one UserError naming the python and the reason."""
    from common.cli import UserError
    from student.latency import run_pi_benchmark

    df = run_pi_benchmark([built / "a.tflite", built / "b.tflite"], PI_PYTHON, [1, 2], 2, tmp_path / "b.csv")
    assert list(df.columns) == [*COLUMNS, "file"] and len(df) == 4
    assert list(df.file) == ["a.tflite", "a.tflite", "b.tflite", "b.tflite"] and list(df.threads) == [1, 2, 1, 2]
    with pytest.raises(UserError, match=rf"pi/benchmark.py with {re.escape(PI_PYTHON)} failed \(exit 2\): .*nowhere"):
        run_pi_benchmark([tmp_path / "nowhere.tflite"], PI_PYTHON, [1], 2, tmp_path / "c.csv")


def test_benchmark_times_models_interleaved(monkeypatch, tmp_path):
    """Every (model, threads) is warmed up, then timed in --rounds passes over all of them, so a background load
    that comes and goes falls on every model alike (a fake interpreter records the order of its calls)."""
    import numpy as np

    monkeypatch.setattr(sys, "path", list(sys.path))  # pi/benchmark.py puts pi/ on the path, as on the Pi
    from pi import benchmark

    assert benchmark.round_sizes(7, 3) == [3, 2, 2] and benchmark.round_sizes(2, 5) == [1, 1]
    assert benchmark.round_sizes(50, 5) == [10] * 5
    calls = []

    class Interp:
        def __init__(self, name):
            self.name = name

        def set_tensor(self, index, x):
            assert x.shape == (1, 4, 4, 1)

        def invoke(self):
            calls.append(self.name)

        def get_tensor(self, index):
            return None

    class Model:
        dynamic_batch = False
        inp = {"shape": [1, 4, 4, 1], "index": 0, "dtype": np.float32}
        out = {"index": 1}

        def __init__(self, path, threads):
            self.interp = Interp(f"{path.stem}{threads}")

    monkeypatch.setattr(benchmark, "load_model", Model)
    monkeypatch.setattr(benchmark, "count_macs", lambda interp: None)
    monkeypatch.setattr(benchmark, "runtime_name", lambda: "fake 0")
    paths = [tmp_path / "a.tflite", tmp_path / "b.tflite"]
    for path in paths:
        path.write_bytes(b"\0" * 1024)
    rows = benchmark.bench_models(paths, [1, 2], runs=5, warmup=1, rounds=2)
    keys = ["a1", "a2", "b1", "b2"]
    assert calls == keys + [k for k in keys for _ in range(3)] + [k for k in keys for _ in range(2)]
    assert [(r["model"], r["threads"]) for r in rows] == [("a.tflite", 1), ("a.tflite", 2), ("b.tflite", 1), ("b.tflite", 2)]
    assert all(0 <= r["median_ms"] <= r["p90_ms"] and r["size_kb"] == 1.0 and r["runtime"] == "fake 0" for r in rows)


def test_benchmark_refuses_existing_csv_unless_overwrite(built, tmp_path):
    out = tmp_path / "out.csv"
    out.write_text("keep me\n")
    p = bench(built, "--models", built / "a.tflite", "--runs", "2", "--csv", out)
    one_error_line(p, "--overwrite")
    assert out.read_text() == "keep me\n"
    p = bench(built, "--models", built / "a.tflite", "--runs", "2", "--csv", out, "--overwrite")
    assert p.returncode == 0, p.stderr
    header, rows = read_csv(out)
    assert header == COLUMNS and len(rows) == 1
    assert sorted(x.name for x in tmp_path.iterdir()) == ["out.csv"]


def test_benchmark_bad_input(built, tmp_path):
    (tmp_path / "not.tflite").write_bytes(b"\x00" * 64)
    a, out = built / "a.tflite", tmp_path / "out.csv"
    cases = [
        (["--models", a, tmp_path / "missing.tflite"], "does not exist"),
        (["--models", a, tmp_path / "not.tflite"], "not a TFLite model"),
        (["--models", a, "--threads", "1,x"], "--threads"),
        (["--models", a, "--threads", "0"], "--threads"),
        (["--models", a, "--rounds", "0"], "--rounds"),
        (["--runs", "2"], "--model"),
        (["--models"], "--models"),
        (["--models", a, "--csv", tmp_path], "directory"),
    ]
    for argv, needle in cases:
        one_error_line(bench(built, *argv, *([] if "--csv" in argv else ["--csv", out])), needle)
        assert not out.exists()


# ---------------------------------------------------------------- student.export.check_pi_runtime


@pytest.fixture(scope="module")
def checks(built):
    return json.loads((built / "checks.json").read_text())


def test_check_pi_runtime_refuses_a_flex_op(built, checks):
    assert checks["builtin"] is None
    msg = checks["flex"]
    assert re.match(
        rf"{re.escape(str(built / 'flex.tflite'))}: the Pi runtime \((tflite-runtime|ai-edge-litert) \S+\) cannot run it: ", msg
    ), msg
    assert "FlexAtan" in msg and "\n" not in msg
    assert checks["flex_shown"].startswith("x/student_fp32.tflite: the Pi runtime (")


def test_export_convert_keeps_a_model_that_passes(checks):
    assert checks["ok_files"] == ["a_fp32.tflite"]


def test_export_convert_failed_check_leaves_no_file(built, checks):
    assert checks["bad_error"].startswith(f"{built / 'bad' / 'a_fp32.tflite'}: the Pi runtime (test) cannot run it")
    seen = checks["bad_seen"]
    assert seen["exists"] and seen["size"] > 0 and not seen["target_exists"]  # checked on the temp file, before the rename
    assert seen["path"].endswith(".tflite") and seen["path"] != str(built / "bad" / "a_fp32.tflite")
    assert checks["bad_files"] == []  # neither the model nor its temp file


def test_check_pi_runtime_without_a_runtime_notes_once(checks):
    assert checks["none_1"] is None and checks["none_2"] is None
    lines = checks["none_stdout"].strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("note: ") and "tflite-runtime" in lines[0]
