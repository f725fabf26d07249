"""Run a Keras model of the project on preprocessed images, also under a JAX data-parallel distribution.

Its probabilities on the original pixels, and their scores: training.scoring."""

from __future__ import annotations

import keras
import numpy as np


def predict(model, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """model.predict, also under a JAX data-parallel distribution (where every batch must split evenly over the devices)."""
    n = len(x)
    dist = keras.distribution.distribution() if keras.backend.backend() == "jax" else None
    if dist is not None:  # pad the last batch with zeros, drop their outputs
        batch_size *= int(np.prod(dist.device_mesh.shape))
        x = np.concatenate([x, np.zeros((-n % batch_size,) + x.shape[1:], x.dtype)])
    return model.predict(x, batch_size=batch_size, verbose=0)[:n]
