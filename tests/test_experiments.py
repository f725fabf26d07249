"""A tiny sweep end to end: runs, resume by skipping, results table and summary, the notebook."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHAPE = {"input_size": 104, "depth": 3, "epochs": 1, "batch_size": 16}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    cfg = {"name": "tiny", "data": "synthetic", "synthetic": {"n_train": 64, "n_test": 16, "seed": 1},
           "teacher": {"base_filters": 4, **SHAPE}, "teacher_cache": True, "student": {"base_filters": 2, **SHAPE},
           "grid": {"lam": [0, 0.9], "temperature": [2], "scale": ["T"], "unlabelled": [False, True]}, "seeds": [0, 1]}
    (root / "tiny.json").write_text(json.dumps(cfg))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    p = subprocess.run([sys.executable, "-m", "experiments.sweep", "--config", str(root / "tiny.json"), "--out", str(root / "out")],
                       cwd=ROOT, capture_output=True, text=True, env=env, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return root, p.stdout


def test_sweep_runs_every_config_and_seed(sweep):
    root, out = sweep
    df = pd.read_csv(root / "out" / "results.csv")
    assert (df.kind == "teacher").sum() == 1
    students = df[df.kind == "student"]
    assert len(students) == 6  # baseline, KD, KD + unlabelled, x 2 seeds
    assert sorted(students.seed.unique()) == [0, 1]
    assert students.unlabelled.sum() == 2
    for col in ("params", "mean_iou", "salt_iou", "kaggle_map", "epochs", "wall_s"):
        assert students[col].notna().all()
    s = pd.read_csv(root / "out" / "summary.csv")
    kd = s[s.config.str.contains("KD")]
    assert len(kd) == 2 and (kd.n_pairs == 2).all() and (kd.d_lo <= kd.d_kaggle).all() and (kd.d_kaggle <= kd.d_hi).all()
    assert "sweep tiny" in out


def test_rerun_skips_finished_runs(sweep):
    root, _ = sweep
    before = {p: p.stat().st_mtime for p in (root / "out").glob("*/metrics.json")}
    p = subprocess.run([sys.executable, "-m", "experiments.sweep", "--config", str(root / "tiny.json"), "--out", str(root / "out")],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0
    assert {p: p.stat().st_mtime for p in (root / "out").glob("*/metrics.json")} == before


def test_paired_bootstrap_against_hand_computation(sweep):
    from experiments.results import bootstrap_ci

    d = np.array([0.1, 0.0, 0.2, -0.1, 0.3])
    lo, hi = bootstrap_ci(d, n=4000)
    assert lo < d.mean() < hi and lo > -0.1 and hi < 0.3


def test_notebook_runs_top_to_bottom(sweep, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    root, _ = sweep
    nb = nbformat.read(ROOT / "notebooks" / "compare_students.ipynb", as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")  # shipped without outputs
    os.environ["SWEEP_DIR"] = str(root / "out")
    try:
        NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    finally:
        os.environ.pop("SWEEP_DIR", None)
    images = sum(1 for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {}))
    assert images >= 5
