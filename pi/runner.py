"""Run a TGS segmentation .tflite model: sidecar preprocessing, int8/float tensors, batching.

numpy only (plus whichever TFLite runtime is installed): used by pi/infer.py on the Raspberry Pi
and by the project's evaluate.py / export_tflite.py, so every place runs a model the same way.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

try:
    from .sidecar import SidecarError, check_model_bytes, check_spec, make_spec, read_sidecar
    from .tflite_check import TFLiteFileError, check_tflite
    from .tgs_common import postprocess, preprocess
except ImportError:  # run as a plain script folder on the Pi
    from sidecar import SidecarError, check_model_bytes, check_spec, make_spec, read_sidecar
    from tflite_check import TFLiteFileError, check_tflite
    from tgs_common import postprocess, preprocess

FEEDABLE = (np.float32, np.int8, np.uint8)  # input/output tensor types the runner (de)quantizes


class ModelError(ValueError):
    """The model file or its sidecar is unusable; the message names the file."""


_checked: set = set()  # files that passed check_model_file, by (path, size, mtime, inode, spec digest)


def check_model_file(path, spec: dict | None = None) -> None:
    """Refuse (ModelError, one line naming the file) a .tflite a TFLite runtime must not be handed: it would end the
    process with SIGSEGV/SIGBUS, no message, on a truncated or damaged file. In order: missing; not the size and
    sha256 its sidecar records (`spec`, default: the sidecar next to it); empty; no TFL3 identifier; a flatbuffer
    whose offsets or indices point outside it (tflite_check.py). A file that passed once is not read again."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist" if not path.exists() else f"model file {path} is not a file")
    try:
        if spec is None:
            spec = read_sidecar(path)
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino, (spec or {}).get("size_bytes"), (spec or {}).get("sha256"))
        if key in _checked:
            return
        data = path.read_bytes()
        check_model_bytes(path, data, spec)
    except SidecarError as e:
        raise ModelError(str(e)) from None
    except OSError as e:
        raise ModelError(f"cannot read model file {path}: {e.strerror or e}") from None
    if not data:
        raise ModelError(f"{path} is empty (0 bytes): truncated or damaged copy?")
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelError(f"{path} is not a TFLite model (no TFL3 identifier)")
    try:
        check_tflite(data)
    except TFLiteFileError as e:
        raise ModelError(f"{path} is not a valid TFLite file, {e} (truncated or damaged copy?)") from None
    _checked.add(key)


def _shape(detail: dict) -> list[int]:
    return [int(d) for d in detail["shape"]]


def check_feedable(path, inp: dict, out: dict) -> None:
    """ModelError naming the file and the shape unless the model takes (batch, S, S, 1) and gives (batch, S, S, 1),
    float32, int8 or uint8: one grayscale image in, one mask out, at the same size."""
    i, o = _shape(inp), _shape(out)
    if len(i) != 4 or i[3] != 1 or i[1] != i[2] or i[1] < 1 or i[0] < 1:
        raise ModelError(f"{path}: input shape {i} cannot be fed: expected (batch, size, size, 1), one grayscale channel")
    if np.dtype(inp["dtype"]) not in FEEDABLE:
        raise ModelError(f"{path}: input type {np.dtype(inp['dtype']).name} cannot be fed: expected float32, int8 or uint8")
    if len(o) != 4 or o[1:] != [i[1], i[2], 1] or o[0] != i[0]:
        raise ModelError(f"{path}: output shape {o} is not a mask of the input {i}: expected {[i[0], i[1], i[2], 1]}")
    if np.dtype(out["dtype"]) not in FEEDABLE:
        raise ModelError(f"{path}: output type {np.dtype(out['dtype']).name} cannot be read: expected float32, int8 or uint8")


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
        try:
            found = check_spec(spec, f"spec given for {self.path}") if spec is not None else read_sidecar(self.path)
        except SidecarError as e:
            raise ModelError(str(e)) from None
        check_model_file(self.path, found)  # before the runtime sees it: a damaged file would crash the process
        try:
            self.interp = load_interpreter_class()(model_path=str(self.path), num_threads=threads)
            self.interp.allocate_tensors()
            inputs, outputs = self.interp.get_input_details(), self.interp.get_output_details()
        except (ValueError, RuntimeError) as e:  # UnicodeDecodeError (a tensor's name) is a ValueError
            raise ModelError(f"cannot load {self.path}: {str(e).splitlines()[0]}") from None
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(f"{self.path} has {len(inputs)} inputs and {len(outputs)} outputs: expected one image in, one mask out")
        self.inp, self.out = inputs[0], outputs[0]
        check_feedable(self.path, self.inp, self.out)
        size = int(self.inp["shape"][1])
        self.has_sidecar = found is not None
        self.spec_problem = None  # why images cannot be preprocessed for it (the model still loads, e.g. to be timed)
        if found is None:
            found = make_spec(size, "pad")  # the default: reflect-pad 101 to the model's input
            try:
                check_spec(found)
            except SidecarError:
                self.spec_problem = (
                    f"{self.path} has no sidecar {self.path}.json, and reflect-padding 101x101 (the default) cannot give its "
                    f"input {size}x{size}: put its sidecar next to it"
                )
        self.spec = found
        if int(self.spec["input_size"]) != size:
            raise ModelError(f"sidecar of {self.path} says input {self.spec['input_size']}, the model takes {size}")
        sig = self.inp.get("shape_signature", self.inp["shape"])
        self.dynamic_batch = len(sig) > 0 and sig[0] == -1
        self.batch = int(self.inp["shape"][0])  # a fixed batch n > 1: run() feeds n images per call, padding the last

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
        step = 32 if self.dynamic_batch else self.batch
        outs = []
        for s in range(0, len(x), step):
            xb = x[s : s + step]
            n = len(xb)
            if self.dynamic_batch:
                self._resize(n)
            elif n < step:  # the last images of a fixed-batch model: pad the call with zeros
                xb = np.concatenate([xb, np.zeros((step - n, *xb.shape[1:]), xb.dtype)])
            self.interp.set_tensor(self.inp["index"], quantize(xb, self.inp))
            self.interp.invoke()
            outs.append(dequantize(self.interp.get_tensor(self.out["index"]), self.out)[:n])
        return np.concatenate(outs)[..., 0]

    def predict_scores(self, gray: np.ndarray) -> np.ndarray:
        """uint8 (N, 101, 101) -> output (probabilities or logits) on the original pixels (N, 101, 101)."""
        if self.spec_problem:
            raise ModelError(self.spec_problem)
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
