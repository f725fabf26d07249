"""A tiny end-to-end run on synthetic data: teacher -> baseline -> distilled (in-graph and cached)
-> evaluate, plus the run-dir rules (no silent overwrite, lock, resume) and CLI bad input."""

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TINY, cli

ROOT = Path(__file__).resolve().parents[1]


def test_run_dirs_hold_everything(runs):
    for name in ("teacher", "baseline", "kd", "kd_cache"):
        run = runs[name]
        model = "teacher.keras" if name == "teacher" else "student.keras"
        for f in ("config.json", "split.json", "history.csv", "metrics.json", model, model + ".json"):
            assert (run / f).exists(), f"{run}/{f}"
        assert not (run / "checkpoint.weights.h5").exists()  # finished runs keep no checkpoint
        m = json.loads((run / "metrics.json").read_text())
        for k in ("mean_iou", "salt_iou", "kaggle_map", "n_images"):
            assert k in m["val"]
        assert 0 <= m["val"]["mean_iou"] <= 1
        cfg = json.loads((run / "config.json").read_text())
        assert cfg["environment"]["backend"] and cfg["seed"] == 0
    import pandas as pd

    h = pd.read_csv(runs["kd"] / "history.csv")
    assert list(h["epoch"]) == [1, 2] and {"hard", "soft", "val_hard", "val_soft", "val_mean_iou"} <= set(h.columns)
    assert (h["soft"] > 0).all() and (pd.read_csv(runs["baseline"] / "history.csv")["soft"] == 0).all()


def test_students_share_the_teachers_split(runs):
    t = json.loads((runs["teacher"] / "split.json").read_text())
    for name in ("kd", "kd_cache"):
        assert json.loads((runs[name] / "split.json").read_text()) == t


def test_saved_student_is_the_student_alone(runs):
    import keras

    student = keras.saving.load_model(runs["kd"] / "student.keras")
    teacher = keras.saving.load_model(runs["teacher"] / "teacher.keras")
    assert len(student.outputs) == 1 and student.count_params() < teacher.count_params() / 3
    assert not any("teacher" in layer.name or layer.name == "loss" for layer in student.layers)


def test_evaluate_matches_metrics_json(runs, synth_dir, tmp_path):
    """evaluate.py gives the run's validation scores, and with --per-image the per-image counts and Kaggle scores that
    training stored in metrics.json (the same ids, the same numbers)."""
    import pandas as pd

    for name, model in (("teacher", "teacher.keras"), ("kd", "student.keras")):
        csv = tmp_path / f"{name}.csv"
        out = json.loads(cli("evaluate.py", "--model", runs[name] / model, "--data", synth_dir, "--per-image", csv).stdout)
        met = json.loads((runs[name] / "metrics.json").read_text())
        m = met["val"]
        assert out["n_images"] == m["n_images"] and out["per_image"] == str(csv)
        for k in ("mean_iou", "salt_iou", "kaggle_map"):
            assert abs(out[k] - m[k]) < 1e-4, (name, k, out[k], m[k])
        rows = pd.read_csv(csv, dtype={"id": str})
        assert list(rows.columns) == ["id", "tp", "fp", "fn", "tn", "kaggle"] and list(rows.id) == met["val_ids"]
        assert (rows[["tp", "fp", "fn", "tn"]].sum(axis=1) == 101 * 101).all()
        assert rows[["tp", "fp", "fn", "tn"]].to_numpy().tolist() == met["val_counts_per_image"]
        np.testing.assert_allclose(rows.kaggle, met["val_kaggle_per_image"], atol=1e-4)
    refused = cli("evaluate.py", "--model", runs["kd"] / "student.keras", "--data", synth_dir, "--per-image", csv, check=False)
    assert refused.returncode == 2 and refused.stderr.strip().startswith("error:") and "--overwrite" in refused.stderr


