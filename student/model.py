"""The student: an architecture of models.registry at a small width, with one output.

    probs = sigmoid(z), z = the linear 1x1 conv `logits`

This model is the product: it is what the training graph wraps, what is saved (student.keras) and
what export_tflite.py converts. The soft output sigmoid(z / T) lives only in the training graph
(distill.graph), so the student has no unused output.
"""

from __future__ import annotations

import keras

from models.registry import build_model


def build_student(cfg) -> keras.Model:
    """The student of a student.config.DistillConfig."""
    return build_model(cfg.arch, (cfg.input_size, cfg.input_size, 1), cfg.base_filters, cfg.depth, cfg.upsample, name=cfg.model_name)
