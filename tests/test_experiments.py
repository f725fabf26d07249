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
           "ensemble_seeds": [1],
           "grid": [{"lam": [0, 0.9], "temperature": [2], "scale": ["T"], "unlabelled": [False, True]},
                    {"lam": [0.9], "temperature": [2], "scale": ["T"], "ensemble": [True]},
                    {"lam": [0.9], "temperature": ["auto"], "scale": ["T"]},
                    {"lam": [0.9], "temperature": [2], "scale": ["T"], "blackbox": ["mirrored", "noflip"]}],
           "seeds": [0, 1]}
    (root / "tiny.json").write_text(json.dumps(cfg))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    p = subprocess.run([sys.executable, "-m", "experiments.sweep", "--config", str(root / "tiny.json"), "--out", str(root / "out")],
                       cwd=ROOT, capture_output=True, text=True, env=env, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return root, p.stdout


def test_sweep_runs_every_config_and_seed(sweep):
    root, out = sweep
    df = pd.read_csv(root / "out" / "results.csv")
    teachers = df[df.kind == "teacher"]
    assert len(teachers) == 2 and sorted(teachers.seed) == [0, 1]  # the main teacher and the ensemble's second member
    assert teachers.teacher_nll.notna().all() and teachers.teacher_best_T.notna().all()
    students = df[df.kind == "student"]
    # baseline, KD, KD + unlabelled, KD from the 2-teacher ensemble, KD at T = auto, black box mirrored / no flips; x 2 seeds
    assert len(students) == 14
    assert sorted(students.seed.unique()) == [0, 1]
    assert students.unlabelled.sum() == 2
    assert (students.n_teachers == 2).sum() == 2 and set(students[students.n_teachers == 2].run) == {
        "unet2_from_unet4x2_T2_l0.9_sT_s0", "unet2_from_unet4x2_T2_l0.9_sT_s1"}
    for col in ("params", "mean_iou", "salt_iou", "kaggle_map", "epochs", "wall_s"):
        assert students[col].notna().all()
    kd_runs = students[students.lam > 0]
    assert kd_runs.teacher_kaggle_map.notna().all() and kd_runs.teacher_ece.notna().all()
    # the ensemble's soft target is scored as such, not as the single teacher
    ens_t = students[students.n_teachers == 2].teacher_kaggle_map.iloc[0]
    assert ens_t == ens_t and (students[students.n_teachers == 2].teacher_kaggle_map == ens_t).all()
    s = pd.read_csv(root / "out" / "summary.csv")
    kd = s[s.config.str.contains("KD")]
    assert len(kd) == 6 and (kd.n_pairs == 2).all() and (kd.d_lo <= kd.d_kaggle).all() and (kd.d_kaggle <= kd.d_hi).all()
    assert kd.config.str.contains("ens2").sum() == 1
    assert "sweep tiny" in out and "teacher calibration" in out


def test_auto_temperature_and_black_box_runs(sweep):
    """T = auto trains at the soft target's NLL-optimal T; black-box runs learn from the teacher's saved maps."""
    root, _ = sweep
    out = root / "out"
    auto = json.loads((out / "unet2_from_unet4_Tauto_l0.9_sT_s0" / "metrics.json").read_text())
    assert auto["temperature"] == auto["teacher"]["calibration"]["best_temperature"] > 0
    assert json.loads((out / "unet2_from_unet4_Tauto_l0.9_sT_s0" / "config.json").read_text())["temperature"] == "auto"
    n_images = len(list((out / "data" / "train" / "images").glob("*.png")))
    assert len(list((out / "teacher_blackbox" / "probabilities").glob("*.png"))) == n_images
    bb = {r: json.loads((out / r / "config.json").read_text()) for r in ("unet2_from_blackbox_T2_l0.9_sT_s0", "unet2_from_blackbox_T2_l0.9_sT_noflip_s0")}
    assert [c["flip"] for c in bb.values()] == [True, False] and all(not c["teacher"] and c["teacher_cache"] for c in bb.values())
    # the black box is the teacher, seen through 16-bit maps: its validation score is the teacher's
    bb_m = json.loads((out / "unet2_from_blackbox_T2_l0.9_sT_s0" / "metrics.json").read_text())["teacher"]["val"]
    t_m = json.loads((out / "teacher" / "metrics.json").read_text())["val"]
    assert abs(bb_m["mean_iou"] - t_m["mean_iou"]) < 0.01
    s = pd.read_csv(out / "summary.csv")
    assert s.config.str.contains("T=auto").sum() == 1 and s.config.str.endswith("blackbox").sum() == 1
    assert s.config.str.endswith("blackbox noflip").sum() == 1


def test_rerun_skips_finished_runs(sweep):
    root, _ = sweep
    before = {p: p.stat().st_mtime for p in (root / "out").glob("*/metrics.json")}
    p = subprocess.run([sys.executable, "-m", "experiments.sweep", "--config", str(root / "tiny.json"), "--out", str(root / "out")],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0
    assert {p: p.stat().st_mtime for p in (root / "out").glob("*/metrics.json")} == before


def test_interrupted_run_is_resumed_or_restarted(sweep):
    """A run dir with a checkpoint is continued with --resume; a damaged checkpoint falls back to a fresh start."""
    import h5py

    root, _ = sweep
    rdir = root / "out" / "unet2_baseline_s1"
    (rdir / "metrics.json").unlink()
    with h5py.File(rdir / "checkpoint.weights.h5", "w") as f:
        f.attrs["epoch"] = 3  # the state below says 1: the kind of mismatch a kill while saving leaves
    (rdir / "checkpoint.json").write_text(json.dumps({"epoch": 1, "best": 0.5, "best_epoch": 1, "rows": []}))
    p = subprocess.run([sys.executable, "-m", "experiments.sweep", "--config", str(root / "tiny.json"), "--out", str(root / "out")],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    failed_log = root / "out" / "logs" / "unet2_baseline_s1.resume-failed.txt"
    assert failed_log.read_text().splitlines()[0].endswith("--resume") and "inconsistent" in failed_log.read_text()
    assert "could not resume" in p.stdout and (rdir / "metrics.json").exists() and not (rdir / "checkpoint.json").exists()


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


def test_grid_union_seed_filter_and_bad_grids(tmp_path):
    from common.cli import UserError
    from experiments.sweep import student_runs

    cfg = {"seeds": [0, 1, 2], "ensemble_seeds": [1],
           "grid": [{"lam": [0, 0.9], "unlabelled": [False, True]}, {"lam": [0.9], "ensemble": [True]}]}
    names = [r["name"] for r in student_runs(cfg, 8)]
    assert len(names) == 12 and len(set(names)) == 12  # 4 configs x 3 seeds, the baseline once per seed
    assert names[:4] == ["unet4_baseline_s0", "unet4_from_unet8_T2_l0.9_sT_s0", "unet4_from_unet8_T2_l0.9_sT_unl_s0",
                         "unet4_from_unet8x2_T2_l0.9_sT_s0"]
    with pytest.raises(UserError, match="ensemble_seeds"):
        student_runs({**cfg, "ensemble_seeds": []}, 8)
    with pytest.raises(UserError, match="unknown axis 'lamda'"):
        student_runs({**cfg, "grid": {"lamda": [0.5]}}, 8)
    (tmp_path / "c.json").write_text(json.dumps({"name": "c", **cfg}))
    p = subprocess.run([sys.executable, "-m", "experiments.sweep", "--config", str(tmp_path / "c.json"), "--dry-run", "--seeds", "2"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "4 student runs" in p.stdout and "_s2" in p.stdout and "_s0" not in p.stdout
    p = subprocess.run([sys.executable, "-m", "experiments.sweep", "--config", str(tmp_path / "c.json"), "--dry-run", "--seeds", "7"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.strip().startswith("error: --seeds 7") and "Traceback" not in p.stderr


def test_is_locked_sees_live_and_stale_locks(tmp_path):
    from common.io import is_locked

    assert not is_locked(tmp_path)
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        (tmp_path / ".lock").write_text(str(sleeper.pid))
        assert is_locked(tmp_path)  # another live process holds it: a concurrent sweep skips the run
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not is_locked(tmp_path)  # stale: its process is gone


@pytest.mark.parametrize("path", sorted((ROOT / "experiments" / "configs").glob("*.json")), ids=lambda p: p.stem)
def test_shipped_configs_expand(path):
    """Every preset parses, names each run once, and presets sharing a sweep dir agree on the teacher."""
    from experiments.sweep import load_config, student_runs

    cfg = load_config(path)
    runs = student_runs(cfg, cfg.get("teacher", {}).get("base_filters", 16))
    names = [r["name"] for r in runs]
    assert runs and len(names) == len(set(names))
    assert all(n.endswith(tuple(f"_s{s}" for s in cfg["seeds"])) for n in names)
    for other in (ROOT / "experiments" / "configs").glob("*.json"):
        o = json.loads(other.read_text())
        if o["name"] == cfg["name"]:  # same runs/<name> dir: the same teacher and data, or runs would mix
            assert (o.get("teacher"), o.get("data"), o.get("teacher_cache")) == (cfg.get("teacher"), cfg.get("data"), cfg.get("teacher_cache"))


def test_given_teacher_without_split_file(sweep, tmp_path):
    """A config's teacher_path with no split.json beside it: the baseline and KD runs share the seed's split."""
    import shutil

    root, _ = sweep
    for f in ("teacher.keras", "teacher.keras.json"):
        if (root / "out" / "teacher" / f).exists():
            shutil.copy(root / "out" / "teacher" / f, tmp_path / f)
    cfg = {"name": "given", "data": str(root / "out" / "data"), "teacher_path": str(tmp_path / "teacher.keras"),
           "student": {"base_filters": 2, **SHAPE}, "grid": {"lam": [0, 0.9]}, "seeds": [0]}
    (tmp_path / "given.json").write_text(json.dumps(cfg))
    p = subprocess.run([sys.executable, "-m", "experiments.sweep", "--config", str(tmp_path / "given.json"), "--out", str(tmp_path / "out")],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    splits = [json.loads((tmp_path / "out" / r / "split.json").read_text())
              for r in ("unet2_baseline_s0", "unet2_from_unet4_T2_l0.9_sT_s0")]  # named after the given teacher
    assert splits[0] == splits[1]
