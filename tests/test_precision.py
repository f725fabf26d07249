"""--precision mixed_bfloat16: the loss layer stays float32 and matches a float32 graph; a mixed run trains
and saves a float32 student."""

import json

import keras
import numpy as np

from distill.graph import build_training_graph
from distill.teachers import TeacherLogits
from models.registry import build_model
from tests.conftest import TINY, cli

# bfloat16 keeps 8 bits of mantissa: activations carry ~0.4% relative error, the mean loss far less
TOLERANCE = 2e-2


def _graph(policy: str, weights=None):
    keras.config.set_dtype_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        student = build_model("unet", (32, 32, 1), 2, 2, name="s")
        with keras.name_scope("teacher0"):  # as distill.teachers.load_teacher: its own variable paths
            teacher = build_model("unet", (32, 32, 1), 2, 2, name="t")
        if weights is not None:
            student.set_weights(weights[0])
            teacher.set_weights(weights[1])
        graph = build_training_graph(student, TeacherLogits("t", models=[teacher]), temperature=2.0, lam=0.9)
        return graph, (student.get_weights(), teacher.get_weights())
    finally:
        keras.config.set_dtype_policy("float32")


def test_loss_layer_is_float32_and_matches_float32_graph():
    g32, weights = _graph("float32")
    gmix, _ = _graph("mixed_bfloat16", weights)
    assert gmix.get_layer("loss").compute_dtype == "float32" and gmix.get_layer("s_logits").compute_dtype == "bfloat16"
    x = np.random.default_rng(0).random((4, 32, 32, 1)).astype(np.float32)
    feed = {"image": x, "mask": (x > 0.5).astype(np.float32)}
    a = keras.ops.convert_to_numpy(g32(feed))
    b = keras.ops.convert_to_numpy(gmix(feed))
    assert b.dtype == np.float32
    np.testing.assert_allclose(b, a, rtol=TOLERANCE)


def test_mixed_run_trains_and_saves_a_float32_student(synth_dir, tmp_path):
    out = tmp_path / "mixed"
    cli("distill_train.py", "--data", synth_dir, "--lam", "0", "--out", out, *TINY, "--precision", "mixed_bfloat16")
    h = np.genfromtxt(out / "history.csv", delimiter=",", names=True)
    assert np.isfinite(h["loss"]).all()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["precision"] == "mixed_bfloat16" and cfg["environment"]["devices"]["kind"] == "cpu"
    model = keras.saving.load_model(out / "student.keras")
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}


def test_run_names_and_sweep_say_bfloat16(tmp_path):
    """A bfloat16 run is told apart by name (_bf16) and label (+bf16); the sweep's "options" set it, baselines keep it,
    and a float32 run keeps the name of earlier versions (so the cpu preset's runs are shared, not trained again)."""
    from experiments.sweep import student_runs
    from training.naming import RunSpec

    kd = {"base_filters": 4, "lam": 0.9, "temperature": 2.0, "scale": "T", "seed": 0, "unlabelled": True}
    assert RunSpec.from_config({**kd, "precision": "float32"}, "unet8").name == "unet4_from_unet8_T2_l0.9_sT_unl_s0"
    mixed = RunSpec.from_config({**kd, "precision": "mixed_bfloat16", "lovasz_epochs": 3}, "unet8")
    assert mixed.name == "unet4_from_unet8_T2_l0.9_sT_unl_lov3_bf16_s0" and mixed.label.endswith("+unl +lovasz3 +bf16")
    base = RunSpec.from_config({**kd, "lam": 0, "precision": "mixed_bfloat16"})
    assert base.name == "unet4_baseline_bf16_s0" and base.label == "unet4 baseline +bf16"
    cfg = {
        "name": "a",
        "data": "synthetic",
        "teacher": {"base_filters": 4},
        "teacher_cache": True,
        "seeds": [0],
        "grid": {"lam": [0, 0.9], "unlabelled": [True], "options": [{}, {"precision": "mixed_bfloat16"}]},
    }
    runs = student_runs(cfg, "unet4")
    assert [r.name for r in runs] == [
        "unet4_baseline_s0",
        "unet4_baseline_bf16_s0",
        "unet4_from_unet4_T2_l0.9_sT_unl_s0",
        "unet4_from_unet4_T2_l0.9_sT_unl_bf16_s0",
    ]
    assert [r.config.precision for r in runs] == ["float32", "mixed_bfloat16"] * 2
