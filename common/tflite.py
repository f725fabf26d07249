"""The project's door to pi/runner.py (same code as the Pi), with errors as UserError."""

from __future__ import annotations

import numpy as np

from common.cli import UserError
from pi.runner import ModelError, TFLiteSegmenter


class TFLiteModel:
    def __init__(self, path, spec: dict | None = None, threads: int = 2):
        try:
            self.m = TFLiteSegmenter(path, threads, spec)
        except ModelError as e:
            raise UserError(str(e)) from None
        self.threshold = self.m.threshold
        self.spec = self.m.spec

    def predict_scores(self, gray: np.ndarray) -> np.ndarray:
        """uint8 (N, 101, 101) images -> model output on the original pixels; compare with .threshold."""
        return self.m.predict_scores(gray)

    def predict_probs(self, gray: np.ndarray) -> np.ndarray:
        return self.m.predict_probs(gray)
