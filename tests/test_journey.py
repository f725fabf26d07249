"""The README's journey from the Kaggle download to the Pi, command by command, as a new user runs it.

A small synthetic data set in Kaggle's layout, packed as Kaggle ships it (tgs-salt-identification-challenge.zip holding
train.zip, test.zip, train.csv, depths.csv), goes through the README's commands in order, each in a subprocess, with
the cpu preset shrunk (1 epoch, 2 seeds, the same grid: baseline, KD, KD + unlabelled, ensemble KD) and every path
under tmp_path (never the repo's cache/ or runs/):

    python -m data.prepare --data kaggle/tgs-salt-identification-challenge.zip --out cache/tgs.npz --max-unlabelled N
    OMP_NUM_THREADS=1 python -m experiments.sweep --config cpu.json --shard 1/2 &  (and 2/2; wait)
    python -m experiments.sweep --config cpu.json
    python -m experiments.results runs/cpu --reference model=unet4,lam=0
    SWEEP_DIR=runs/cpu python -m experiments.notebook notebooks/compare_students.ipynb runs/cpu/compare_students.ipynb
    python export_tflite.py --model runs/cpu/unet4_from_unet8_T2_l0.9_sT_unl_s0/student.keras --data cache/tgs.npz ...
    python pi/infer.py --model exports/unet4/student_int8.tflite --images DIR/test/images --out masks --submission ...
    python pi/benchmark.py --model exports/unet4/student_int8.tflite --threads 1,2

and before any of them, the sweep on a fresh clone (no cache yet) must stop with one line that says how to make it.
The Pi programs run under PI_PYTHON (the Pi's environment, as in tests/test_pi.py), else this interpreter. Each step
asserts what a user would look at. About 4 minutes of CPU (7 minutes wall on 2 cores busy with training).
"""

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
from PIL import Image

from pi.tgs_common import rle_decode
from tests.conftest import ROOT, cli
from tests.test_data import pack_kaggle

PI_PYTHON = os.environ.get("PI_PYTHON", sys.executable)
ONE_CORE = {"OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
N_TRAIN, N_TEST, N_UNLABELLED = 64, 24, 16  # --max-unlabelled below the test set: the cap is exercised
SHAPE = {"epochs": 1, "batch_size": 16, "input_size": 112}  # 112: the least multiple of 2**4 that 101 pads to
EXPORTED = "unet4_from_unet8_T2_l0.9_sT_unl_s0"  # the README's export: the cpu preset's KD + unlabelled student
STUDENTS = [
    f"unet4_{name}_s{seed}"
    for seed in (0, 1)
    for name in ("baseline", "from_unet8_T2_l0.9_sT", "from_unet8_T2_l0.9_sT_unl", "from_unet8x2_T2_l0.9_sT")
]


def one_line_error(p) -> str:
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stdout[-2000:] + p.stderr[-2000:]
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    return lines[0]


def pi(*args):
    return subprocess.run(
        [PI_PYTHON, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, **ONE_CORE}
    )


@pytest.mark.parametrize("preset", ["cpu", "gpu"])
def test_fresh_clone_sweep_says_how_to_make_the_cache(preset, tmp_path):
    """A preset reads cache/tgs.npz, which a fresh clone lacks: one line naming the command that makes it, before any
    run dir is made or anything trains."""
    (tmp_path / "experiments" / "configs").mkdir(parents=True)
    shutil.copy(ROOT / "experiments" / "configs" / f"{preset}.py", tmp_path / "experiments" / "configs")
    config = f"experiments/configs/{preset}.json"  # the older spelling finds the .py preset beside it
    p = subprocess.run(
        [sys.executable, "-m", "experiments.sweep", "--config", config],
        cwd=tmp_path,  # a checkout without cache/
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **ONE_CORE, "PYTHONPATH": str(ROOT)},
    )
    assert one_line_error(p) == (
        f"error: {config} reads cache/tgs.npz, which does not exist: make it with python -m data.prepare --data "
        'KAGGLE_ZIP_OR_DIR --out cache/tgs.npz --max-unlabelled 1000 (README, "Get the data"), or pass --data'
    )
    assert p.stdout == "" and sorted(x.name for x in tmp_path.iterdir()) == ["experiments"]  # nothing planned, made or trained


