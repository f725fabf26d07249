"""Shared fixtures: a synthetic Kaggle-layout data set made once per session (tests never use real data)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """120 labelled + 24 unlabelled synthetic images in the Kaggle TGS layout."""
    from data.synthetic import generate

    out = tmp_path_factory.mktemp("synth") / "tgs"
    generate(out, n_train=120, n_test=24, seed=0)
    return out
