"""The Pi programs on broken model files: one `error:` line and exit 2, never a crash (issue "Broken files and full disks").

A TFLite runtime follows a .tflite's offsets unchecked: a truncated file (an export cut short, an interrupted copy)
killed pi/infer.py and pi/benchmark.py with SIGSEGV/SIGBUS and no message. Now the file is checked before the runtime
sees it: against the size and sha256 its sidecar records (export_tflite.py writes them), and by pi/tflite_check.py,
a pure-Python flatbuffer checker. The programs run as on the Pi: under PI_PYTHON (tflite-runtime 2.14, numpy<2,
pillow, no TensorFlow; default this interpreter), from a copy of pi/ alone. The models are built once, in one
TensorFlow subprocess, which also reads them with TensorFlow's own generated schema: the checker's parse must agree.

    PI_PYTHON=.venv-pi/bin/python .venv/bin/python -m pytest -q tests/test_pi_damaged.py
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from pi.sidecar import SidecarError, check_model_bytes, file_digest, read_sidecar, sidecar_path
from pi.tflite_check import TFLiteFileError, check_tflite, parse_tflite
from tests.conftest import ROOT, run_with_tensorflow

PI_PYTHON = os.environ.get("PI_PYTHON", sys.executable)
PI_PYTHON = os.path.abspath(PI_PYTHON) if os.sep in PI_PYTHON else PI_PYTHON  # the programs run with another cwd
SPEC = {"format": "tgs-seg-sidecar/1", "orig_size": 101, "input_size": 128, "resize_mode": "pad", "scale": 1 / 255, "threshold": 0.5}

# argv: OUT. Builds the models, then dumps what TensorFlow's generated schema reads in each (OUT/oracle.json).
BUILD = r"""
import json, sys
from pathlib import Path
import numpy as np
import keras, tensorflow as tf
from tensorflow.lite.python import schema_py_generated as fb
out = Path(sys.argv[1])
keras.utils.set_random_seed(0)

def unet_like(size=128, channels=1, flat=False):
    i = keras.Input((size, size) if flat else (size, size, channels))
    x = keras.layers.Reshape((size, size, 1))(i) if flat else i
    z = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    z = keras.layers.Conv2D(1, 3, padding="same")(z)
    return keras.Model(i, keras.layers.Activation("sigmoid")(z))