class Steps:
    """Prints how long each step took (shown with -s, or on a failure): where the journey's minutes go."""

    def __init__(self):
        self.t0 = self.t = time.perf_counter()

    def __call__(self, name):
        now = time.perf_counter()
        print(f"journey: {name} done in {now - self.t:.0f} s ({now - self.t0:.0f} s in all)", flush=True)
        self.t = now


def test_readme_journey_from_the_kaggle_zip_to_the_pi(tmp_path):
    from data.synthetic import generate
    from data.tgs import cache_meta, load_npz

    step = Steps()

    # ---- the download, as `kaggle competitions download -c tgs-salt-identification-challenge -p kaggle` leaves it
    generate(tmp_path / "made", n_train=N_TRAIN, n_test=N_TEST, seed=0)
    (tmp_path / "kaggle").mkdir()
    download = pack_kaggle(tmp_path / "made", tmp_path / "kaggle" / "tgs-salt-identification-challenge.zip")
    shutil.rmtree(tmp_path / "made")  # the user has the zip alone
    unzipped = tmp_path / "DIR"  # what unzipping gives, for pi/infer.py's --images DIR/test/images
    with zipfile.ZipFile(download) as z:
        z.extractall(unzipped)
    with zipfile.ZipFile(unzipped / "test.zip") as z:
        z.extractall(unzipped / "test")
    test_ids = sorted(p.stem for p in (unzipped / "test" / "images").glob("*.png"))
    assert len(test_ids) == N_TEST

    step("download")

    # ---- python -m data.prepare --data kaggle/tgs-salt-identification-challenge.zip --out cache/tgs.npz --max-unlabelled N
    cache = tmp_path / "cache" / "tgs.npz"
    p = cli("-m", "data.prepare", "--data", download, "--out", cache, "--max-unlabelled", N_UNLABELLED, env=ONE_CORE)
    assert re.fullmatch(
        rf"cached {N_TRAIN} labelled \+ {N_UNLABELLED} of {N_TEST} unlabelled images \(the first {N_UNLABELLED} by id\) to {re.escape(str(cache))} "
        r"\(\d+\.\d MB\); loads in \d+\.\d\d s",
        p.stdout.strip(),
    ), p.stdout
    labelled, unlabelled = load_npz(cache), load_npz(cache, "test")
    assert len(labelled) == N_TRAIN and labelled.masks.any() and len(unlabelled) == N_UNLABELLED
    assert set(unlabelled.ids) < set(test_ids) and not set(unlabelled.ids) & set(labelled.ids)
    meta = cache_meta(cache)
    assert (meta["form"], meta["labelled"], meta["unlabelled"], meta["unlabelled_total"], meta["seed"]) == (
        "zip",
        N_TRAIN,
        N_UNLABELLED,
        N_TEST,
        None,  # no --seed: the first N test ids by sorted id
    )
    assert sorted(unlabelled.ids) == sorted(test_ids)[:N_UNLABELLED]

    step("data.prepare")

    # ---- the cpu preset, shrunk: 1 epoch, seeds 0 and 1, the same grid and widths (so the README's run names)
    from experiments.sweep import load_config

    cfg = load_config(ROOT / "experiments" / "configs" / "cpu.py")
    cfg = {
        **cfg,
        "data": str(cache),
        "teacher": {**cfg["teacher"], **SHAPE},
        "student": {**cfg["student"], **SHAPE},
        "seeds": [0, 1],
    }
    preset, sweep = tmp_path / "cpu.json", tmp_path / "runs" / "cpu"
    preset.write_text(json.dumps(cfg, indent=2))
    command = [sys.executable, "-m", "experiments.sweep", "--config", str(preset), "--out", str(sweep)]

    # ---- OMP_NUM_THREADS=1 python -m experiments.sweep --config ... --shard 1/2 & (and --shard 2/2); wait
    env = {**os.environ, **ONE_CORE, "TF_CPP_MIN_LOG_LEVEL": "3"}
    shards = [
        subprocess.Popen([*command, "--shard", f"{k}/2"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for k in (1, 2)
    ]
    outs = [s.communicate(timeout=1200) for s in shards]
    assert all(s.returncode == 0 for s in shards), "\n".join(o[0][-3000:] + o[1][-3000:] for o in outs)
    for name in STUDENTS:  # every run of the grid, finished by one shard or the other
        assert (sweep / name / "metrics.json").exists(), name
    for name in ("teacher", "teacher_s1"):
        assert (sweep / name / "teacher.keras").exists() and (sweep / name / "metrics.json").exists()

    step("sweep shards")

    # ---- python -m experiments.sweep --config ...: nothing left, prints the table
    p = cli(*command[1:], env=ONE_CORE)
    assert "0 runs to go" in p.stdout and "FAILED" not in p.stdout, p.stdout
    assert (sweep / "results.csv").exists() and (sweep / "summary.csv").exists()
    assert "unet4" in p.stdout and "baseline" in p.stdout, p.stdout

    step("sweep")

    # ---- python -m experiments.results runs/cpu --reference model=unet4,lam=0
    p = cli("-m", "experiments.results", sweep, "--reference", "model=unet4,lam=0", env=ONE_CORE)
    assert "unet4" in p.stdout and "baseline" in p.stdout, p.stdout

    step("experiments.results")

    # ---- SWEEP_DIR=runs/cpu python -m experiments.notebook notebooks/compare_students.ipynb runs/cpu/compare_students.ipynb
    executed = sweep / "compare_students.ipynb"
    p = cli(
        "-m", "experiments.notebook", ROOT / "notebooks" / "compare_students.ipynb", executed, env={**ONE_CORE, "SWEEP_DIR": str(sweep)}
    )
    figures = re.search(r"\((\d+) figures?\)", p.stdout)
    assert executed.exists() and figures and int(figures.group(1)) > 0, p.stdout

    step("notebook")

    # ---- python export_tflite.py --model runs/cpu/<KD + unlabelled student>/student.keras --data cache/tgs.npz --out exports/unet4
    exports = tmp_path / "exports" / "unet4"
    p = cli(
        "export_tflite.py",
        "--model",
        sweep / EXPORTED / "student.keras",
        "--data",
        cache,
        "--out",
        exports,
        "--quant",
        "fp32,int8",
        env=ONE_CORE,
    )
    model = exports / "student_int8.tflite"
    for fmt in ("fp32", "int8"):
        side = json.loads((exports / f"student_{fmt}.tflite.json").read_text())
        assert (exports / f"student_{fmt}.tflite").stat().st_size > 0 and side["quant"] == fmt
    assert "int8" in p.stdout and (exports / "export.json").exists(), p.stdout

    step("export_tflite")

    # ---- python pi/infer.py --model exports/unet4/student_int8.tflite --images DIR/test/images --out masks --submission submission.csv
    masks, submission = tmp_path / "masks", tmp_path / "submission.csv"
    p = pi("pi/infer.py", "--model", model, "--images", unzipped / "test" / "images", "--out", masks, "--submission", submission)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert sorted(m.stem for m in masks.glob("*.png")) == test_ids  # a mask for every test image
    with open(submission, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id", "rle_mask"] and sorted(r[0] for r in rows[1:]) == test_ids and len(rows) == N_TEST + 1
    for i, rle in rows[1:]:
        mask = np.array(Image.open(masks / f"{i}.png"))
        assert mask.shape == (101, 101) and set(np.unique(mask)) <= {0, 255}
        np.testing.assert_array_equal(rle_decode(rle), mask > 0)

    step("pi/infer.py")

    # ---- python pi/benchmark.py --model exports/unet4/student_int8.tflite --threads 1,2
    p = pi("pi/benchmark.py", "--model", model, "--threads", "1,2")
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    rows = [line.split() for line in p.stdout.splitlines() if line.startswith(model.name)]
    assert [r[3] for r in rows] == ["1", "2"] and all(float(r[4]) > 0 for r in rows), p.stdout
    step("pi/benchmark.py")
