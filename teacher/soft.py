"""Head replacement: a trained teacher -> frozen soft teacher, input -> logits -> sigmoid(logits / T).

This is the seed design's `layers.pop()` step done the Keras 3 way: take the output of the named
linear 1x1 conv `logits` and put a registered `TemperatureSigmoid(T)` layer on it. No Lambda.
"""

from __future__ import annotations

from pathlib import Path

import keras

from common.cli import UserError
from common.layers import TemperatureSigmoid, WeightedSum
from common.unet import logits_model


def load_teacher(path) -> keras.Model:
    path = Path(path)
    if not path.exists():
        raise UserError(f"teacher file {path} does not exist")
    try:
        model = keras.saving.load_model(path)
    except Exception as e:  # noqa: BLE001 - keras raises many types for a bad file
        raise UserError(f"teacher file {path} is not a Keras model: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if "logits" not in [layer.name for layer in model.layers]:
        raise UserError(f"teacher file {path} has no layer named 'logits'")
    return model


def soft_teacher(teachers, temperature: float, weights=None) -> keras.Model:
    """Frozen model: input -> sigmoid(teacher logits / T), output named `teacher_soft`.

    A list of teachers is an ensemble: their logits are averaged (optionally weighted) first.
    """
    if not temperature > 0:
        raise UserError(f"temperature T={temperature} must be > 0")
    teachers = teachers if isinstance(teachers, (list, tuple)) else [teachers]
    if len(teachers) == 1 and weights is None:
        logits = teachers[0].get_layer("logits").output
        inputs = teachers[0].inputs[0]
    else:
        shapes = {tuple(t.inputs[0].shape[1:]) for t in teachers}
        if len(shapes) > 1:
            raise UserError(f"the ensemble's teachers take different input sizes: {sorted(shapes)}")
        inputs = keras.Input(shapes.pop(), name="image")
        parts = [logits_model(t, name=f"teacher{i}_logits")(inputs) for i, t in enumerate(teachers)]
        w = list(weights) if weights is not None else [1.0] * len(teachers)
        if len(w) != len(teachers) or min(w) < 0 or sum(w) <= 0:
            raise UserError(f"ensemble weights {w} must be {len(teachers)} non-negative numbers with a positive sum")
        logits = WeightedSum([x / sum(w) for x in w], name="ensemble_logits")(parts)
    soft = TemperatureSigmoid(temperature, name="teacher_soft")(logits)
    model = keras.Model(inputs, soft, name="soft_teacher")
    model.trainable = False
    return model
