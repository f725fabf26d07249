"""Kill a training run with SIGKILL mid-run; --resume finishes it like an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--lam", "0", "--epochs", "5", "--batch-size", "8", "--base-filters", "2", "--depth", "3", "--input-size", "104"]


def train(synth_dir, out, *extra):
    return [sys.executable, "distill_train.py", "--data", str(synth_dir), "--out", str(out), *ARGS, *extra]


def test_kill_and_resume_matches_uninterrupted(synth_dir, tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    ref = tmp_path / "ref"
    subprocess.run(train(synth_dir, ref), cwd=ROOT, check=True, capture_output=True, env=env, timeout=600)

    run = tmp_path / "killed"
    p = subprocess.Popen(train(synth_dir, run), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 300
    while time.time() < deadline:  # wait until epoch 2 is checkpointed, then kill during epoch 3
        ck = run / "checkpoint.json"
        if ck.exists() and json.loads(ck.read_text())["epoch"] >= 2:
            break
        time.sleep(0.02)
    time.sleep(0.3)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (run / "metrics.json").exists(), "the run finished before it was killed"
    killed_at = json.loads((run / "checkpoint.json").read_text())["epoch"]
    assert 2 <= killed_at < 5

    r = subprocess.run(train(synth_dir, run), cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 2 and "--overwrite" in r.stderr  # a plain re-run refuses the half-done dir
    r = subprocess.run(train(synth_dir, run, "--resume"), cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"resuming after epoch {killed_at}" in r.stdout

    h_ref, h = pd.read_csv(ref / "history.csv"), pd.read_csv(run / "history.csv")
    assert list(h["epoch"]) == [1, 2, 3, 4, 5]  # every epoch exactly once
    assert h["loss"].iloc[0] == h_ref["loss"].iloc[0]  # same seed, CPU: identical first epoch
    m_ref, m = (json.loads((d / "metrics.json").read_text())["val"] for d in (ref, run))
    for k in ("mean_iou", "kaggle_map"):
        assert abs(m[k] - m_ref[k]) < 0.02, (k, m[k], m_ref[k])
    (tmp_path / "resume_figures.json").write_text(
        json.dumps(
            {"killed_after_epoch": killed_at, "ref": m_ref, "resumed": m, "loss_ref": h_ref["loss"].tolist(), "loss": h["loss"].tolist()}
        )
    )
    print("resume figures:", json.dumps({"killed_after_epoch": killed_at, "ref": m_ref, "resumed": m}))


def test_resume_of_a_run_from_before_a_new_option(tmp_path):
    """A config.json written before a field existed resumes when the field holds its default, and not otherwise."""
    import dataclasses
    from types import SimpleNamespace

    from common.cli import UserError
    from common.io import release_lock
    from student.config import DistillConfig
    from training.runs import start_run

    run = tmp_path / "run"
    run.mkdir()
    cfg = DistillConfig(data="d", lam=0)
    old = {k: v for k, v in json.loads(json.dumps(dataclasses.asdict(cfg))).items() if k not in ("teacher_tta", "lovasz_epochs")}
    (run / "config.json").write_text(json.dumps(old))
    (run / "checkpoint.json").write_text("{}")
    opts = SimpleNamespace(overwrite=False, resume=True)
    start_run(cfg, run, opts)
    release_lock(run)
    (run / "config.json").write_text(json.dumps(old))
    with pytest.raises(UserError, match="lovasz_epochs"):
        start_run(DistillConfig(data="d", lam=0, epochs=5, lovasz_epochs=2), run, opts)
