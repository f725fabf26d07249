"""Shared fixtures: a synthetic Kaggle-layout data set made once per session (tests never use real data)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import subprocess

import pytest


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """120 labelled + 24 unlabelled synthetic images in the Kaggle TGS layout."""
    from data.synthetic import generate

    out = tmp_path_factory.mktemp("synth") / "tgs"
    generate(out, n_train=120, n_test=24, seed=0)
    return out


TINY = ["--epochs", "2", "--batch-size", "16", "--base-filters", "2", "--depth", "3", "--input-size", "104"]


def cli(*args, check=True, env=None):
    """Run a project command in a subprocess (as a user would); return the CompletedProcess."""
    import os

    p = subprocess.run(
        [sys.executable, *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})},
        timeout=600,
    )
    if check and p.returncode != 0:
        raise AssertionError(f"{args} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def run_with_tensorflow(script: str, *args, timeout: int = 900) -> subprocess.CompletedProcess:
    """`python -c SCRIPT ARGS` on the TensorFlow backend (what builds .tflite test models); skips without TensorFlow,
    fails the test with the script's stderr when it exits non-zero."""
    import importlib.util

    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("TensorFlow is needed to build .tflite models")
    p = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert p.returncode == 0, p.stderr[-3000:]
    return p


@pytest.fixture(scope="session")
def runs(synth_dir, tmp_path_factory):
    from teacher.cache import build_cache

    base = tmp_path_factory.mktemp("runs")
    t = base / "teacher"
    cli("-m", "teacher.train", "--data", synth_dir, "--out", t, *TINY, "--base-filters", "4", "--epochs", "5")
    teacher = t / "teacher.keras"
    b = base / "baseline"
    cli("distill_train.py", "--data", synth_dir, "--lam", "0", "--out", b, *TINY)
    d = base / "kd"
    cli(
        "distill_train.py",
        "--data",
        synth_dir,
        "--teacher",
        teacher,
        "--lam",
        "0.9",
        "--temperature",
        "2",
        "--out",
        d,
        *TINY,
        "--unlabelled",
        synth_dir / "test" / "images",
        "--n-unlabelled",
        "4",
    )
    build_cache([teacher], [synth_dir], [synth_dir / "test" / "images"], base / "cache", overwrite=False)
    c = base / "kd_cache"
    cli("distill_train.py", "--data", synth_dir, "--teacher", teacher, "--teacher-cache", base / "cache", "--lam", "0.9", "--out", c, *TINY)
    return {"teacher": t, "baseline": b, "kd": d, "kd_cache": c, "cache": base / "cache", "base": base}
