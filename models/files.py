"""The one model loader: a project model file (.keras or .tflite) -> a model and its preprocessing sidecar.

Every entry point (evaluate.py, export_tflite.py, teacher.cache, teacher.calibration, distill_train.py)
loads models here, so a missing, damaged or foreign file is refused the same way everywhere: one
UserError naming the file. The sidecar (`<model>.json`) is read by `pi.sidecar`, the same reader the
Raspberry Pi uses; a .tflite runs through `pi.runner`, the Pi's own code.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from common.cli import UserError
from pi.runner import ModelError, TFLiteSegmenter
from pi.sidecar import SidecarError, make_spec, read_sidecar


def load_keras(path, what: str = "model", need_logits: bool = False, single_output: bool = True) -> keras.Model:
    """A .keras model file; refused (UserError naming the file) if missing, unreadable or of the wrong shape."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} file {path} does not exist" if not path.exists() else f"{what} file {path} is not a file")
    try:
        model = keras.saving.load_model(path)
    except Exception as e:  # noqa: BLE001 - keras raises many types for a bad file
        raise UserError(f"{what} file {path} is not a Keras model: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if need_logits and "logits" not in [layer.name for layer in model.layers]:
        raise UserError(f"{what} file {path} has no layer named 'logits'")
    if single_output and len(model.outputs) != 1:
        raise UserError(
            f"{what} file {path} has {len(model.outputs)} outputs; use the single-output inference model (student.keras / teacher.keras)"
        )
    return model


def model_spec(path, model: keras.Model | None = None, input_size: int | None = None) -> dict:
    """The model's sidecar spec; without a sidecar, reflect-pad to the model's input size, threshold 0.5."""
    try:
        spec = read_sidecar(Path(path))
    except SidecarError as e:
        raise UserError(str(e)) from None
    if spec is not None:
        return spec
    size = input_size if input_size is not None else int(model.inputs[0].shape[1])
    return make_spec(size, "pad")


def load_keras_with_spec(path, what: str = "model", need_logits: bool = False) -> tuple[keras.Model, dict]:
    model = load_keras(path, what, need_logits)
    spec = model_spec(path, model)
    if int(spec["input_size"]) != int(model.inputs[0].shape[1]):
        raise UserError(f"sidecar of {path} says input_size {spec['input_size']}, the model takes {model.inputs[0].shape[1]}")
    return model, spec


class TFLiteModel:
    """A .tflite model through the Pi's own runner, errors as UserError."""

    def __init__(self, path, spec: dict | None = None, threads: int = 2):
        try:
            self.m = TFLiteSegmenter(path, threads, spec)
        except (ModelError, SidecarError) as e:
            raise UserError(str(e)) from None
        self.threshold = self.m.threshold
        self.spec = self.m.spec

    def predict_scores(self, gray: np.ndarray) -> np.ndarray:
        """uint8 (N, 101, 101) images -> model output on the original pixels; compare with .threshold."""
        return self.m.predict_scores(gray)

    def predict_probs(self, gray: np.ndarray) -> np.ndarray:
        return self.m.predict_probs(gray)
