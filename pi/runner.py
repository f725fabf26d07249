"""Run a TGS segmentation .tflite model: sidecar preprocessing, int8/float tensors, batching.

numpy only (plus whichever TFLite runtime is installed): used by pi/infer.py on the Raspberry Pi
and by the project's evaluate.py / export_tflite.py, so every place runs a model the same way.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

try:
    from .sidecar import SidecarError, check_spec, make_spec, read_sidecar
    from .tgs_common import postprocess, preprocess
except ImportError:  # run as a plain script folder on the Pi
    from sidecar import SidecarError, check_spec, make_spec, read_sidecar
    from tgs_common import postprocess, preprocess


class ModelError(ValueError):
    """The model file or its sidecar is unusable; the message names the file."""


def load_interpreter_class():
    """TensorFlow's interpreter when TensorFlow is already loaded (tflite_runtime then breaks),
    else ai-edge-litert, else tflite-runtime."""
    if "tensorflow" in sys.modules:
        import warnings

        import tensorflow as tf

        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
        return tf.lite.Interpreter
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            raise ModelError("no TFLite runtime: pip install -r pi/requirements.txt (tflite-runtime or ai-edge-litert)") from None
    return Interpreter


_PACKAGES = {"tflite_runtime": "tflite-runtime", "ai_edge_litert": "ai-edge-litert", "tensorflow": "tensorflow"}


def runtime_name(interpreter_class=None) -> str:
    """'tflite-runtime 2.14.0': the package and version of `interpreter_class` (default: the one
    load_interpreter_class() picks). The version is its top-level module's __version__ ("unknown" without one)."""
    cls = interpreter_class if interpreter_class is not None else load_interpreter_class()
    top = cls.__module__.split(".")[0]
    version = getattr(sys.modules.get(top), "__version__", None)
    return f"{_PACKAGES.get(top, top)} {version or 'unknown'}"


class TFLiteSegmenter:
    def __init__(self, path, threads: int = 1, spec: dict | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"model file {self.path} does not exist")
        head = self.path.read_bytes()[:8]
        if len(head) < 8 or head[4:8] != b"TFL3":
            raise ModelError(f"{self.path} is not a TFLite model (no TFL3 identifier)")
        try:
            self.interp = load_interpreter_class()(model_path=str(self.path), num_threads=threads)
            self.interp.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise ModelError(f"cannot load {self.path}: {str(e).splitlines()[0]}") from None
        self.inp = self.interp.get_input_details()[0]
        self.out = self.interp.get_output_details()[0]
        size = int(self.inp["shape"][1])
        try:
            found = check_spec(spec, f"spec given for {self.path}") if spec is not None else read_sidecar(self.path)
        except SidecarError as e:
            raise ModelError(str(e)) from None
        self.has_sidecar = found is not None
        self.spec = found if found is not None else make_spec(size, "pad")
        if int(self.spec["input_size"]) != size:
            raise ModelError(f"sidecar of {self.path} says input {self.spec['input_size']}, the model takes {size}")
        sig = self.inp.get("shape_signature", self.inp["shape"])
        self.dynamic_batch = len(sig) > 0 and sig[0] == -1
        self.batch = 1

    @property
    def threshold(self) -> float:
        """Threshold on the model's output scale, from the sidecar's probability threshold."""
        t = float(self.spec.get("threshold", 0.5))
        return float(np.log(t / (1 - t))) if self.spec.get("output") == "logits" else t

    def _resize(self, n: int) -> None:
        if n != self.batch:
            self.interp.resize_tensor_input(self.inp["index"], [n, *self.inp["shape"][1:]])
            self.interp.allocate_tensors()
            self.inp = self.interp.get_input_details()[0]
            self.out = self.interp.get_output_details()[0]
            self.batch = n

    def run(self, x: np.ndarray) -> np.ndarray:
        """x: float32 (N, S, S, 1) preprocessed -> raw float output (N, S, S), dequantized."""
        step = 32 if self.dynamic_batch else 1
        outs = []
        for s in range(0, len(x), step):
            xb = x[s : s + step]
            self._resize(len(xb)) if self.dynamic_batch else None
            self.interp.set_tensor(self.inp["index"], quantize(xb, self.inp))
            self.interp.invoke()
            outs.append(dequantize(self.interp.get_tensor(self.out["index"]), self.out))
        return np.concatenate(outs)[..., 0]

    def predict_scores(self, gray: np.ndarray) -> np.ndarray:
        """uint8 (N, 101, 101) -> output (probabilities or logits) on the original pixels (N, 101, 101)."""
        return postprocess(self.run(preprocess(gray, self.spec)), self.spec)

    def predict_probs(self, gray: np.ndarray) -> np.ndarray:
        """uint8 (N, 101, 101) -> probabilities (N, 101, 101)."""
        s = self.predict_scores(gray)
        return 1 / (1 + np.exp(-s)) if self.spec.get("output") == "logits" else s


def quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    dtype = detail["dtype"]
    if dtype == np.float32:
        return x.astype(np.float32)
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, detail: dict) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return q.astype(np.float32)
    scale, zero = detail["quantization"]
    return (q.astype(np.float32) - zero) * scale