def test_teacher_keeps_its_last_epoch_beside_its_best(runs, synth_dir):
    """teacher_last.keras (with its sidecar) is the last epoch's teacher: evaluate.py scores it as metrics.json's
    val_last, while teacher.keras scores as val (the best epoch by validation mean IoU)."""
    met = json.loads((runs["teacher"] / "metrics.json").read_text())
    last = runs["teacher"] / "teacher_last.keras"
    assert json.loads((runs["teacher"] / "teacher_last.keras.json").read_text()) == json.loads(
        (runs["teacher"] / "teacher.keras.json").read_text()
    )
    out = json.loads(cli("evaluate.py", "--model", last, "--data", synth_dir).stdout)
    for k in ("mean_iou", "salt_iou", "kaggle_map"):
        assert abs(out[k] - met["val_last"][k]) < 1e-4, (k, out[k], met["val_last"][k])


def test_evaluate_pred_masks(tmp_path, synth_dir):
    from PIL import Image

    from data.tgs import load_data

    d = load_data(synth_dir, progress=False)
    for i, m in zip(d.ids, d.masks):
        Image.fromarray(m.astype(np.uint8) * 255).save(tmp_path / f"{i}.png")
    perfect = json.loads(cli("evaluate.py", "--pred-masks", tmp_path, "--data", synth_dir).stdout)
    assert perfect["n_images"] == len(d) and perfect["mean_iou"] == 1.0 and perfect["kaggle_map"] == 1.0
    Image.fromarray(np.zeros((101, 101), np.uint8)).save(tmp_path / f"{d.ids[int(np.flatnonzero(d.masks.any(axis=(1, 2)))[0])]}.png")
    worse = json.loads(cli("evaluate.py", "--pred-masks", tmp_path, "--data", synth_dir).stdout)
    assert worse["kaggle_map"] == pytest.approx(1 - 1 / len(d), abs=1e-6)


def _both_teacher_sources(runs, synth_dir, n: int):
    """The first n synthetic images prepared at 104 px, and the tiny teacher as an in-graph model and as its cache."""
    from data.pipeline import prep_images, prep_masks
    from data.tgs import load_data
    from distill.teachers import TeacherLogits
    from pi.sidecar import make_spec

    spec = make_spec(104)
    d = load_data(synth_dir, progress=False)
    x, y = prep_images(d.images[:n], spec), prep_masks(d.masks[:n], spec)
    teacher = runs["teacher"] / "teacher.keras"
    return d, x, y, TeacherLogits.from_models([teacher]), TeacherLogits.from_cache(runs["cache"], spec, [teacher])


def test_cache_and_in_graph_teacher_give_the_same_losses(runs, synth_dir):
    import keras

    from data.pipeline import Batches
    from distill.graph import build_training_graph
    from models.registry import build_model

    d, x, y, from_model, from_cache = _both_teacher_sources(runs, synth_dir, 16)
    assert from_model.label == from_cache.label == "unet4d3"  # a depth-3 teacher: its name says so
    t = from_cache.cache.take(d.ids[:16])
    student = build_model("unet", (104, 104, 1), 2, 3)
    in_graph = build_training_graph(student, from_model, temperature=2.0, lam=0.9, scale="T2")
    cached = build_training_graph(student, from_cache, temperature=2.0, lam=0.9, scale="T2")
    assert (
        cached.get_layer("teacher_soft").temperature == in_graph.get_layer("soft_teacher").get_layer("teacher_soft").temperature == 2.0
    )  # one head swap for both
    feed, _ = Batches(x, y, 16, shuffle=False, flip=True, seed=1, t=t)[0]  # flips use the cached flipped view
    a = keras.ops.convert_to_numpy(in_graph({"image": feed["image"], "mask": feed["mask"]}))
    b = keras.ops.convert_to_numpy(cached(feed))
    np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-4)  # float16 cache