good = unet_like()
good.export(str(out / "good.tflite"), format="litert", verbose=False)
good.export(str(out / "offset.tflite"), format="litert", verbose=False, _experimental_use_buffer_offset=True)  # buffers after the flatbuffer
calib = np.random.default_rng(0).random((8, 128, 128, 1), dtype=np.float32)
good.export(str(out / "int8.tflite"), format="litert", verbose=False, optimizations=[tf.lite.Optimize.DEFAULT],
            representative_dataset=lambda: ([calib[k : k + 1]] for k in range(8)),
            target_spec={"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]})
unet_like(channels=3).export(str(out / "rgb.tflite"), format="litert", verbose=False)  # 3 input channels
unet_like(flat=True).export(str(out / "flat.tflite"), format="litert", verbose=False)  # a 3-D input: no channel axis
unet_like(size=64).export(str(out / "small.tflite"), format="litert", verbose=False)  # 101 cannot be reflect-padded to 64
i4 = keras.Input((128, 128, 1), batch_size=4)  # good's weights at a fixed batch of 4 (export() would make it dynamic)
(out / "batch4.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(keras.Model(i4, good(i4))).convert())
f = tf.function(tf.math.atan, input_signature=[tf.TensorSpec([1, 4], tf.float32)])  # a custom (Flex) op: custom_code/options
conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
(out / "flex.tflite").write_bytes(conv.convert())

def vec(get, n):
    return [int(get(k)) for k in range(n)]

oracle = {}
for name in ("good", "offset", "int8", "rgb", "flat", "small", "batch4", "flex"):
    m = fb.Model.GetRootAs((out / f"{name}.tflite").read_bytes(), 0)
    bufs = [m.Buffers(k) for k in range(m.BuffersLength())]
    subgraphs = []
    for g in range(m.SubgraphsLength()):
        sg = m.Subgraphs(g)
        tensors = [sg.Tensors(k) for k in range(sg.TensorsLength())]
        ops = [sg.Operators(k) for k in range(sg.OperatorsLength())]
        subgraphs.append({
            "inputs": vec(sg.Inputs, sg.InputsLength()), "outputs": vec(sg.Outputs, sg.OutputsLength()),
            "tensors": [{"name": t.Name().decode(), "shape": vec(t.Shape, t.ShapeLength()), "type": t.Type(), "buffer": t.Buffer(),
                         "scale": t.Quantization().ScaleLength() if t.Quantization() else 0,
                         "zero_point": [int(z) for z in t.Quantization().ZeroPointAsNumpy()] if t.Quantization() and t.Quantization().ZeroPointLength() else []}
                        for t in tensors],
            "operators": [{"opcode_index": o.OpcodeIndex(), "inputs": vec(o.Inputs, o.InputsLength()), "outputs": vec(o.Outputs, o.OutputsLength()),
                           "builtin_options_type": o.BuiltinOptionsType(), "custom_options": o.CustomOptionsLength()} for o in ops],
        })
    oracle[name] = {
        "version": m.Version(),
        "buffers": [{"data": b.DataLength(), "offset": b.Offset(), "size": b.Size()} for b in bufs],
        "operator_codes": [{"builtin_code": m.OperatorCodes(k).BuiltinCode(), "custom_code": (m.OperatorCodes(k).CustomCode() or b"").decode()}
                           for k in range(m.OperatorCodesLength())],
        "metadata": [{"name": m.Metadata(k).Name().decode(), "buffer": m.Metadata(k).Buffer()} for k in range(m.MetadataLength())],
        "signature_keys": [m.SignatureDefs(k).SignatureKey().decode() for k in range(m.SignatureDefsLength())],
        "subgraphs": subgraphs,
    }
(out / "oracle.json").write_text(json.dumps(oracle))
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """good/offset/int8/rgb/flat/small/batch4/flex.tflite, oracle.json, a copy of pi/ alone and 3 images."""
    d = tmp_path_factory.mktemp("damaged")
    run_with_tensorflow(BUILD, d, timeout=900)
    shutil.copytree(ROOT / "pi", d / "pi", ignore=shutil.ignore_patterns("__pycache__"))  # what the Pi gets
    (d / "images").mkdir()
    rng = np.random.default_rng(0)
    for k in range(3):
        Image.fromarray(rng.integers(0, 256, (101, 101), dtype=np.uint8)).save(d / "images" / f"i{k}.png")
    return d


def model_bytes(built, name="good") -> bytes:
    return (built / f"{name}.tflite").read_bytes()


def pi_run(built, *args):
    return subprocess.run([PI_PYTHON, *map(str, args)], cwd=built, capture_output=True, text=True, timeout=300)


def infer(built, model, out):
    return pi_run(built, "pi/infer.py", "--model", model, "--images", built / "images", "--out", out)


def bench(built, model):
    return pi_run(built, "pi/benchmark.py", "--model", model, "--runs", "2", "--warmup", "0")


def one_error_line(p, needle: str = "", name: str = "") -> str:
    """Exit 2 (not a signal), one `error:` line naming the file, no traceback; returns the line."""
    err = p.stderr.strip().splitlines()
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert needle in err[0] and name in err[0], err[0]
    return err[0]


def write_model(folder: Path, name: str, data: bytes, sidecar_of: bytes | None) -> Path:
    """folder/name.tflite holding data; with a sidecar recording the digest of `sidecar_of` (the intact file)."""
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.tflite"
    path.write_bytes(data)
    if sidecar_of is not None:
        sidecar_path(path).write_text(json.dumps({**SPEC, **file_digest(sidecar_of)}))
    return path


# ---------------------------------------------------------------- where things are in a flatbuffer (an independent reader)


def u32(b, pos):
    return struct.unpack_from("<I", b, pos)[0]


def field_pos(b, table, slot):
    """Position of a table's field `slot` (0 if absent), read by hand."""
    vt = table - struct.unpack_from("<i", b, table)[0]
    vsize = struct.unpack_from("<H", b, vt)[0]
    off = struct.unpack_from("<H", b, vt + 4 + 2 * slot)[0] if 4 + 2 * slot < vsize else 0
    return table + off if off else 0


def buffers_vector(b) -> int:
    """Position of the Model's buffers vector (its length prefix)."""
    root = u32(b, 0)
    f = field_pos(b, root, 4)
    return f + u32(b, f)


def largest_buffer_data(b) -> tuple[int, int]:
    """(position, length) of the largest buffer's data: the weights."""
    vec = buffers_vector(b)
    best = (0, 0)
    for k in range(u32(b, vec)):
        elem = vec + 4 + 4 * k
        buf = elem + u32(b, elem)
        f = field_pos(b, buf, 0)
        if f:
            data = f + u32(b, f)
            best = max(best, (u32(b, data), data + 4), key=lambda x: x[0])
    return best[1], best[0]


def flipped(b: bytes, pos: int) -> bytes:
    x = bytearray(b)
    x[pos] ^= 0xFF
    return bytes(x)


def damaged_cases(b: bytes) -> dict:
    """name -> damaged copy of the model bytes b: truncations, an empty file, flipped bytes in the structure."""
    vec = buffers_vector(b)
    root = u32(b, 0)
    vt = root - struct.unpack_from("<i", b, root)[0]
    return {
        "trunc10": b[: len(b) // 10],
        "trunc50": b[: len(b) // 2],
        "trunc90": b[: len(b) * 9 // 10],
        "trunc_size_minus_1": b[:-1],
        "trunc_header": b[:6],
        "empty": b"",
        "flip_root_offset": flipped(b, 1),
        "flip_model_vtable_size": flipped(b, vt + 1),
        "flip_buffers_length": flipped(b, vec + 2),
        "flip_buffers_entry": flipped(b, vec + 4 + 4 * (u32(b, vec) // 2) + 2),  # an offset inside the buffers table
    }


# ---------------------------------------------------------------- the checker: agrees with TensorFlow's schema on real files


def test_checker_parse_agrees_with_tensorflow_schema(built):
    oracle = json.loads((built / "oracle.json").read_text())
    for name, want in oracle.items():
        data = model_bytes(built, name)
        m = parse_tflite(data)
        assert m.get("version", 0) == want["version"], name
        bufs = m.get("buffers", [])
        assert [
            {"data": b["data"].length if "data" in b else 0, "offset": b.get("offset", 0), "size": b.get("size", 0)} for b in bufs
        ] == want["buffers"], name
        assert [
            {"builtin_code": c.get("builtin_code", 0), "custom_code": c.get("custom_code", b"").decode()} for c in m["operator_codes"]
        ] == want["operator_codes"], name
        assert [{"name": x["name"].decode(), "buffer": x.get("buffer", 0)} for x in m.get("metadata", [])] == want["metadata"], name
        assert [s["signature_key"].decode() for s in m.get("signature_defs", [])] == want["signature_keys"], name
        for sg, w in zip(m["subgraphs"], want["subgraphs"], strict=True):
            assert sg.get("inputs", []) == w["inputs"] and sg.get("outputs", []) == w["outputs"], name
            got_t = [
                {
                    "name": t["name"].decode(),
                    "shape": t.get("shape", []),
                    "type": t.get("type", 0),
                    "buffer": t.get("buffer", 0),
                    "scale": t["quantization"]["scale"].length if "scale" in t.get("quantization", {}) else 0,
                    "zero_point": list(
                        struct.unpack_from(f"<{t['quantization']['zero_point'].length}q", data, t["quantization"]["zero_point"].pos)
                    )
                    if "zero_point" in t.get("quantization", {})
                    else [],
                }
                for t in sg["tensors"]
            ]
            assert got_t == w["tensors"], name
            got_o = [
                {
                    "opcode_index": o.get("opcode_index", 0),
                    "inputs": o.get("inputs", []),
                    "outputs": o.get("outputs", []),
                    "builtin_options_type": o.get("builtin_options_type", 0),
                    "custom_options": o["custom_options"].length if "custom_options" in o else 0,
                }
                for o in sg["operators"]
            ]
            assert got_o == w["operators"], name
    assert any(b["offset"] > 1 for b in oracle["offset"]["buffers"]), "offset.tflite keeps its buffers after the flatbuffer"
    assert any(o["custom_options"] for o in oracle["flex"]["subgraphs"][0]["operators"]), "flex.tflite has custom options"
    assert any(t["zero_point"] for t in oracle["int8"]["subgraphs"][0]["tensors"])


def test_checker_summary_and_intact_files_pass(built):
    for name in ("good", "offset", "int8", "rgb", "flat", "small", "batch4", "flex"):
        check_tflite(model_bytes(built, name))
    s = check_tflite(model_bytes(built, "good"))
    assert s["subgraphs"] == 1 and s["inputs"] == [[1, 128, 128, 1]] and s["outputs"] == [[1, 128, 128, 1]] and s["operators"] >= 3
    assert check_tflite(model_bytes(built, "rgb"))["inputs"] == [[1, 128, 128, 3]]
    assert check_tflite(bytearray(model_bytes(built, "good"))) == s == check_tflite(memoryview(model_bytes(built, "good")))


def test_checker_refuses_every_truncation_of_the_flatbuffer(built):
    """The flatbuffer's last object (the operator codes vector) is at its end: any cut is seen, to the byte."""
    b = model_bytes(built, "good")
    for cut in [*range(0, len(b), 7), *range(len(b) - 64, len(b))]:
        with pytest.raises(TFLiteFileError):
            check_tflite(b[:cut])


def test_checker_refuses_a_cut_into_buffers_kept_after_the_flatbuffer(built):
    """Files over 2 GB keep buffers after the flatbuffer (buffer offset/size): a cut there leaves the flatbuffer whole."""
    b = model_bytes(built, "offset")
    m = parse_tflite(b)
    ends = [(k, x["offset"] + x["size"]) for k, x in enumerate(m["buffers"]) if x.get("offset", 0) > 1]
    k, end = max(ends, key=lambda e: e[1])
    with pytest.raises(TFLiteFileError, match=rf"model\.buffers\[{k}\]: its data \(offset \d+, size \d+\) lies outside the file"):
        check_tflite(b[: end - 1])
    check_tflite(b[:end])  # only padding was cut: nothing the runtime reads


@pytest.mark.parametrize(
    "case, needle",
    [
        ("trunc10", "lie outside the file"),
        ("trunc_header", "shorter than a flatbuffer header"),
        ("flip_root_offset", "outside the file"),
        ("flip_buffers_length", "model.buffers (vector of"),
        ("flip_buffers_entry", "model.buffers["),
    ],
)
def test_checker_messages_say_where(built, case, needle):
    with pytest.raises(TFLiteFileError) as e:
        check_tflite(damaged_cases(model_bytes(built, "good"))[case])
    assert needle in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_checker_refuses_bad_indices(built):
    """Offsets in range but an index past its vector: a tensor's buffer, a subgraph's input."""
    b = bytearray(model_bytes(built, "good"))
    root = u32(b, 0)
    sgs = field_pos(b, root, 2)
    sgs += u32(b, sgs)
    sg = sgs + 4 + u32(b, sgs + 4)
    inputs = field_pos(b, sg, 1)
    inputs += u32(b, inputs)
    struct.pack_into("<i", b, inputs + 4, 9999)
    with pytest.raises(TFLiteFileError, match=r"model\.subgraphs\[0\]\.inputs\[0\] = 9999 is not an index below"):
        check_tflite(bytes(b))


# ---------------------------------------------------------------- property-based: only the module's own error, ever

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.binary(max_size=512))
def test_checker_on_random_bytes(data):
    try:
        check_tflite(data)
    except TFLiteFileError:
        pass


@FAST
@given(st.binary(min_size=4, max_size=4), st.binary(max_size=400))
def test_checker_on_random_bytes_with_the_identifier(root, rest):
    try:
        check_tflite(root + b"TFL3" + rest)
    except TFLiteFileError:
        pass


@pytest.fixture(scope="module")
def good_bytes(built) -> dict:
    return {name: model_bytes(built, name) for name in ("good", "offset", "int8", "flex")}


@FAST
@given(st.sampled_from(["good", "offset", "int8", "flex"]), st.data())
def test_checker_on_random_damage_of_real_files(good_bytes, name, data):
    """Truncations, flipped bytes and overwritten spans of real models: the file passes or TFLiteFileError, nothing else."""
    b = bytearray(good_bytes[name])
    cut = data.draw(st.integers(0, len(b)), label="cut")
    for _ in range(data.draw(st.integers(0, 4), label="flips")):
        pos = data.draw(st.integers(0, len(b) - 1), label="pos")
        b[pos] = data.draw(st.integers(0, 255), label="byte")
    if data.draw(st.booleans(), label="overwrite a span"):
        pos = data.draw(st.integers(0, len(b) - 1), label="span at")
        span = data.draw(st.binary(min_size=1, max_size=16), label="span")
        b[pos : pos + len(span)] = span
    try:
        check_tflite(bytes(b[:cut]))
    except TFLiteFileError:
        pass


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
KEYS = ["format", "orig_size", "input_size", "resize_mode", "scale", "threshold", "output", "size_bytes", "sha256", "quant"]
GOOD = {"input_size": 128, "resize_mode": "pad", "threshold": 0.5, "size_bytes": 10, "sha256": "0" * 64}


@pytest.fixture(scope="module")
def side_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sidecars")  # module scope: @given tests may not use a function-scoped tmp_path


def read_written(folder: Path, text: bytes):
    model = folder / "m.tflite"
    sidecar_path(model).write_bytes(text)
    try:
        spec = read_sidecar(model)
    except SidecarError as e:
        assert "\n" not in str(e) and str(sidecar_path(model)) in str(e), str(e)
        return None
    assert isinstance(spec, dict) and isinstance(spec["input_size"], int)
    return spec


@FAST
@given(st.binary(max_size=300))
def test_sidecar_reader_on_random_bytes(side_dir, text):
    read_written(side_dir, text)


@FAST
@given(
    st.one_of(JSON, st.dictionaries(st.sampled_from(KEYS), JSON, max_size=6), st.fixed_dictionaries({}, optional={k: JSON for k in KEYS}))
)
def test_sidecar_reader_on_random_json(side_dir, value):
    read_written(side_dir, json.dumps(value).encode())


@FAST
@given(st.dictionaries(st.sampled_from(list(GOOD)), JSON, max_size=3), st.binary(max_size=20))
def test_sidecar_one_bad_value_and_the_digest_check(side_dir, bad, data):
    """A good sidecar with some values replaced: read, then checked against some bytes: passes or SidecarError."""
    spec = read_written(side_dir, json.dumps({**GOOD, **bad}).encode())
    if spec is not None:
        try:
            check_model_bytes("m.tflite", data, spec)
        except SidecarError as e:
            assert str(e) == "m.tflite: size/sha256 does not match its sidecar (truncated or damaged copy?)"


def test_sidecar_digest(side_dir):
    data = b"\x00\x01TFL3 some bytes"
    spec = {**SPEC, **file_digest(data)}
    assert spec["size_bytes"] == len(data) and len(spec["sha256"]) == 64
    check_model_bytes("m", data, spec)
    check_model_bytes("m", data[:-1], SPEC)  # an older sidecar, without them: nothing to check
    check_model_bytes("m", data, None)
    for bad in (data[:-1], data[:-1] + b"X", b""):
        with pytest.raises(SidecarError, match=r"^m: size/sha256 does not match its sidecar \(truncated or damaged copy\?\)$"):
            check_model_bytes("m", bad, spec)
    side = side_dir / "d.tflite"
    for bad_value in ({"size_bytes": -1}, {"size_bytes": 1.5}, {"size_bytes": True}, {"sha256": "abc"}, {"sha256": 5}):
        sidecar_path(side).write_text(json.dumps({**SPEC, **bad_value}))
        with pytest.raises(SidecarError, match=f"sidecar {side}.json: {next(iter(bad_value))}"):
            read_sidecar(side)
    sidecar_path(side).write_text("[" * 100_000)
    with pytest.raises(SidecarError, match="not readable JSON: nested too deeply"):
        read_sidecar(side)
    sidecar_path(side).write_text(json.dumps({**SPEC, "resize_mode": "pad", "input_size": 10**400}))  # too large for a float
    with pytest.raises(SidecarError, match="cannot reflect-pad"):
        read_sidecar(side)


# ---------------------------------------------------------------- the Pi programs on damaged files (Pi environment)


def test_infer_and_benchmark_on_damaged_files(built, tmp_path):
    """Each damaged copy, with and without a sidecar, through pi/infer.py and pi/benchmark.py: one line, exit 2, no signal."""
    good = model_bytes(built, "good")
    seen = {}
    for case, data in damaged_cases(good).items():
        for with_sidecar in (False, True):
            folder = tmp_path / ("with_sidecar" if with_sidecar else "no_sidecar")
            path = write_model(folder, case, data, good if with_sidecar else None)
            if with_sidecar:
                needle = "size/sha256 does not match its sidecar (truncated or damaged copy?)"
            elif case == "empty":
                needle = "is empty (0 bytes): truncated or damaged copy?"
            elif case == "trunc_header":
                needle = "is not a TFLite model (no TFL3 identifier)"
            else:
                needle = "is not a valid TFLite file, model"
            out = tmp_path / f"out_{case}_{with_sidecar}"
            line = one_error_line(infer(built, path, out), needle, str(path))
            assert not out.exists() or not any(out.iterdir())
            assert one_error_line(bench(built, path), needle, str(path)) == line  # the same check, the same words
            seen[(case, with_sidecar)] = line
    assert len(seen) == 2 * len(damaged_cases(good))
    print("\n".join(seen.values()))  # `pytest -s` shows every message


def test_flipped_weight_bytes(built, tmp_path):
    """A flipped byte inside the weights is a valid flatbuffer: the sidecar's sha256 refuses it; without a sidecar the
    model may run (wrong weights, no way to tell), but never crashes."""
    good = model_bytes(built, "good")
    pos, length = largest_buffer_data(good)
    assert length >= 36
    for k, at in enumerate((pos, pos + length // 2, pos + length - 1)):
        data = flipped(good, at)
        path = write_model(tmp_path / "with", f"w{k}", data, good)
        one_error_line(infer(built, path, tmp_path / f"o{k}"), "size/sha256 does not match its sidecar", str(path))
        path = write_model(tmp_path / "without", f"w{k}", data, None)
        p = infer(built, path, tmp_path / f"n{k}")
        assert p.returncode >= 0 and "Traceback" not in p.stderr, p.stderr  # no signal
        if p.returncode != 0:
            one_error_line(p)


def test_intact_file_with_its_sidecar_runs(built, tmp_path):
    for name in ("good", "offset", "int8"):
        data = model_bytes(built, name)
        path = write_model(tmp_path, name, data, data)
        p = infer(built, path, tmp_path / f"m_{name}")
        assert p.returncode == 0 and p.stderr == "", p.stderr
        assert sorted(x.name for x in (tmp_path / f"m_{name}").iterdir()) == ["i0.png", "i1.png", "i2.png"]
        p = bench(built, path)
        assert p.returncode == 0 and name in p.stdout, p.stderr


@pytest.mark.parametrize("name, shape", [("rgb", "[1, 128, 128, 3]"), ("flat", "[1, 128, 128]")])
def test_a_model_of_another_input_shape_is_refused(built, tmp_path, name, shape):
    data = model_bytes(built, name)
    path = write_model(tmp_path, name, data, data)
    needle = f"{path}: input shape {shape} cannot be fed: expected (batch, size, size, 1), one grayscale channel"
    one_error_line(infer(built, path, tmp_path / "m"), needle)
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())
    one_error_line(bench(built, path), needle)


def test_a_model_without_sidecar_that_reflect_padding_cannot_feed(built, tmp_path):
    """No sidecar: the default is to reflect-pad 101x101 to the model's input; a 64x64 input cannot be reached."""
    path = write_model(tmp_path, "small", model_bytes(built, "small"), None)
    needle = f"{path} has no sidecar {path}.json, and reflect-padding 101x101 (the default) cannot give its input 64x64"
    one_error_line(infer(built, path, tmp_path / "m"), needle)
    path = write_model(tmp_path / "side", "small", model_bytes(built, "small"), model_bytes(built, "small"))
    sidecar_path(path).write_text(json.dumps({**SPEC, "input_size": 64, "resize_mode": "resize"}))
    p = infer(built, path, tmp_path / "m2")
    assert p.returncode == 0 and p.stderr == "", p.stderr


def test_a_fixed_batch_model_is_fed_in_full_batches(built, tmp_path):
    """A model exported with a fixed batch of 4 gets 4 images per call, the last call padded: 3 images give the masks of
    the same weights at batch 1 (before, a fixed batch other than 1 ended in `Cannot set tensor: Dimension mismatch`)."""
    masks = {}
    for name in ("good", "batch4"):
        path = write_model(tmp_path, name, model_bytes(built, name), model_bytes(built, name))
        p = infer(built, path, tmp_path / name)
        assert p.returncode == 0 and p.stderr == "", p.stderr
        assert f"(batch {4 if name == 'batch4' else 8}, 1 thread)" in p.stdout, p.stdout
        masks[name] = np.stack([np.array(Image.open(tmp_path / name / f"i{k}.png")) for k in range(3)])
    assert int((masks["good"] != masks["batch4"]).sum()) <= 5  # only pixels sitting at the threshold may differ
    p = bench(built, tmp_path / "batch4.tflite")
    assert p.returncode == 0 and "batch4.tflite" in p.stdout, p.stderr
