"""The finish of a student run: a Lovasz-hinge last phase (--lovasz-epochs), a mask threshold tuned on the
validation split (--tune-threshold) and the last epoch's scores beside the best epoch's (val_last).

Tiny synthetic runs: the default; one with --lovasz-epochs 1 --tune-threshold stopped right after
epoch 1's checkpoint (as if killed) and its --resume; a default run stopped after its last epoch's
checkpoint and its --resume.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tests.conftest import ROOT, TINY, cli

PI_PYTHON = os.environ.get("PI_PYTHON", sys.executable)

# student.train.main, but the process dies (like a SIGKILL) right after epoch STOP_EPOCH's checkpoint is written
STOP_AFTER_EPOCH = """
import os, sys
import training.loop as loop
save = loop.save_checkpoint
def save_then_die(model, run_dir, state):
    save(model, run_dir, state)
    if state["epoch"] == int(os.environ["STOP_EPOCH"]):
        os._exit(9)
loop.save_checkpoint = save_then_die
from student.train import main
main(sys.argv[1:])
"""


def train_until_killed(args, epoch: int, run_dir):
    """Run distill_train.py with `args` until epoch `epoch` is checkpointed, then die."""
    p = subprocess.run(
        [sys.executable, "-c", STOP_AFTER_EPOCH, *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "STOP_EPOCH": str(epoch)},
        timeout=600,
    )
    assert p.returncode == 9, p.stderr[-3000:]
    assert json.loads((run_dir / "checkpoint.json").read_text())["epoch"] == epoch
    assert not (run_dir / "metrics.json").exists()


@pytest.fixture(scope="module")
def finish(synth_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("finish")
    cli("distill_train.py", "--data", synth_dir, "--lam", "0", "--out", base / "default", *TINY)
    args = ["--data", synth_dir, "--lam", "0", "--out", base / "lovasz", *TINY, "--lovasz-epochs", "1", "--tune-threshold"]
    train_until_killed(args, 1, base / "lovasz")
    resumed = cli("distill_train.py", *args, "--resume")
    return {"default": base / "default", "lovasz": base / "lovasz", "resume_stdout": resumed.stdout}


def metrics(run):
    return json.loads((run / "metrics.json").read_text())


def test_last_epoch_scores_beside_the_best(finish):
    m = metrics(finish["default"])
    h = pd.read_csv(finish["default"] / "history.csv")
    last = m["val_last"]
    assert set(last) == set(m["val"]) == {"n_images", "mean_iou", "salt_iou", "kaggle_map"}
    assert len(m["val_last_kaggle_per_image"]) == len(m["val_kaggle_per_image"]) == len(m["val_ids"]) == last["n_images"]
    assert last["mean_iou"] == pytest.approx(h["val_mean_iou"].iloc[-1], abs=1e-6)  # the last epoch's own validation
    assert last["kaggle_map"] == pytest.approx(np.mean(m["val_last_kaggle_per_image"]), abs=1e-4)
    assert m["best_epoch"] == m["epochs"] == 2  # this tiny run improves in its last epoch: then last == best
    assert last == m["val"]
    assert m["val_last_kaggle_per_image"] == m["val_kaggle_per_image"]
    # the defaults: no tuned threshold, the sidecar at 0.5
    assert "val_tuned_threshold" not in m
    assert json.loads((finish["default"] / "student.keras.json").read_text())["threshold"] == 0.5


def test_last_epoch_scores_after_a_resume_with_no_epoch_left(finish, synth_dir, tmp_path):
    """Killed after the final epoch's checkpoint: --resume trains nothing and scores the checkpoint's (last) weights."""
    run = tmp_path / "run"
    args = ["--data", synth_dir, "--lam", "0", "--out", run, *TINY]
    train_until_killed(args, 2, run)
    assert "resuming after epoch 2 of 2" in cli("distill_train.py", *args, "--resume").stdout
    m, m0 = metrics(run), metrics(finish["default"])
    assert m["val_last"] == m0["val_last"] and m["val_last_kaggle_per_image"] == m0["val_last_kaggle_per_image"]
    assert m["val"] == m0["val"]


def test_lovasz_finish_notes_the_monitor_that_can_skip_it(finish):
    """A Lovasz finish judged by mean IoU can keep a pre-finish epoch: the run says so under its config, once, and
    not when the monitor is Kaggle mAP or there is no finish."""
    from student.config import DistillConfig, notes

    assert finish["resume_stdout"].count("note: --lovasz-epochs with --monitor mean_iou") == 1
    assert notes(DistillConfig(data="d", lovasz_epochs=3, epochs=15, monitor="kaggle_map")) == []
    assert notes(DistillConfig(data="d", epochs=15)) == []


def test_lovasz_last_phase_survives_resume(finish):
    h0 = pd.read_csv(finish["default"] / "history.csv")
    h = pd.read_csv(finish["lovasz"] / "history.csv")
    assert list(h["epoch"]) == [1, 2]
    assert "resuming after epoch 1" in finish["resume_stdout"]
    assert "epoch 2: the hard term is the Lovasz hinge" in finish["resume_stdout"]
    # epoch 1 (BCE phase) is the default run's, number for number; epoch 2 trains (and validates) the Lovasz hinge
    for k in ("loss", "hard", "val_loss", "val_hard", "val_mean_iou"):
        assert h[k].iloc[0] == h0[k].iloc[0], k
    assert h["hard"].iloc[1] > 1.5 * h0["hard"].iloc[1]  # hinge errors 1 - z(2y-1) vs BCE: a different scale
    assert h["val_hard"].iloc[1] != h0["val_hard"].iloc[1]
    assert h["loss"].iloc[1] == h["hard"].iloc[1]  # lam = 0: the total is the hard term
    m = metrics(finish["lovasz"])
    assert "val_last" in m and m["epochs"] == 2
    assert json.loads((finish["lovasz"] / "config.json").read_text())["lovasz_epochs"] == 1


def test_saved_student_is_unchanged_by_the_lovasz_phase(finish):
    import keras

    a = keras.saving.load_model(finish["default"] / "student.keras")
    b = keras.saving.load_model(finish["lovasz"] / "student.keras")
    assert [layer.name for layer in a.layers] == [layer.name for layer in b.layers]
    assert [w.shape for w in a.weights] == [w.shape for w in b.weights]
    assert not any("lovasz" in w.path for w in b.weights)


def test_tuned_threshold_reaches_the_sidecar_evaluate_export_and_the_pi(finish, synth_dir, tmp_path):
    from data.tgs import load_unlabelled
    from pi.runner import TFLiteSegmenter
    from training.scoring import THRESHOLD_GRID

    run = finish["lovasz"]
    m = metrics(run)
    tuned = m["val_tuned_threshold"]
    t = tuned["threshold"]
    assert set(tuned) == {"threshold", "kaggle_map", "mean_iou", "crossfit"} and t in THRESHOLD_GRID.tolist()
    cross = tuned["crossfit"]  # the pick made on half the images, scored on the other half
    assert set(cross) == {"kaggle_map", "mean_iou", "thresholds"} and all(x in THRESHOLD_GRID.tolist() for x in cross["thresholds"])
    assert tuned["kaggle_map"] >= m["val"]["kaggle_map"]  # 0.50 is on the grid; "val" stays at 0.5
    assert json.loads((run / "student.keras.json").read_text())["threshold"] == t
    # evaluate.py applies the sidecar's threshold: it reproduces the tuned scores
    out = json.loads(cli("evaluate.py", "--model", run / "student.keras", "--data", synth_dir).stdout)
    assert out["threshold"] == t
    assert out["kaggle_map"] == pytest.approx(tuned["kaggle_map"], abs=1e-6)
    assert out["mean_iou"] == pytest.approx(tuned["mean_iou"], abs=1e-6)
    # export_tflite.py copies it into the .tflite sidecar; the Pi's runner and infer.py threshold with it
    exp = tmp_path / "exp"
    cli("export_tflite.py", "--model", run / "student.keras", "--data", synth_dir, "--out", exp, "--quant", "fp32", "--calib", "16")
    model = exp / "student_fp32.tflite"
    assert json.loads((exp / "student_fp32.tflite.json").read_text())["threshold"] == t
    assert json.loads(cli("evaluate.py", "--model", model, "--data", synth_dir).stdout)["threshold"] == t
    seg = TFLiteSegmenter(model)
    assert seg.threshold == t
    images = synth_dir / "test" / "images"
    p = subprocess.run(
        [PI_PYTHON, "pi/infer.py", "--model", model, "--images", images, "--out", tmp_path / "m"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    from PIL import Image

    test = load_unlabelled(images, progress=False)
    probs = seg.predict_probs(test.images)
    for i, prob in zip(test.ids, probs):
        np.testing.assert_array_equal(np.array(Image.open(tmp_path / "m" / f"{i}.png")) > 0, prob > t)


def test_pick_threshold_best_kaggle_then_closest_to_half():
    from training.scoring import THRESHOLD_GRID, pick_threshold

    assert THRESHOLD_GRID[0] == 0.30 and THRESHOLD_GRID[-1] == 0.70 and 0.50 in THRESHOLD_GRID and len(THRESHOLD_GRID) == 21
    full, empty = np.ones((1, 101, 101), bool), np.zeros((1, 101, 101), bool)
    # salt image at p = 0.45 (found below 0.45), empty image at p = 0.35 (kept empty from 0.35): 0.36..0.44 tie -> 0.44
    probs = np.concatenate([np.full((1, 101, 101), 0.45), np.full((1, 101, 101), 0.35)])
    r = pick_threshold(probs, np.concatenate([full, empty]))
    assert r == {"threshold": 0.44, "kaggle_map": 1.0, "mean_iou": 1.0}
    # salt at 0.49, empty at 0.51: below 0.49 and above 0.51 score 1/2 each, 0.50 scores 0 -> 0.48 and 0.52 tie -> the lower
    probs = np.concatenate([np.full((1, 101, 101), 0.49), np.full((1, 101, 101), 0.51)])
    assert pick_threshold(probs, np.concatenate([full, empty]))["threshold"] == 0.48
    # every threshold scores the same -> 0.5
    assert pick_threshold(np.full((1, 101, 101), 0.9), full)["threshold"] == 0.5


def test_crossfit_threshold_scores_each_half_at_the_other_halfs_pick():
    from training.scoring import crossfit_threshold, pick_threshold

    full, empty = np.ones((1, 101, 101), bool), np.zeros((1, 101, 101), bool)
    # even positions: salt at p = 0.40 (found below 0.40: picks 0.38); odd: empty at p = 0.60 (kept empty from 0.60: picks 0.60)
    probs = np.concatenate([np.full((1, 101, 101), p) for p in (0.40, 0.60, 0.40, 0.60)])
    masks = np.concatenate([full, empty, full, empty])
    assert pick_threshold(probs, masks)["kaggle_map"] == 0.5  # picked on all four and scored on them
    r = crossfit_threshold(probs, masks)
    # odd images at 0.38 -> salt predicted on empty images; even images at 0.60 -> salt missed: nothing survives
    assert r["thresholds"] == [0.38, 0.60] and r["kaggle_map"] == 0.0 and r["mean_iou"] == 0.0
    # when both halves hold the same cases (a salt image at 0.45, an empty one at 0.35) both pick 0.44: nothing lost
    probs = np.concatenate([np.full((1, 101, 101), p) for p in (0.45, 0.45, 0.35, 0.35)])
    r = crossfit_threshold(probs, np.concatenate([full, full, empty, empty]))
    assert r == {"kaggle_map": 1.0, "mean_iou": 1.0, "thresholds": [0.44, 0.44]}


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--lovasz-epochs", "2"], "--lovasz-epochs must be >= 0 and < --epochs 2"),
        (["--lovasz-epochs", "-1"], "--lovasz-epochs must be >= 0"),
    ],
)
def test_lovasz_epochs_refused_outside_the_budget(synth_dir, tmp_path, extra, needle):
    p = cli("distill_train.py", "--data", synth_dir, "--lam", "0", "--out", tmp_path / "r", *TINY, *extra, check=False)
    assert p.returncode == 2 and needle in p.stderr and not (tmp_path / "r").exists()