def test_in_graph_teacher_trains_the_student_as_its_logits_do(runs, synth_dir):
    """Training steps with the teacher in the graph move the student exactly as the same teacher's logits fed as input.

    Regression: teacher and student come from one builder, so their variables had the same paths; on the torch
    backend the student's then fell out of the graph's torch parameters, `zero_grad` never reached them and
    each step applied the sum of all gradients so far (on real data: students predicting empty masks)."""
    import keras

    from data.pipeline import Batches
    from distill.graph import build_training_graph
    from distill.teachers import teacher_logits_model
    from models.registry import build_model
    from training.loop import IdentityLoss

    _, x, y, from_model, from_cache = _both_teacher_sources(runs, synth_dir, 48)
    graphs = []
    for source in (from_model, from_cache):
        keras.utils.set_random_seed(0)
        student = build_model("unet", (104, 104, 1), 2, 3)  # the teacher's builder: the same layer names
        g = build_training_graph(student, source, temperature=2.0, lam=0.9)
        g.compile(optimizer=keras.optimizers.AdamW(1e-2, weight_decay=1e-4), loss=IdentityLoss())
        graphs.append((g, student))
    if keras.backend.backend() == "torch":  # every trainable variable is a parameter that zero_grad reaches
        params = {id(p) for p in graphs[0][0].parameters()}
        assert all(id(v.value) in params for v in graphs[0][0].trainable_variables)
    logits = teacher_logits_model(from_model.models)
    for xb, yb in Batches(x, y, 16, shuffle=False, flip=False, seed=0):
        z = keras.ops.convert_to_numpy(logits(xb["image"]))  # float32, not the cache's float16
        graphs[0][0].train_on_batch(xb, yb)
        graphs[1][0].train_on_batch({**xb, "teacher_logits": z}, yb)
    for a, b in zip(graphs[0][1].trainable_weights, graphs[1][1].trainable_weights):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), rtol=1e-5, atol=1e-6, err_msg=a.path)


def test_training_graph_refuses_two_variables_with_one_path():
    import keras

    from distill.graph import check_unique_variables
    from models.registry import build_model

    a, b = build_model("unet", (32, 32, 1), 2, 2, name="student"), build_model("unet", (32, 32, 1), 2, 2, name="teacher")
    image = keras.Input((32, 32, 1))
    both = keras.Model(image, [a(image), b(image)])
    with pytest.raises(ValueError, match="share the path"):
        check_unique_variables(both)


def test_cache_refuses_other_teacher_and_uncovered_ids(runs, synth_dir, tmp_path):
    p = cli(
        "distill_train.py",
        "--data",
        synth_dir,
        "--teacher",
        runs["kd"] / "student.keras",
        "--teacher-cache",
        runs["cache"],
        "--out",
        tmp_path / "x",
        *TINY,
        check=False,
    )
    assert p.returncode == 2 and "other teacher" in p.stderr and "Traceback" not in p.stderr


def test_no_silent_overwrite_and_lock(runs, synth_dir):
    before = (runs["baseline"] / "metrics.json").read_bytes()
    p = cli("distill_train.py", "--data", synth_dir, "--lam", "0", "--out", runs["baseline"], *TINY, check=False)
    assert p.returncode == 2 and "--overwrite" in p.stderr
    assert (runs["baseline"] / "metrics.json").read_bytes() == before
    import os

    (runs["baseline"] / ".lock").write_text(str(os.getpid()))  # a live run holds the dir
    try:
        p = cli("distill_train.py", "--data", synth_dir, "--lam", "0", "--out", runs["baseline"], *TINY, "--overwrite", check=False)
        assert p.returncode == 2 and "in use" in p.stderr
        assert (runs["baseline"] / "metrics.json").read_bytes() == before
    finally:
        (runs["baseline"] / ".lock").unlink()


def test_black_box_cache_from_probability_maps(runs, synth_dir, tmp_path):
    """Probability maps of another program -> cache whose logits reproduce the maps; distillation runs from it."""
    from PIL import Image

    from data.tgs import load_data
    from distill.cache import TeacherCache
    from training.scoring import keras_probs

    d = load_data(synth_dir, progress=False)
    probs, _ = keras_probs(runs["teacher"] / "teacher.keras", d.images)
    maps = tmp_path / "maps"
    maps.mkdir()
    for k, i in enumerate(d.ids):  # half as 16-bit PNGs, half as .npy floats
        if k % 2:
            Image.fromarray(np.round(probs[k] * 65535).astype(np.uint16)).save(maps / f"{i}.png")
        else:
            np.save(maps / f"{i}.npy", probs[k])
    cli("-m", "teacher.cache", "--from-probabilities", maps, "--data", synth_dir, "--input-size", "104", "--out", tmp_path / "bb")
    c = TeacherCache(tmp_path / "bb")
    z = c.take(d.ids)[:, 0, 1:102, 1:102, 0].astype(np.float32)  # 101 -> 104 pads 1 before
    np.testing.assert_allclose(1 / (1 + np.exp(-z)), np.clip(probs, 1e-4, 1 - 1e-4), atol=2e-3)
    np.testing.assert_array_equal(c.take(d.ids[:3])[:, 1], c.take(d.ids[:3])[:, 0, :, ::-1])  # mirrored view
    cli(
        "distill_train.py",
        "--data",
        synth_dir,
        "--teacher-cache",
        tmp_path / "bb",
        "--out",
        tmp_path / "s",
        *TINY,
        "--split-file",
        runs["teacher"] / "split.json",
    )
    assert (tmp_path / "s" / "student.keras").exists()
    np.save(maps / f"{d.ids[0]}.npy", np.full((101, 101), 1.5))  # out of range
    p = cli(
        "-m",
        "teacher.cache",
        "--from-probabilities",
        maps,
        "--data",
        synth_dir,
        "--input-size",
        "104",
        "--out",
        tmp_path / "bad",
        check=False,
    )
    assert p.returncode == 2 and "outside [0, 1]" in p.stderr and not (tmp_path / "bad" / "logits.npy").exists()


