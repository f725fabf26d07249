"""The student is the product: how it is converted to TFLite (fp32, fp16, int8) and checked to run on the Pi.

`convert` is the one converter: export_tflite.py (the parity table and sidecars around it) and benchmarks.arch_latency
(untrained architectures, latency only) both call it. Each file is loaded by the Pi's runtime right after conversion
(`check_pi_runtime`, in a subprocess: tflite_runtime cannot share a process with TensorFlow). Importing this module
loads neither Keras nor TensorFlow; `convert` needs the tensorflow backend (the caller chooses it).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from common import io
from common.cli import UserError

FORMATS = ("fp32", "fp16", "int8")

# Run by check_pi_runtime in a fresh interpreter (tflite_runtime breaks once TensorFlow is loaded in a process):
# prints `pi-check {"runtime": "name version"}` or `pi-check {"runtime": null}` (none installed), then
# `pi-check {"error": message}` and exit code 3 when the model does not load.
PI_RUNTIME_CHECK = r"""
import json, sys
def say(**kw):
    print("pi-check", json.dumps(kw), flush=True)
from importlib import metadata
try:
    from tflite_runtime.interpreter import Interpreter
    name = "tflite-runtime"
except ImportError:
    try:
        from ai_edge_litert.interpreter import Interpreter
        name = "ai-edge-litert"
    except ImportError:
        say(runtime=None)
        sys.exit(0)
try:
    version = metadata.version(name)
except metadata.PackageNotFoundError:
    version = getattr(sys.modules[Interpreter.__module__.split(".")[0]], "__version__", "unknown")
say(runtime=f"{name} {version}")
try:
    Interpreter(model_path=sys.argv[1]).allocate_tensors()
except Exception as e:
    say(error=str(e))
    sys.exit(3)
"""
_noted_no_runtime = False


def runtime_failure(message: str) -> str:
    """The op and the first sentence of a TFLite runtime's load/allocate error."""
    text = " ".join(message.split())
    missing = re.search(r"Didn't find op for builtin opcode '(\w+)' version '(\d+)'", text)
    if missing:
        return f"op {missing[1]} version {missing[2]} is not in this runtime"
    custom = re.search(r"unresolved custom op: (\w+)", text, re.IGNORECASE)
    if custom:
        return f"op {custom[1]}: unresolved custom op"
    first = re.split(r"(?<=[a-z)])\. ", text, maxsplit=1)[0].rstrip(".")[:300] or "no message"
    node = re.search(r"Node number \d+ \((\w+)\) failed to prepare", text)
    return f"op {node[1]}: {first}" if node else first


def check_pi_runtime(path: Path, shown: Path | None = None) -> None:
    """Load `path` with the Pi's runtime and allocate its tensors, in a subprocess; UserError naming `shown`
    (default: path) and the failing op when it cannot. Neither runtime installed: one `note:` line, no check."""
    global _noted_no_runtime
    shown = shown or path
    try:
        p = subprocess.run([sys.executable, "-c", PI_RUNTIME_CHECK, str(path)], capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        raise UserError(f"{shown}: the Pi runtime did not load it within 300 s") from None
    lines = [json.loads(x.split(" ", 1)[1]) for x in p.stdout.splitlines() if x.startswith("pi-check {")]
    runtime = lines[0].get("runtime", "unknown") if lines else "unknown"
    if p.returncode == 0 and lines and runtime is None:
        if not _noted_no_runtime:
            print("note: neither tflite-runtime nor ai-edge-litert is installed; not checking that the Pi can run the exports", flush=True)
            _noted_no_runtime = True
        return
    if p.returncode != 0:
        errors = [x["error"] for x in lines if "error" in x]
        crash = f"crashed (signal {-p.returncode})" if p.returncode < 0 else f"exit code {p.returncode}"
        why = errors[0] if errors else (p.stderr.strip().splitlines() or [crash])[-1]
        raise UserError(f"{shown}: the Pi runtime ({runtime}) cannot run it: {runtime_failure(why)}")


def logits_head(model):
    """The model up to its `logits` layer (export_tflite.py --output logits), under the same name."""
    import keras

    return keras.Model(model.inputs[0], model.get_layer("logits").output, name=model.name)


def convert(model, fmt: str, out_path: Path, calib: np.ndarray | None, int8_io: bool) -> None:
    """`model` as a TFLite file of format `fmt` (FORMATS; int8 calibrated on `calib`, int8 input/output with `int8_io`),
    builtin ops only, written atomically once the Pi runtime has loaded it (check_pi_runtime)."""
    import tensorflow as tf

    kwargs = {"target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]}}
    if fmt == "fp16":
        kwargs.update(
            optimizations=[tf.lite.Optimize.DEFAULT],
            target_spec={"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS], "supported_types": [tf.float16]},
        )
    elif fmt == "int8":

        def representative():
            for i in range(len(calib)):
                yield [calib[i : i + 1]]

        kwargs.update(
            optimizations=[tf.lite.Optimize.DEFAULT],
            representative_dataset=representative,
            target_spec={"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]},
        )
        if int8_io:
            kwargs.update(inference_input_type=tf.int8, inference_output_type=tf.int8)
    with io.atomic_path(out_path, suffix=".tflite") as tmp:
        model.export(str(tmp), format="litert", verbose=False, **kwargs)
        check_pi_runtime(tmp, shown=out_path)  # a failure removes the temp file: no model, no sidecar
