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
SHAPE = {"input_size": 112, "depth": 4, "epochs": 1, "batch_size": 16}  # depth 4: the default, so run names carry no "d3"


def sweep_cli(*args, env=None, timeout=600) -> subprocess.CompletedProcess:
    """`python -m experiments.sweep ARGS` from the repo root, as a user runs it; output captured."""
    return subprocess.run(
        [sys.executable, "-m", "experiments.sweep", *map(str, args)], cwd=ROOT, capture_output=True, text=True, env=env, timeout=timeout
    )


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    cfg = {
        "name": "tiny",
        "data": "synthetic",
        "synthetic": {"n_train": 64, "n_test": 16, "seed": 1},
        "teacher": {"base_filters": 4, **SHAPE},
        "teacher_cache": True,
        "student": {"base_filters": 2, **SHAPE},
        "ensemble_seeds": [1],
        "grid": [
            {"lam": [0, 0.9], "temperature": [2], "scale": ["T"], "unlabelled": [False, True]},
            {"lam": [0.9], "temperature": [2], "scale": ["T"], "ensemble": [True]},
            {"lam": [0.9], "temperature": ["auto"], "scale": ["T"]},
            {"lam": [0.9], "temperature": [2], "scale": ["T"], "blackbox": ["mirrored", "noflip"]},
        ],
        "seeds": [0, 1],
    }
    (root / "tiny.json").write_text(json.dumps(cfg))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    p = sweep_cli("--config", str(root / "tiny.json"), "--out", str(root / "out"), env=env, timeout=900)
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
        "unet2_from_unet4x2_T2_l0.9_sT_s0",
        "unet2_from_unet4x2_T2_l0.9_sT_s1",
    }
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
    bb = {
        r: json.loads((out / r / "config.json").read_text())
        for r in ("unet2_from_blackbox_T2_l0.9_sT_s0", "unet2_from_blackbox_T2_l0.9_sT_noflip_s0")
    }
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
    p = sweep_cli("--config", str(root / "tiny.json"), "--out", str(root / "out"), timeout=300)
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
    p = sweep_cli("--config", str(root / "tiny.json"), "--out", str(root / "out"), timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    failed_log = root / "out" / "logs" / "unet2_baseline_s1.resume-failed.txt"
    assert failed_log.read_text().splitlines()[0].endswith("--resume") and "inconsistent" in failed_log.read_text()
    assert "could not resume" in p.stdout and (rdir / "metrics.json").exists() and not (rdir / "checkpoint.json").exists()


def test_paired_bootstrap_is_a_seeded_percentile_of_resample_means():
    """bootstrap_ci by hand: the seeded resamples' means, sorted, and numpy's linear-interpolation percentiles of them."""
    from experiments.results import bootstrap_ci

    d = np.array([0.1, 0.0, 0.2, -0.1, 0.3])
    rows = np.random.default_rng(3).integers(0, len(d), (500, len(d)))
    means = sorted(sum(float(d[j]) for j in row) / len(d) for row in rows)

    def percentile(q):
        pos = q / 100 * (len(means) - 1)
        k = int(pos)
        return means[k] + (pos - k) * (means[min(k + 1, len(means) - 1)] - means[k])

    assert bootstrap_ci(d, n=500, seed=3) == pytest.approx((percentile(2.5), percentile(97.5)), abs=1e-12)
    assert bootstrap_ci(d, n=500, seed=4) != bootstrap_ci(d, n=500, seed=3)


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
    figures = ["".join(c.source) for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    # the forest plot of paired differences, the learning curves of the one student model, the mask grid
    assert any("forest_plot" in s for s in figures) and any("mask_grid" in s for s in figures)
    assert sum("learning_curves" in s for s in figures) == 1


def test_grid_union_seed_filter_and_bad_grids(tmp_path):
    from common.cli import UserError
    from experiments.sweep import student_runs

    cfg = {
        "seeds": [0, 1, 2],
        "ensemble_seeds": [1],
        "grid": [{"lam": [0, 0.9], "unlabelled": [False, True]}, {"lam": [0.9], "ensemble": [True]}],
    }
    names = [r.name for r in student_runs(cfg, "unet8")]
    assert len(names) == 12 and len(set(names)) == 12  # 4 configs x 3 seeds, the baseline once per seed
    assert names[:4] == [
        "unet4_baseline_s0",
        "unet4_from_unet8_T2_l0.9_sT_s0",
        "unet4_from_unet8_T2_l0.9_sT_unl_s0",
        "unet4_from_unet8x2_T2_l0.9_sT_s0",
    ]
    with pytest.raises(UserError, match="ensemble_seeds"):
        student_runs({**cfg, "ensemble_seeds": []}, "unet8")
    with pytest.raises(UserError, match="unknown axis 'lamda'"):
        student_runs({**cfg, "grid": {"lamda": [0.5]}}, "unet8")
    (tmp_path / "c.json").write_text(json.dumps({"name": "c", **cfg}))
    p = sweep_cli("--config", str(tmp_path / "c.json"), "--dry-run", "--seeds", "2", timeout=120)
    assert p.returncode == 0 and "4 student runs" in p.stdout and "_s2" in p.stdout and "_s0" not in p.stdout
    p = sweep_cli("--config", str(tmp_path / "c.json"), "--dry-run", "--seeds", "7", timeout=120)
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


# run names of the shipped presets, from the sweep before it planned its jobs (student_runs built them by hand):
# RunSpec must keep every existing run dir's name, or a sweep would train finished runs again
PRESETS = {
    "cpu_signals": (
        21,
        ["teacher"],
        [
            "unet4_baseline_aug_s0",
            "unet4_from_unet8_T2_l0.9_sT_unl_fitnets1_s0",
            "unet4_from_unet8_T2_l0.9_sT_unl_at500_s0",
            "unet4_from_unet8_T2_l0.9_sT_unl_cwd3_s0",
            "unet4_from_unet8_T2_l0.9_sT_unl_aug_s0",
            "unet4_from_unet8_T2_l0.9_sT_unl_mix0.2_s0",
            "unet4_from_unet8_T2_l0.9_sT_unl_aug_mix0.2_s0",
        ],
    ),
    "cpu_e45": (
        9,
        ["teacher_cache"],
        ["unet4_baseline_s0", "unet4_from_unet8_T2_l0.9_sT_unl_s0", "unet4_from_unet8_T2_l0.9_sT_unl_lov9_s0"],
    ),
    "cpu_e45_ensemble": (3, ["teacher_s1", "ensemble_cache"], ["unet4_from_unet8x2_T2_l0.9_sT_unl_tta_lov9_s0"]),
    "cpu_t16": (3, ["teacher", "teacher_cache"], ["unet4_from_unet16_T2_l0.9_sT_unl_lov9_s0"]),
    "cpu_tres8": (3, ["teacher", "teacher_cache"], ["unet4_from_resunet8_T2_l0.9_sT_unl_lov9_s0"]),
    "cpu_t16res8": (3, ["teacher_cpu_tres8", "ensemble_cache"], ["unet4_from_unet16_resunet8_T2_l0.9_sT_unl_tta_lov9_s0"]),
    "cpu_t16res8_e90": (3, ["teacher_cpu_tres8", "ensemble_cache"], ["unet4_from_unet16_resunet8_T2_l0.9_sT_unl_tta_lov18_s0"]),
    "cpu_bf16": (6, ["teacher", "teacher_cache"], ["unet4_from_unet8_T2_l0.9_sT_unl_s0", "unet4_from_unet8_T2_l0.9_sT_unl_bf16_s0"]),
    "cpu_tf": (6, ["teacher_cache"], ["unet4_from_unet8_T2_l0.9_sT_unl_s0", "unet4_from_unet8_T2_l0.9_sT_unl_bf16_s0"]),
    "cpu_e90": (
        12,
        ["teacher_s1", "teacher_cache", "ensemble_cache"],
        [
            "unet4_from_unet8_T2_l0.9_sT_unl_lov18_s0",
            "unet4_from_unet8x2_T2_l0.9_sT_unl_tta_lov18_s0",
            "unet4_baseline_s0",
            "unet4_from_unet8_T2_l0.9_sT_unl_s0",
        ],
    ),
    "cpu_unlabelled": (
        12,
        ["teacher", "teacher_cache", "teacher_cache_all"],
        [
            "unet4_from_unet8_T2_l0.9_sT_unl_s0",
            "unet4_from_unet8_T2_l0.9_sT_unl_u18k_s0",
            "unet4_from_unet8_T2_l0.9_sT_unl32_u18k_s0",
            "unet4_from_unet8_T2_l0.9_sT_unl_tta_s0",
        ],
    ),
    "cpu": (
        12,
        ["teacher", "teacher_s1", "teacher_cache", "ensemble_cache"],
        [
            "unet4_baseline_s0",
            "unet4_from_unet8_T2_l0.9_sT_s0",
            "unet4_from_unet8_T2_l0.9_sT_unl_s0",
            "unet4_from_unet8x2_T2_l0.9_sT_s0",
            "unet4_baseline_s1",
        ],
    ),
    "cpu_ablations": (
        12,
        ["teacher", "teacher_cache", "blackbox_probabilities", "blackbox_cache"],
        [
            "unet4_baseline_s0",
            "unet4_from_unet8_Tauto_l0.9_sT_s0",
            "unet4_from_blackbox_T2_l0.9_sT_s0",
            "unet4_from_blackbox_T2_l0.9_sT_noflip_s0",
            "unet4_baseline_s1",
        ],
    ),
    "cpu_grid": (
        12,
        ["teacher", "teacher_cache"],
        [
            "unet4_from_unet8_T2_l0.9_sT2_s0",
            "unet4_from_unet8_T4_l0.9_sT2_s0",
            "unet4_from_unet8_T1_l0.5_sT_s0",
            "unet4_from_unet8_T2_l1_sT_s0",
            "unet4_from_unet8_T2_l0.9_sT2_s1",
        ],
    ),
    "gpu": (
        306,
        ["teacher", "teacher_s1", "teacher_cache", "ensemble_cache"],
        [
            "unet2_baseline_s0",
            "unet4_baseline_s0",
            "unet2_from_unet16_T1_l0.5_sT_s0",
            "unet2_from_unet16_T1_l0.5_sT_unl_s0",
            "unet4_from_unet16_T1_l0.5_sT_s0",
        ],
    ),
    "cpu_frontier": (
        42,
        ["teacher", "teacher_cache"],
        ["unet4_baseline_s0", "mbv2add4_baseline_s0", "sepunet8_baseline_s0", "lraspp4_baseline_s0", "mbv2cat4_baseline_s0"],
    ),
    "cpu_finish": (
        9,
        ["teacher", "teacher_cache"],
        [
            "unet4_from_unet8_T2_l0.9_sT_unl_s0",
            "unet4_from_unet8_T2_l0.9_sT_unl_lov3_thr_s0",
            "unet4_from_unet8_T2_l0.9_sT_unl_tta_s0",
            "unet4_from_unet8_T2_l0.9_sT_unl_s1",
        ],
    ),
    "quick": (
        6,
        ["teacher", "teacher_cache"],
        ["unet4_baseline_s0", "unet4_from_unet8_T2_l0.9_sT_s0", "unet4_from_unet8_T2_l0.9_sT_unl_s0", "unet4_baseline_s1"],
    ),
}
ELSEWHERE = {
    "cpu_signals": ["unet4_from_unet8_T2_l0.9_sT_unl_cwd3_s2"],
    "cpu_e45": ["unet4_baseline_s2", "unet4_from_unet8_T2_l0.9_sT_unl_lov9_s2"],
    "cpu_e45_ensemble": ["unet4_from_unet8x2_T2_l0.9_sT_unl_tta_lov9_s2"],
    "cpu_t16": ["unet4_from_unet16_T2_l0.9_sT_unl_lov9_s2"],
    "cpu_tres8": ["unet4_from_resunet8_T2_l0.9_sT_unl_lov9_s2"],
    "cpu_t16res8": ["unet4_from_unet16_resunet8_T2_l0.9_sT_unl_tta_lov9_s2"],
    "cpu_t16res8_e90": ["unet4_from_unet16_resunet8_T2_l0.9_sT_unl_tta_lov18_s2"],
    "cpu_bf16": ["unet4_from_unet8_T2_l0.9_sT_unl_bf16_s2"],
    "cpu_tf": ["unet4_from_unet8_T2_l0.9_sT_unl_bf16_s2"],
    "cpu_e90": ["unet4_from_unet8_T2_l0.9_sT_unl_s2", "unet4_from_unet8x2_T2_l0.9_sT_unl_tta_lov18_s2"],
    "cpu_unlabelled": ["unet4_from_unet8_T2_l0.9_sT_unl_u18k_s2"],
    "cpu_frontier": ["unet6d3_from_unet8_T2_l0.9_sT_unl_s2", "unet4_bilinear_baseline_s1"],
    "cpu": ["unet4_from_unet8x2_T2_l0.9_sT_s2"],
    "cpu_ablations": ["unet4_from_blackbox_T2_l0.9_sT_noflip_s2"],
    "cpu_grid": ["unet4_from_unet8_T2_l1_sT_s2"],
    "gpu": ["unet2_from_unet16_T8_l1_sT2_unl_s1", "unet4_from_unet16x2_T2_l0.9_sT2_unl_s2"],
    "quick": ["unet4_from_unet8_T2_l0.9_sT_unl_s1"],
    "cpu_finish": ["unet4_from_unet8_T2_l0.9_sT_unl_tta_s2"],
}


PRESET_FILES = sorted(p for p in (ROOT / "experiments" / "configs").glob("*.py") if p.stem not in ("__init__", "base"))


@pytest.mark.parametrize("path", PRESET_FILES, ids=lambda p: p.stem)
def test_shipped_configs_plan_todays_run_names(path, tmp_path, monkeypatch):
    """Every preset plans its jobs (teachers and caches first), names each run once and as the sweep always has,
    and presets sharing a sweep dir agree on the teacher. Planned from an empty dir, as on a fresh clone: a preset's
    given teacher (teacher_path) is not there, so its names come from the config alone."""
    from experiments.sweep import load_config, parse_args, plan

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KERAS_BACKEND", raising=False)  # a preset's "backend" refuses another one set here

    cfg = load_config(path)
    jobs = plan(cfg, parse_args(["--config", str(path)]))
    n, prereqs, first = PRESETS[path.stem]
    names = [j.name for j in jobs if j.kind == "student"]
    assert [j.name for j in jobs if j.kind != "student"] == prereqs and [j.kind for j in jobs[len(prereqs) :]] == ["student"] * n
    assert len(names) == len(set(names)) == n and names[: len(first)] == first and set(ELSEWHERE[path.stem]) <= set(names)
    assert all(n.endswith(tuple(f"_s{s}" for s in cfg["seeds"])) for n in names)
    assert all(
        j.run_dir.name == j.name and j.done == j.run_dir / "metrics.json" and j.cmd[1] == "distill_train.py"
        for j in jobs
        if j.kind == "student"
    )
    for other in PRESET_FILES:
        o = load_config(other)
        if o["name"] == cfg["name"]:  # same runs/<name> dir: the same teacher and data, or runs would mix
            assert (o.get("teacher"), o.get("data"), o.get("teacher_cache")) == (
                cfg.get("teacher"),
                cfg.get("data"),
                cfg.get("teacher_cache"),
            )


def test_presets_by_path_by_name_and_by_their_older_json_spelling(tmp_path):
    """experiments/configs/cpu.py, `cpu` and experiments/configs/cpu.json (presets were JSON files) are one preset; a
    JSON preset of a user's own still loads; a .py without PRESET is refused in one line."""
    from common.cli import UserError
    from experiments.sweep import load_config

    configs = ROOT / "experiments" / "configs"
    cpu = load_config(configs / "cpu.py")
    assert load_config("cpu") == load_config(configs / "cpu.json") == cpu and cpu["description"].startswith("Real TGS data")
    assert cpu["teacher"] == {"base_filters": 8, "epochs": 20} and cpu["seeds"] == [0, 1, 2]  # from base.CPU
    (tmp_path / "mine.json").write_text(json.dumps({k: v for k, v in cpu.items() if k != "description"}))
    assert load_config(tmp_path / "mine.json") == {k: v for k, v in cpu.items() if k != "description"}
    (tmp_path / "empty.py").write_text("X = 1\n")
    with pytest.raises(UserError, match="defines no PRESET dict"):
        load_config(tmp_path / "empty.py")


def test_model_axis_sets_the_architecture_flags(tmp_path):
    """A "model" grid entry sets arch, width, depth and decoder of the student; names and commands follow it."""
    from common.cli import UserError
    from experiments.sweep import parse_args, plan, student_runs

    cfg = {
        "name": "m",
        "data": "synthetic",
        "teacher": {"base_filters": 4},
        "seeds": [0],
        "grid": {"lam": [0, 0.9], "model": [{}, {"arch": "sepunet", "base_filters": 8}, {"arch": "unet", "base_filters": 6, "depth": 3}]},
    }
    names = [r.name for r in student_runs(cfg, "unet4")]
    assert names == [
        "unet4_baseline_s0",
        "sepunet8_baseline_s0",
        "unet6d3_baseline_s0",
        "unet4_from_unet4_T2_l0.9_sT_s0",
        "sepunet8_from_unet4_T2_l0.9_sT_s0",
        "unet6d3_from_unet4_T2_l0.9_sT_s0",
    ]
    (tmp_path / "m.json").write_text(json.dumps(cfg))
    jobs = {j.name: j.cmd for j in plan(cfg, parse_args(["--config", str(tmp_path / "m.json"), "--out", str(tmp_path / "o")]))}
    cmd = " ".join(jobs["unet6d3_from_unet4_T2_l0.9_sT_s0"])
    assert "--base-filters 6 --depth 3" in cmd and "--arch" not in cmd and "--upsample" not in cmd  # unet: the default arch
    assert "--arch sepunet --base-filters 8" in " ".join(jobs["sepunet8_baseline_s0"])
    with pytest.raises(UserError, match='"model" entry'):
        student_runs({**cfg, "grid": {"model": [{"arch": "unet", "width": 3}]}}, "unet4")


def test_options_axis_names_runs_and_passes_flags(tmp_path):
    """An "options" entry (n_unlabelled, teacher_tta, lovasz_epochs, tune_threshold) reaches the command and the name."""
    from experiments.sweep import parse_args, plan, student_runs

    cfg = {
        "name": "o",
        "data": "synthetic",
        "teacher": {"base_filters": 4},
        "teacher_cache": True,
        "seeds": [0],
        "grid": {"lam": [0, 0.9], "unlabelled": [True], "options": [{}, {"n_unlabelled": 32}, {"teacher_tta": True, "lovasz_epochs": 2}]},
    }
    names = [r.name for r in student_runs(cfg, "unet4")]
    assert names == [
        "unet4_baseline_s0",
        "unet4_baseline_lov2_s0",
        "unet4_from_unet4_T2_l0.9_sT_unl_s0",
        "unet4_from_unet4_T2_l0.9_sT_unl32_s0",
        "unet4_from_unet4_T2_l0.9_sT_unl_tta_lov2_s0",
    ]
    (tmp_path / "o.json").write_text(json.dumps(cfg))
    jobs = {j.name: " ".join(j.cmd) for j in plan(cfg, parse_args(["--config", str(tmp_path / "o.json"), "--out", str(tmp_path / "x")]))}
    assert "--n-unlabelled 32" in jobs["unet4_from_unet4_T2_l0.9_sT_unl32_s0"]
    assert "--teacher-tta --lovasz-epochs 2" in jobs["unet4_from_unet4_T2_l0.9_sT_unl_tta_lov2_s0"]
    assert "--teacher-tta" not in jobs["unet4_baseline_lov2_s0"] and "--lovasz-epochs 2" in jobs["unet4_baseline_lov2_s0"]


def test_all_unlabelled_runs_name_their_count_and_read_cache_all(tmp_path):
    """ "unlabelled": "all" adds the "unlabelled_extra" folders, names the count (_u18k here: counted, or as stated), and
    reads the teacher's cache_all, built over the data's test images and the extra folders; bad configs are refused."""
    from common.cli import UserError
    from experiments.sweep import parse_args, plan, student_runs

    extra = tmp_path / "more"
    extra.mkdir()
    for i in range(3):  # pixels are not read when counting
        (extra / f"x{i}.png").write_bytes(b"")
    cfg = {
        "name": "u",
        "data": str(tmp_path / "absent.npz"),
        "teacher_path": str(tmp_path / "t" / "teacher.keras"),
        "teacher_cache": True,
        "unlabelled_extra": [str(extra)],
        "unlabelled_all_count": 18000,
        "seeds": [0],
        "grid": {"lam": [0, 0.9], "unlabelled": [True, "all"]},
    }
    (tmp_path / "u.json").write_text(json.dumps(cfg))
    jobs = {j.name: " ".join(j.cmd) for j in plan(cfg, parse_args(["--config", str(tmp_path / "u.json"), "--out", str(tmp_path / "o")]))}
    assert list(jobs) == [
        "teacher_cache",
        "teacher_cache_all",
        "unet4_baseline_s0",
        "unet4_from_unet16_T2_l0.9_sT_unl_s0",
        "unet4_from_unet16_T2_l0.9_sT_unl_u18k_s0",
    ]
    assert jobs["teacher_cache_all"].endswith(f"cache_all --unlabelled {cfg['data']} {extra}")
    assert jobs["teacher_cache"].endswith(f"cache --unlabelled {cfg['data']}")
    run = jobs["unet4_from_unet16_T2_l0.9_sT_unl_u18k_s0"]
    assert f"--teacher-cache {tmp_path / 't' / 'cache_all'} --unlabelled {cfg['data']} {extra}" in run
    with pytest.raises(UserError, match="does not exist"):  # nothing stated, nothing to count
        plan({k: v for k, v in cfg.items() if k != "unlabelled_all_count"}, parse_args(["--config", str(tmp_path / "u.json")]))
    with pytest.raises(UserError, match="unlabelled_extra"):
        student_runs({**cfg, "unlabelled_extra": []}, "unet4")
    with pytest.raises(UserError, match="not allowed"):
        student_runs({**cfg, "grid": {"unlabelled": ["some"]}}, "unet4")


def test_runspec_names_the_sweep_runs(tmp_path):
    """A sweep's run is its config: the command it runs parses back (distill_train.py's own parser) into the config the
    sweep checked, and RunSpec names that config as the sweep named the run dir."""
    from common.config import parse_args as config_args
    from experiments.sweep import load_config, parse_args, plan, student_runs
    from student.config import DistillConfig
    from training.naming import RunSpec

    path = ROOT / "experiments" / "configs" / "cpu_ablations.py"
    cfg = load_config(path)
    cfg = {**cfg, "ensemble_seeds": [1], "grid": [*cfg["grid"], {"ensemble": [True], "unlabelled": [True]}]}
    jobs = {j.name: j for j in plan(cfg, parse_args(["--config", str(path), "--out", str(tmp_path / "s")]))}
    runs = student_runs(cfg, "unet8")
    assert {r.name for r in runs} == {n for n, j in jobs.items() if j.kind == "student"} and len(runs) == 15
    for r in runs:
        job = jobs[r.name]
        parsed, _ = config_args(DistillConfig, list(job.cmd[2:]), multi=("unlabelled", "teacher", "teacher_weights", "feature_layers"))
        assert parsed.out == str(tmp_path / "s" / r.name) and Path(parsed.out).name == r.name
        assert (parsed.lam, parsed.temperature, parsed.flip) == (r.config.lam, r.config.temperature, r.config.flip)
        source = "blackbox" if r.point["blackbox"] else "unet8x2" if r.point["ensemble"] else "unet8"
        assert RunSpec.from_config(parsed, source).name == r.name


def test_shards_split_the_students_and_keep_what_they_need(tmp_path):
    from experiments.sweep import parse_args, plan

    (tmp_path / "c.json").write_text(
        json.dumps(
            {
                "name": "c",
                "data": "synthetic",
                "teacher_cache": True,
                "ensemble_seeds": [1],
                "grid": [{"lam": [0]}, {"lam": [0.9], "blackbox": ["noflip"]}],
                "seeds": [0, 1],
            }
        )
    )
    full = plan(json.loads((tmp_path / "c.json").read_text()), parse_args(["--config", str(tmp_path / "c.json")]))
    students = [j.name for j in full if j.kind == "student"]
    shards = [
        plan(json.loads((tmp_path / "c.json").read_text()), parse_args(["--config", str(tmp_path / "c.json"), "--shard", f"{k}/2"]))
        for k in (1, 2)
    ]
    assert [j.name for j in shards[0] if j.kind == "student"] == students[0::2] == ["unet4_baseline_s0", "unet4_baseline_s1"]
    assert [j.name for j in shards[1] if j.kind == "student"] == students[1::2]  # student i goes to shard i % N + 1
    # the black-box maps only where black-box runs are; what no run needs (the ensemble's teacher) everywhere; no teacher
    # cache at all, since no run reads one (the KD runs here distil from the black-box cache)
    assert [j.name for j in shards[0] if j.kind != "student"] == ["teacher", "teacher_s1"]
    assert (
        [j.name for j in shards[1] if j.kind != "student"]
        == [j.name for j in full if j.kind != "student"]
        == ["teacher", "teacher_s1", "blackbox_probabilities", "blackbox_cache"]
    )
    assert not (tmp_path / "runs").exists() and not (ROOT / "runs" / "c").exists()  # planning writes nothing


def test_time_estimate_from_finished_runs(tmp_path):
    """The estimate counts what is left (a run is finished when its metrics.json holds scores; an interrupted one counts
    the part of its epochs still to train) at the finished runs' measured speed."""
    from experiments.sweep import Job, estimate

    val = {"mean_iou": 0.8, "kaggle_map": 0.7}  # what every finished run's metrics.json holds

    jobs = [
        Job(n, tmp_path / n, tmp_path / n / "metrics.json", ("true",), (), k)
        for n, k in [("teacher", "teacher"), ("teacher_cache", "cache"), ("a", "student"), ("b", "student"), ("c", "student")]
    ]
    assert estimate(jobs, tmp_path) == "4 runs to go; time estimate: unknown before the first run"
    for n, wall, ips in [("teacher", 1200.0, 20.0), ("a", 1800.0, 55.0)]:
        (tmp_path / n).mkdir()
        (tmp_path / n / "metrics.json").write_text(json.dumps({"val": val, "wall_s": wall, "train_img_per_s": ips}))
    (tmp_path / "teacher" / "teacher.keras").write_text("")
    assert estimate(jobs, tmp_path) == "2 runs to go; ~1 h at the measured 55 img/s"
    (tmp_path / "c").mkdir()  # c was interrupted after 10 of its 30 epochs: two thirds of a run are left
    (tmp_path / "c" / "checkpoint.json").write_text(json.dumps({"epoch": 10}))
    (tmp_path / "c" / "config.json").write_text(json.dumps({"epochs": 30}))
    assert estimate(jobs, tmp_path) == "2 runs to go (1 resumed); ~50 min at the measured 55 img/s"
    (tmp_path / "b" / "metrics.json").parent.mkdir()
    (tmp_path / "b" / "metrics.json").write_text(json.dumps({"val": val, "wall_s": 3000.0, "train_img_per_s": 45.0}))
    assert estimate(jobs, tmp_path) == "1 run to go (1 resumed); ~27 min at the measured 50 img/s"
    assert estimate(jobs[:2], tmp_path) == "0 runs to go"


@pytest.mark.parametrize("shard", ["3/2", "0/2", "a/b", "1/0", "1/2/3", "-1/2"])
def test_bad_shard_is_one_line_and_writes_nothing(tmp_path, shard):
    (tmp_path / "c.json").write_text(json.dumps({"name": "c", "grid": {"lam": [0, 0.9]}, "seeds": [0]}))
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.sweep",
            "--config",
            str(tmp_path / "c.json"),
            "--out",
            str(tmp_path / "out"),
            f"--shard={shard}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2 and p.stdout == "" and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert p.stderr.startswith("error: --shard") and not (tmp_path / "out").exists()


def test_list_prints_the_pending_commands(sweep, tmp_path):
    """--list: one shell command per job still to do, teachers and caches first, with the sweep's --overwrite/--resume."""
    import shlex

    root, _ = sweep

    def listing(config, *argv):
        p = sweep_cli("--config", str(config), "--list", *map(str, argv), timeout=300)
        assert p.returncode == 0, p.stderr[-2000:]
        return [shlex.split(line) for line in p.stdout.splitlines()]

    assert listing(root / "tiny.json", "--out", root / "out") == []  # a finished sweep: nothing to do
    cfg = json.loads((root / "tiny.json").read_text())
    (tmp_path / "more.json").write_text(json.dumps({**cfg, "seeds": [0, 1, 2]}))
    more = listing(tmp_path / "more.json", "--out", root / "out")  # one more seed: its student runs, nothing else
    assert [Path(c[c.index("--out") + 1]).name for c in more] == [
        "unet2_baseline_s2",
        "unet2_from_unet4_T2_l0.9_sT_s2",
        "unet2_from_unet4_T2_l0.9_sT_unl_s2",
        "unet2_from_unet4x2_T2_l0.9_sT_s2",
        "unet2_from_unet4_Tauto_l0.9_sT_s2",
        "unet2_from_blackbox_T2_l0.9_sT_s2",
        "unet2_from_blackbox_T2_l0.9_sT_noflip_s2",
    ]
    assert all(c[0] == sys.executable and c[1] == "distill_train.py" and c[-1] == "--overwrite" for c in more)
    assert not (root / "out" / "unet2_baseline_s2").exists()
    fresh = tmp_path / "fresh"  # a new sweep dir with one interrupted run: every job, that one with --resume
    (fresh / "unet2_baseline_s0").mkdir(parents=True)
    (fresh / "unet2_baseline_s0" / "checkpoint.json").write_text("{}")
    jobs = listing(root / "tiny.json", "--out", fresh, "--data", root / "out" / "data")
    assert (
        len(jobs) == 20
        and [c[1:3] for c in jobs[:6]]
        == [["-m", "teacher.train"]] * 2 + [["-m", "teacher.cache"]] * 2 + [["evaluate.py", "--model"], ["-m", "teacher.cache"]]
        and all(c[1] == "distill_train.py" for c in jobs[6:])
    )
    assert [c[-1] for c in jobs].count("--resume") == 1 and jobs[6][jobs[6].index("--out") + 1].endswith("unet2_baseline_s0")
    assert jobs[6][-1] == "--resume" and sorted(p.name for p in fresh.iterdir()) == ["unet2_baseline_s0"]  # --list writes nothing


def test_two_shards_on_one_sweep_dir(tmp_path):
    """--shard 1/2 and --shard 2/2 at once on one dir: the teacher is trained once (the other shard waits for it) and
    every student run once."""
    cfg = {
        "name": "shards",
        "data": "synthetic",
        "synthetic": {"n_train": 48, "n_test": 16, "seed": 2},
        "teacher": {"base_filters": 2, **SHAPE},
        "teacher_cache": True,
        "student": {"base_filters": 2, **SHAPE},
        "grid": {"lam": [0, 0.9]},
        "seeds": [0],
    }
    (tmp_path / "shards.json").write_text(json.dumps(cfg))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "experiments.sweep",
                "--config",
                str(tmp_path / "shards.json"),
                "--out",
                str(tmp_path / "out"),
                "--shard",
                f"{k}/2",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for k in (1, 2)
    ]
    outs = [p.communicate(timeout=900) for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(o[0][-2000:] + o[1][-2000:] for o in outs)
    stdout = "".join(o[0] for o in outs)
    runs = ["unet2_baseline_s0", "unet2_from_unet2_T2_l0.9_sT_s0"]
    for name in ["teacher", "teacher_cache", *runs]:  # each job run by one shard, once
        assert stdout.count(f"{name}: ok in") == 1, stdout
        log = (tmp_path / "out" / "logs" / f"{name}.txt").read_text()
        assert sum(line.startswith("$ ") for line in log.splitlines()) == 1
    for name in ["teacher", *runs]:
        log = (tmp_path / "out" / "logs" / f"{name}.txt").read_text()
        assert sum(line.startswith("done: ") for line in log.splitlines()) == 1
    assert "skipped" not in stdout and "run the sweep again" not in stdout
    df = pd.read_csv(tmp_path / "out" / "results.csv")
    assert sorted(df.run) == sorted(["teacher", *runs]) and (df.groupby("run").size() == 1).all()
    assert len(list((tmp_path / "out" / "data" / "train" / "images").glob("*.png"))) == 48
    assert not [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".data")]  # the losing shard's copy is gone


def test_an_ensemble_grows_beside_a_given_teacher(tmp_path):
    """A preset that reuses another sweep's teacher (teacher_path) plans the ensemble's other members beside it
    (runs/cpu/teacher -> runs/cpu/teacher_s1, trained once for every preset sharing that teacher), on its split; the
    ensemble's cache, which holds this preset's unlabelled images, stays in this sweep's dir."""
    from experiments.sweep import parse_args, plan

    given = tmp_path / "cpu" / "teacher" / "teacher.keras"
    cfg = {
        "name": "e45",
        "data": "synthetic",
        "teacher_path": str(given),
        "teacher": {"base_filters": 8, "epochs": 20},
        "teacher_cache": True,
        "ensemble_seeds": [1],
        "grid": {"lam": [0.9], "unlabelled": [True], "ensemble": [True]},
        "seeds": [0],
    }
    (tmp_path / "e45.json").write_text(json.dumps(cfg))
    jobs = {j.name: j for j in plan(cfg, parse_args(["--config", str(tmp_path / "e45.json"), "--out", str(tmp_path / "e45")]))}
    assert list(jobs) == ["teacher_s1", "ensemble_cache", "unet4_from_unet8x2_T2_l0.9_sT_unl_s0"]
    member = " ".join(jobs["teacher_s1"].cmd)
    assert jobs["teacher_s1"].run_dir == tmp_path / "cpu" / "teacher_s1"
    assert f"--split-file {tmp_path / 'cpu' / 'teacher' / 'split.json'}" in member and "--seed 1" in member
    assert jobs["ensemble_cache"].run_dir == tmp_path / "e45" / "teacher_ensemble2" / "cache"
    cache = " ".join(jobs["ensemble_cache"].cmd)
    assert f"--teacher {given} --teacher {tmp_path / 'cpu' / 'teacher_s1' / 'teacher.keras'}" in cache and "--unlabelled" in cache


def test_an_ensemble_of_another_presets_teacher(tmp_path):
    """ "ensemble_presets": another preset's teacher joins the ensemble: the runs are named by both kinds, the ensemble's
    cache reads both files; a member not trained yet is trained on this preset's split (in its own preset's dir), a
    trained one is taken as it is, and one trained on another split, or with no split.json, is refused at plan time."""
    from common.cli import UserError
    from experiments.sweep import ROOT, parse_args, plan

    main, member = tmp_path / "t16" / "teacher", tmp_path / "res" / "teacher"
    main.mkdir(parents=True)
    (main / "teacher.keras.json").write_text(json.dumps({"model_name": "unet16"}))
    (main / "split.json").write_text(json.dumps({"seed": 0, "train": ["a", "b"], "val": ["c"]}))
    (main / "teacher.keras").write_bytes(b"model")
    trained = {"name": "res", "data": "synthetic", "teacher_path": str(member / "teacher.keras"), "grid": {}, "seeds": [0]}
    untrained = {"name": "res_new", "data": "synthetic", "teacher": {"arch": "resunet", "base_filters": 8}, "grid": {}, "seeds": [0]}
    cfg = {
        "name": "mix",
        "data": "synthetic",
        "teacher_path": str(main / "teacher.keras"),
        "teacher_cache": True,
        "grid": {"lam": [0.9], "unlabelled": [True], "ensemble": [True]},
        "seeds": [0],
    }

    def jobs(members: dict):
        for name, m in members.items():
            (tmp_path / f"{name}.json").write_text(json.dumps(m))
        c = {**cfg, "ensemble_presets": [str(tmp_path / f"{n}.json") for n in members]}
        (tmp_path / "mix.json").write_text(json.dumps(c))
        return {j.name: j for j in plan(c, parse_args(["--config", str(tmp_path / "mix.json"), "--out", str(tmp_path / "mix")]))}

    member.mkdir(parents=True)
    (member / "teacher.keras.json").write_text(json.dumps({"model_name": "resunet8"}))
    (member / "teacher.keras").write_bytes(b"other model")
    with pytest.raises(UserError, match="no split.json beside it"):
        jobs({"res": trained})
    (member / "split.json").write_text(json.dumps({"seed": 1, "train": ["a", "c"], "val": ["b"]}))
    with pytest.raises(UserError, match="another split"):
        jobs({"res": trained})
    (member / "split.json").write_text(json.dumps({"seed": 0, "train": ["b", "a"], "val": ["c"]}))
    planned = jobs({"res": trained})
    assert list(planned) == ["ensemble_cache", "unet4_from_unet16_resunet8_T2_l0.9_sT_unl_s0"]
    cache = " ".join(planned["ensemble_cache"].cmd)
    assert f"--teacher {main / 'teacher.keras'} --teacher {member / 'teacher.keras'}" in cache
    assert planned["ensemble_cache"].run_dir == tmp_path / "mix" / "teacher_ensemble2" / "cache"
    planned = jobs({"res": trained, "res_new": untrained})  # three kinds, the last one to train first
    assert list(planned)[:2] == ["teacher_res_new", "ensemble_cache"]
    new = planned["teacher_res_new"]
    assert new.run_dir == ROOT / "runs" / "res_new" / "teacher" and f"--split-file {main / 'split.json'}" in " ".join(new.cmd)
    assert "--arch resunet" in " ".join(new.cmd) and list(planned)[2] == "unet4_from_unet16_resunet8_resunet8_T2_l0.9_sT_unl_s0"


def test_a_bare_given_teacher_gets_its_cache_in_the_sweep_dir(tmp_path):
    """A given teacher file that is not a teacher.train run dir (./teacher.keras beside the README's cache/tgs.npz):
    its cache is planned in the sweep's dir, not in the folder the file lies in; an ensemble, whose other members train
    on the teacher's split, is refused before anything runs. In a run dir (split.json beside it) the cache stays beside it."""
    from common.cli import UserError
    from experiments.sweep import parse_args, plan

    project = tmp_path / "project"
    (project / "cache").mkdir(parents=True)
    (project / "cache" / "tgs.npz").write_bytes(b"data")
    given = project / "teacher.keras"
    given.write_bytes(b"model")
    cfg = {
        "name": "bare",
        "data": "synthetic",
        "teacher_path": str(given),
        "teacher_cache": True,
        "grid": {"lam": [0.9], "unlabelled": [True]},
        "seeds": [0],
    }

    def jobs(cfg):
        (tmp_path / "bare.json").write_text(json.dumps(cfg))
        return {j.name: j for j in plan(cfg, parse_args(["--config", str(tmp_path / "bare.json"), "--out", str(tmp_path / "out")]))}

    cache = jobs(cfg)["teacher_cache"]
    assert cache.run_dir == tmp_path / "out" / "given_teacher" / "cache"
    assert str(project / "cache") not in " ".join(cache.cmd)
    with pytest.raises(UserError, match="no split.json beside it"):
        jobs({**cfg, "ensemble_seeds": [1], "grid": {"lam": [0.9], "ensemble": [True]}})
    (project / "split.json").write_text("{}")  # a teacher.train run dir: its cache is shared with every preset using it
    assert jobs(cfg)["teacher_cache"].run_dir == project / "cache"


def test_given_teacher_without_split_file(sweep, tmp_path):
    """A config's teacher_path with no split.json beside it: the baseline and KD runs share the seed's split."""
    import shutil

    root, _ = sweep
    for f in ("teacher.keras", "teacher.keras.json"):
        if (root / "out" / "teacher" / f).exists():
            shutil.copy(root / "out" / "teacher" / f, tmp_path / f)
    cfg = {
        "name": "given",
        "data": str(root / "out" / "data"),
        "teacher_path": str(tmp_path / "teacher.keras"),
        "student": {"base_filters": 2, **SHAPE},
        "grid": {"lam": [0, 0.9]},
        "seeds": [0],
    }
    (tmp_path / "given.json").write_text(json.dumps(cfg))
    p = sweep_cli("--config", str(tmp_path / "given.json"), "--out", str(tmp_path / "out"), timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    splits = [
        json.loads((tmp_path / "out" / r / "split.json").read_text()) for r in ("unet2_baseline_s0", "unet2_from_unet4_T2_l0.9_sT_s0")
    ]  # named after the given teacher
    assert splits[0] == splits[1]


def test_a_run_with_a_broken_metrics_json_is_not_finished(sweep, tmp_path):
    """A run whose metrics.json is truncated (a full disk, a copy cut short) or empty is not counted as finished:
    --list hands it out again (with --overwrite), and experiments.results names it instead of dropping it."""
    import shlex
    import shutil

    from experiments.results import unreadable_runs
    from experiments.sweep import Job

    root, _ = sweep
    out = tmp_path / "out"
    shutil.copytree(root / "out", out, ignore=shutil.ignore_patterns("*.keras", "cache*", "tensorboard"))
    cut, empty = out / "unet2_baseline_s0", out / "unet2_baseline_s1"
    (cut / "metrics.json").write_text((cut / "metrics.json").read_text()[:50])
    (empty / "metrics.json").write_text("{}")
    assert not Job("b", cut, cut / "metrics.json", ("x",)).finished()
    assert Job("t", out / "teacher", out / "teacher" / "metrics.json", ("x",)).finished()
    p = sweep_cli("--config", str(root / "tiny.json"), "--out", str(out), "--list", timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    listed = [shlex.split(line) for line in p.stdout.splitlines()]
    names = [Path(c[c.index("--out") + 1]).name for c in listed if c[1] == "distill_train.py"]
    assert sorted(names) == ["unet2_baseline_s0", "unet2_baseline_s1"] and all(c[-1] == "--overwrite" for c in listed)
    assert sorted(Path(r).name for r, _ in unreadable_runs(out)) == ["unet2_baseline_s0", "unet2_baseline_s1"]


@pytest.mark.parametrize(
    "change,message",
    [
        ({"teacher_cahce": True}, "unknown key 'teacher_cahce'"),
        ({"seeds": []}, '"seeds" must be a non-empty list of integers'),
        ({"grid": {"lam": [0.9], "model": [{"arch": "unet"}, {"arch": "resnet"}]}}, "--arch 'resnet' is not an architecture"),
        ({"student": {"arch": "unte", "epochs": 1}}, "--arch 'unte' is not an architecture"),
        ({"student": {"teacher_cahce": "x"}}, "unknown key 'teacher_cahce'"),
        ({"teacher": {"base_filters": 8, "epochz": 3}}, "\"teacher\": unknown key 'epochz'"),
        ({"grid": {"lam": [0.9], "options": [{"lovasz_epochs": 10}]}}, "--lovasz-epochs must be >= 0 and < --epochs 10"),
    ],
)
def test_a_preset_that_plans_nonsense_is_refused_before_anything_runs(tmp_path, change, message):
    """A misspelt key (the preset's own, or a flag of its "student" or "teacher" section), an empty seed list, an unknown
    architecture or a setting distill_train.py would refuse: one line naming the preset and the key, exit 2, before the
    teacher is trained (no sweep dir is made). The runs are checked by the scripts' own configs and validate()."""
    from experiments.sweep import load_config

    cfg = {**load_config("quick"), **change}
    (tmp_path / "bad.json").write_text(json.dumps(cfg))
    p = sweep_cli("--config", str(tmp_path / "bad.json"), "--out", str(tmp_path / "out"), timeout=300)
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0 and p.stderr.startswith("error: sweep config")
    assert message in p.stderr and str(tmp_path / "bad.json") in p.stderr
    assert not (tmp_path / "out").exists()


def test_fidelity_scores_each_student_against_its_teacher(sweep, tmp_path, capsys):
    """experiments.fidelity on the tiny sweep's KD and ensemble students: per split, the student's and the soft target's
    scores (the val rows equal what the runs' metrics.json recorded), the agreement with the teacher's masks and
    KL(teacher || student); a baseline, a missing run dir and an existing --csv are refused in one line."""
    from experiments import fidelity
    from tests.test_bad_input import call, check

    root, _ = sweep
    runs = [root / "out" / n for n in ("unet2_from_unet4_T2_l0.9_sT_s0", "unet2_from_unet4x2_T2_l0.9_sT_s0")]
    assert fidelity.main([*map(str, runs), "--csv", str(tmp_path / "f.csv")]) == 0
    df = pd.read_csv(tmp_path / "f.csv")
    assert list(df.run) == [runs[0].name] * 2 + [runs[1].name] * 2 and list(df.split) == ["train", "val"] * 2
    for run in runs:
        m = json.loads((run / "metrics.json").read_text())
        split = json.loads((run / "split.json").read_text())
        rows = df[df.run == run.name].set_index("split")
        assert rows.loc["train", "n_images"] == len(split["train"]) and rows.loc["val", "n_images"] == m["val"]["n_images"]
        assert rows.loc["val", "student_map"] == pytest.approx(m["val"]["kaggle_map"], abs=1e-5)
        assert rows.loc["val", "student_miou"] == pytest.approx(m["val"]["mean_iou"], abs=1e-5)
        # the soft target the run scored: one teacher, then the ensemble's mean logits
        assert rows.loc["val", "teacher_map"] == pytest.approx(m["teacher"]["val"]["kaggle_map"], abs=1e-5)
        assert rows.loc["val", "teacher_miou"] == pytest.approx(m["teacher"]["val"]["mean_iou"], abs=1e-5)
    assert (df.kl > 0).all() and df.agree_map.between(0, 1).all() and df.agree_miou.between(0, 1).all()
    check(*call(fidelity.main, [str(root / "out" / "unet2_baseline_s0")], capsys), "--teacher-cache")
    base = fidelity.run_fidelity(root / "out" / "unet2_baseline_s0", str(root / "out" / "teacher" / "cache"))
    assert [r["teacher_map"] for r in base] == pytest.approx(list(df.teacher_map[:2]))  # the KD run's teacher, the same images
    check(*call(fidelity.main, [str(tmp_path / "nowhere")], capsys), "not a finished student run")
    check(*call(fidelity.main, [str(runs[0]), "--csv", str(tmp_path / "f.csv")], capsys), "exists")


def test_kl_per_pixel_golden():
    from experiments.fidelity import kl_per_pixel

    t, s = np.array([0.5, 0.9]), np.array([0.25, 0.9])
    want = np.mean([0.5 * np.log(0.5 / 0.25) + 0.5 * np.log(0.5 / 0.75), 0.0])
    assert kl_per_pixel(t, s) == pytest.approx(want, rel=1e-9) and kl_per_pixel(t, t) == pytest.approx(0.0, abs=1e-12)


def test_preset_backend_sets_every_jobs_keras_backend(tmp_path, monkeypatch):
    """ "backend": every job's command runs with KERAS_BACKEND set (and --list prints it first); an unknown backend, or a
    KERAS_BACKEND set to another one, is refused before anything is planned."""
    from common.cli import UserError
    from experiments.sweep import parse_args, plan, run_logged

    cfg = {"name": "b", "data": "synthetic", "teacher": {"base_filters": 4}, "seeds": [0], "grid": {"lam": [0, 0.9]}}
    (tmp_path / "b.json").write_text(json.dumps(cfg))
    args = parse_args(["--config", str(tmp_path / "b.json"), "--out", str(tmp_path / "out")])
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    assert all(j.env == () for j in plan(cfg, args))
    jobs = plan({**cfg, "backend": "tensorflow"}, args)
    assert [j.env for j in jobs] == [(("KERAS_BACKEND", "tensorflow"),)] * 3
    assert jobs[0].shell().startswith(f"KERAS_BACKEND=tensorflow {sys.executable} -m teacher.train ")
    code = run_logged([sys.executable, "-c", "import os; print('backend', os.environ['KERAS_BACKEND'])"], tmp_path / "log.txt", jobs[0].env)
    assert code == 0 and "backend tensorflow" in (tmp_path / "log.txt").read_text()
    with pytest.raises(UserError, match='"backend" must be one of torch, tensorflow, jax'):
        plan({**cfg, "backend": "tf"}, args)
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    with pytest.raises(UserError, match="KERAS_BACKEND=jax"):
        plan({**cfg, "backend": "tensorflow"}, args)
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    assert plan({**cfg, "backend": "tensorflow"}, args)[0].env == (("KERAS_BACKEND", "tensorflow"),)