def test_ensemble_teacher_averages_logits(runs):
    import keras

    from distill.teachers import soft_teacher
    from models.registry import logits_model

    t = keras.saving.load_model(runs["teacher"] / "teacher.keras")
    s = keras.saving.load_model(runs["kd"] / "student.keras")  # any model with `logits` and the same input
    x = np.random.default_rng(0).random((2, 104, 104, 1)).astype(np.float32)
    za, zb = (keras.ops.convert_to_numpy(logits_model(m)(x)) for m in (t, s))
    ens = keras.ops.convert_to_numpy(soft_teacher([t, s], 2.0, [3, 1])(x))
    np.testing.assert_allclose(ens, 1 / (1 + np.exp(-(0.75 * za + 0.25 * zb) / 2.0)), rtol=1e-4, atol=1e-5)


def test_teacher_metrics_hold_calibration(runs):
    cal = json.loads((runs["teacher"] / "metrics.json").read_text())["calibration"]
    assert set(cal) >= {"nll", "brier", "ece", "best_temperature", "nll_at_best"}
    assert cal["nll_at_best"] <= cal["nll"] + 1e-9 and 0 <= cal["ece"] <= 1


def test_epoch_benchmark_runs(runs, synth_dir, tmp_path):
    out = cli(
        "-m",
        "benchmarks.distill_epoch",
        "--data",
        synth_dir,
        "--teacher",
        runs["teacher"] / "teacher.keras",
        "--cache",
        runs["cache"],
        "--images",
        "32",
        "--out",
        tmp_path / "b.json",
    ).stdout
    report = json.loads((tmp_path / "b.json").read_text())
    rows = report["rows"]
    assert [r["mode"] for r in rows] == ["baseline", "kd_in_graph", "kd_cache", "kd_fitnets", "kd_at", "kd_cwd", "kd_strong"]
    assert all(r["img_per_s"] > 0 for r in rows) and rows[0]["ratio_to_baseline"] == 1.0
    assert "kd_cwd" in out and "dec1_out" in out
    # dec1_out of the teacher: 104 x 104 x its width, float16, two views per image
    sizes = report["dec1_out_feature_cache_mb"]
    assert all(v > 0 for v in sizes.values()) and sizes["21200"] > sizes[min(sizes, key=int)]


def test_tensorboard_logs_losses_and_validation_scores(synth_dir, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    cli("distill_train.py", "--data", synth_dir, "--lam", "0", "--out", out, *TINY, "--tensorboard")
    tags = {}
    for part in ("train", "validation"):
        ea = EventAccumulator(str(out / "tensorboard" / part))
        ea.Reload()
        tags[part] = set(ea.Tags()["tensors"])
    assert {"epoch_loss", "epoch_hard", "epoch_soft"} <= tags["train"]
    assert {"epoch_mean_iou", "epoch_kaggle_map"} <= tags["validation"]  # ValScore's scores reach TensorBoard
    ea = EventAccumulator(str(out / "tensorboard" / "validation"))
    ea.Reload()
    assert len(ea.Tensors("epoch_mean_iou")) == 2  # one point per epoch
