"""The student: the same U-Net builder as the teacher at a small width, with two outputs.

    hard = sigmoid(z)        (named "hard": the inference output, what is saved and exported)
    soft = sigmoid(z / T)    (named "soft": matched to the teacher's soft output during training)
"""

from __future__ import annotations

import keras

from common.layers import TemperatureSigmoid
from common.unet import build_unet


def build_student(input_shape=(128, 128, 1), base_filters: int = 4, depth: int = 4, temperature: float = 2.0,
                  upsample: str = "transpose", name: str = "student") -> keras.Model:
    """Two-output student: [hard, soft]. Its `logits` layer feeds both."""
    base = build_unet(input_shape, base_filters, depth, upsample=upsample, output_name="hard", name=name)
    soft = TemperatureSigmoid(temperature, name="soft")(base.get_layer("logits").output)
    return keras.Model(base.inputs[0], [base.output, soft], name=name)


def inference_model(student: keras.Model) -> keras.Model:
    """The hard output alone (shares weights with the student): what is saved and exported."""
    return keras.Model(student.inputs[0], student.get_layer("hard").output, name=student.name)
