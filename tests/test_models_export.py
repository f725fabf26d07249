"""Every architecture of the registry exports to fp32 and int8 TFLite with builtin ops that the Pi runtime runs
(export_tflite.convert loads each file in the Pi runtime right after conversion), and the fp32 file computes what
the Keras model computes. The conversions need the tensorflow backend, so they run in one subprocess; the int8
files are then run by the Pi program's runner under PI_PYTHON (tflite-runtime, no TensorFlow)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT

pytest.importorskip("tensorflow")
PI_PYTHON = os.environ.get("PI_PYTHON", sys.executable)
WIDTH = {"unet": 2, "resunet": 2, "sepunet": 4, "mbv2cat": 2, "mbv2add": 2, "lraspp": 2}

EXPORT = r"""
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
out = Path(sys.argv[2]); widths = json.loads(sys.argv[3])
import keras, numpy as np
import export_tflite
from models.files import TFLiteModel
from models.registry import build_model

rng = np.random.default_rng(0)
calib = rng.random((8, 64, 64, 1)).astype("float32")
x = rng.random((4, 64, 64, 1)).astype("float32")
res = {}
for arch, width in widths.items():
    keras.utils.set_random_seed(0)
    m = build_model(arch, (64, 64, 1), width, 3)
    want = np.asarray(m.predict(x, verbose=0))
    row = {}
    for fmt in ("fp32", "int8"):
        p = out / f"{arch}_{fmt}.tflite"
        export_tflite.convert(m, fmt, p, calib if fmt == "int8" else None, False)
        interp = __import__("tensorflow").lite.Interpreter(model_path=str(p))
        ops = sorted({o["op_name"] for o in interp._get_ops_details()})
        interp.resize_tensor_input(interp.get_input_details()[0]["index"], x.shape)
        interp.allocate_tensors()
        interp.set_tensor(interp.get_input_details()[0]["index"], x)
        interp.invoke()
        got = interp.get_tensor(interp.get_output_details()[0]["index"])
        row[fmt] = {"max_abs": float(np.abs(got - want).max()), "ops": ops}
    np.save(out / f"{arch}_x.npy", x); np.save(out / f"{arch}_keras.npy", want)
    res[arch] = row
(out / "res.json").write_text(json.dumps(res))

# lraspp with a head whose sum is far wider than the stem's ReLU6 range (aspp_low's kernel x 100): the int8
# file's CONCATENATION gives its inputs one scale; record it, and the scale of the stem tensor it reads
keras.utils.set_random_seed(0)
m = build_model("lraspp", (64, 64, 1), 2, 3)
low = m.get_layer("aspp_low")
low.set_weights([w * 100 for w in low.get_weights()])
p = out / "lraspp_wide_int8.tflite"
export_tflite.convert(m, "int8", p, calib, False)
interp = __import__("tensorflow").lite.Interpreter(model_path=str(p))
tensors = {t["index"]: t for t in interp.get_tensor_details()}
concat = [o for o in interp._get_ops_details() if o["op_name"] == "CONCATENATION"]
scales = {
    "concat_inputs": [float(tensors[i]["quantization"][0]) for o in concat for i in o["inputs"]],
    "stem": [float(t["quantization"][0]) for t in tensors.values() if "enc0_stem_relu6" in t["name"] and t["dtype"].__name__ == "int8"],
}
(out / "lraspp_wide.json").write_text(json.dumps(scales))

rows = [{"format": f, "d_mean_iou": d} for f, d in (("keras", 0.0), ("fp16", -0.0002), ("int8", -0.0092), ("int8", 0.005))]
(out / "parity_notes.json").write_text(json.dumps(export_tflite.parity_notes(rows)))
"""

RUN_ON_PI = r"""
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import numpy as np
from runner import TFLiteSegmenter
out = Path(sys.argv[2]); res = {}
for arch in json.loads(sys.argv[3]):
    m = TFLiteSegmenter(out / f"{arch}_int8.tflite", threads=1, spec={"input_size": 64, "resize_mode": "resize"})
    x = np.load(out / f"{arch}_x.npy")
    res[arch] = float(np.abs(m.run(x) - np.load(out / f"{arch}_keras.npy")[..., 0]).max())
print(json.dumps(res))
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("arch_export")
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    p = subprocess.run(
        [sys.executable, "-c", EXPORT, str(ROOT), str(out), json.dumps(WIDTH)], capture_output=True, text=True, env=env, timeout=900
    )
    assert p.returncode == 0, p.stderr[-3000:]
    return out, json.loads((out / "res.json").read_text())


def test_every_architecture_exports_builtin_ops_with_fp32_parity(exported):
    from common.choices import ARCHITECTURES

    _, res = exported
    assert set(res) == set(ARCHITECTURES)
    for arch, row in res.items():
        assert row["fp32"]["max_abs"] < 1e-4, (arch, row["fp32"])
        assert row["int8"]["max_abs"] < 0.1, (arch, row["int8"])  # untrained weights, 8 calibration images: a loose bound
        assert not any(op.startswith("Flex") or op == "CUSTOM" for op in row["int8"]["ops"]), (arch, row["int8"]["ops"])
    assert "DEPTHWISE_CONV_2D" in res["sepunet"]["int8"]["ops"] and "TRANSPOSE_CONV" not in res["sepunet"]["int8"]["ops"]
    assert "TRANSPOSE_CONV" in res["unet"]["int8"]["ops"]
    assert "CONCATENATION" not in res["mbv2add"]["int8"]["ops"] and "CONCATENATION" in res["mbv2cat"]["int8"]["ops"]


def test_lraspp_int8_keeps_the_stem_at_the_relu6_step_whatever_the_head(exported):
    """int8 CONCATENATION shares one scale among its inputs, and the converter puts it on the stem's own tensor,
    which also feeds the encoder. Before the head's ReLU6 an unbounded head sum widened that step (lraspp4
    lost 0.08-0.11 mean IoU as int8 on real data); now both inputs are bounded by 6, whatever the weights."""
    out, _ = exported
    scales = json.loads((out / "lraspp_wide.json").read_text())
    assert scales["concat_inputs"] and scales["stem"], scales
    step = 6.0 / 255
    assert max(scales["concat_inputs"]) <= step * 1.01, scales
    assert max(scales["stem"]) <= step * 1.01, scales


def test_export_notes_a_quantized_file_off_the_keras_model(exported):
    """More than 0.005 mean IoU off the Keras model (the int8 parity bar of the Pi frontier) is a `note:` line; at the bar, none."""
    out, _ = exported
    notes = json.loads((out / "parity_notes.json").read_text())
    assert len(notes) == 1 and notes[0].startswith("note: int8 mean IoU is -0.0092 off the Keras model's"), notes


def test_int8_files_run_in_the_pi_runtime(exported):
    out, res = exported
    p = subprocess.run(
        [PI_PYTHON, "-c", RUN_ON_PI, str(ROOT / "pi"), str(out), json.dumps(sorted(res))], capture_output=True, text=True, timeout=300
    )
    assert p.returncode == 0, p.stderr[-3000:]
    got = json.loads(p.stdout.strip().splitlines()[-1])
    for arch, diff in got.items():
        assert np.isfinite(diff) and diff < 0.1, (arch, diff)
