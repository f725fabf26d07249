"""Feature distillation (--feature-loss fitnets | at | cwd): the loss layers against numpy (the papers' code), the
training graph, run names, bad input, and a 1-epoch run whose saved student is exactly the student."""

import argparse
import dataclasses
import json

import keras
import numpy as np
import pytest
from keras import ops

from distill.graph import build_training_graph
from distill.losses import (
    FEATURE_LOSSES,
    AddFeatureTerm,
    AttentionTransferLoss,
    ChannelWiseLoss,
    DistillationLoss,
    FitNetsLoss,
    feature_loss_layer,
)
from distill.teachers import TeacherLogits
from models.registry import build_model, features_model, stage_names
from tests.test_bad_input import TINY, call, check, env  # noqa: F401  (env: the fixture of tiny teachers and data)
from tests.test_losses import _grad
from training.naming import DEFAULT_FEATURE_LAYERS, RunSpec, feature_pairs

# ---------------------------------------------------------------- numpy references


def np_resize(x, h, w):
    """Bilinear resize of (B, H, W, C), half-pixel centres, no antialiasing (tf.image.resize / F.interpolate align_corners=False)."""

    def taps(n_out, n_in):
        src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        i0 = np.floor(src).astype(int)
        return i0, np.minimum(i0 + 1, n_in - 1), src - i0

    r0, r1, wr = taps(h, x.shape[1])
    c0, c1, wc = taps(w, x.shape[2])
    x = x[:, r0] * (1 - wr)[None, :, None, None] + x[:, r1] * wr[None, :, None, None]
    return x[:, :, c0] * (1 - wc)[None, None, :, None] + x[:, :, c1] * wc[None, None, :, None]


def np_adapt(layer, s, t):
    """The layer's 1x1 adapter in numpy, then the resize to the teacher's size."""
    k, b = (ops.convert_to_numpy(v).astype(np.float64) for v in (layer.adapter.kernel, layer.adapter.bias))
    a = s.astype(np.float64) @ k[0, 0] + b
    return np_resize(a, *t.shape[1:3]) if a.shape[1:3] != t.shape[1:3] else a


def np_fitnets(layer, s, t):
    return ((np_adapt(layer, s, t) - t) ** 2).mean(axis=(1, 2, 3))


def np_at_per_image(s, t, p=2.0):
    a_s, a_t = (np.abs(s.astype(np.float64)) ** p).mean(-1), (np.abs(t.astype(np.float64)) ** p).mean(-1)
    if a_s.shape != a_t.shape:
        a_s = np_resize(a_s[..., None], *a_t.shape[1:3])[..., 0]
    q_s, q_t = (a.reshape(len(a), -1) for a in (a_s, a_t))
    q_s, q_t = (q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12) for q in (q_s, q_t))
    return ((q_s - q_t) ** 2).mean(axis=1)


def np_at_loss_paper(x, y, p=2):
    """Zagoruyko & Komodakis' `at_loss` (attention-transfer/utils.py) on NCHW arrays: (at(x) - at(y)).pow(2).mean()."""

    def at(f):
        a = (f.astype(np.float64) ** p).mean(1).reshape(len(f), -1)
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)

    return ((at(x) - at(y)) ** 2).mean()


def np_log_softmax(x, axis):
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


def np_cwd_mmrazor(s_nchw, t_nchw, tau=4.0):
    """mmrazor's ChannelWiseDivergence.forward (Shu et al.'s code) on NCHW arrays, for the whole batch."""
    n, c, h, w = s_nchw.shape
    s, t = s_nchw.reshape(-1, w * h) / tau, t_nchw.reshape(-1, w * h) / tau
    p_t = np.exp(np_log_softmax(t, 1))
    return np.sum(p_t * np_log_softmax(t, 1) - p_t * np_log_softmax(s, 1)) * tau**2 / (c * n)


def features(rng, b, hw_s, c_s, hw_t, c_t):
    s = rng.normal(0, 1.5, (b, hw_s, hw_s, c_s)).astype(np.float32)
    t = np.maximum(rng.normal(0, 1.5, (b, hw_t, hw_t, c_t)), 0).astype(np.float32)  # teacher stages end in a ReLU
    return s, t


SIZES = [(8, 3, 8, 5), (4, 3, 8, 5), (8, 6, 4, 6)]  # (student h=w, c, teacher h=w, c): same size, upsampled, downsampled


# ---------------------------------------------------------------- golden values


@pytest.mark.parametrize("sizes", SIZES)
def test_fitnets_matches_numpy(sizes):
    s, t = features(np.random.default_rng(0), 3, *sizes)
    layer = FitNetsLoss()
    got = ops.convert_to_numpy(layer([s, t]))
    assert got.shape == (3,) and layer.adapter.kernel.shape == (1, 1, sizes[1], sizes[3])
    np.testing.assert_allclose(got, np_fitnets(layer, s, t), rtol=1e-5)
    assert np.all(got > 0.1)


@pytest.mark.parametrize("sizes", SIZES)
def test_attention_transfer_matches_numpy_and_the_papers_at_loss(sizes):
    s, t = features(np.random.default_rng(1), 3, *sizes)
    got = ops.convert_to_numpy(AttentionTransferLoss()([s, t]))
    want = np_at_per_image(s, t)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-9)
    assert np.all(want > 1e-4)
    if sizes[0] == sizes[2]:  # Keras' mean over the batch is the paper's at_loss (NCHW, no resize there)
        np.testing.assert_allclose(got.mean(), np_at_loss_paper(s.transpose(0, 3, 1, 2), t.transpose(0, 3, 1, 2)), rtol=1e-5)


@pytest.mark.parametrize("sizes", SIZES)
def test_channel_wise_matches_numpy_and_the_authors_code(sizes):
    s, t = features(np.random.default_rng(2), 3, *sizes)
    layer = ChannelWiseLoss()
    assert layer.tau == 4.0  # the paper's default
    got = ops.convert_to_numpy(layer([s, t]))
    a = np_adapt(layer, s, t)
    # per image: tau^2 / C * sum_c KL(softmax(t_c / tau) || softmax(a_c / tau)) over the positions
    n, c = t.shape[1] * t.shape[2], t.shape[3]
    lp_s, lp_t = np_log_softmax(a.reshape(3, n, c) / 4.0, 1), np_log_softmax(t.reshape(3, n, c).astype(np.float64) / 4.0, 1)
    want = (np.exp(lp_t) * (lp_t - lp_s)).sum(axis=(1, 2)) * 16.0 / c
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert np.all(want > 1e-3)
    # the batch mean is mmrazor's sum * tau^2 / (C * N), on NCHW
    np.testing.assert_allclose(got.mean(), np_cwd_mmrazor(a.transpose(0, 3, 1, 2), t.transpose(0, 3, 1, 2)), rtol=1e-5)


def identity_adapter(layer, c):
    layer.adapter.kernel.assign(np.eye(c, dtype=np.float32)[None, None])
    layer.adapter.bias.assign(np.zeros(c, np.float32))


@pytest.mark.parametrize("kind", FEATURE_LOSSES)
def test_zero_when_the_student_feature_is_the_teachers_and_finite_gradients(kind):
    rng = np.random.default_rng(3)
    s, t = features(rng, 2, 8, 4, 8, 4)
    layer = feature_loss_layer(kind, "f")
    layer([t, t])  # builds the adapter
    if kind != "at":
        identity_adapter(layer, 4)
    same = ops.convert_to_numpy(layer([t, t]))
    np.testing.assert_allclose(same, 0.0, atol=1e-6)
    assert np.abs(_grad(lambda x: layer([x, t]), t)).max() < 1e-5  # a minimum: zero gradient
    g = _grad(lambda x: layer([x, t]), s)
    assert np.all(np.isfinite(g)) and np.abs(g).max() > 1e-6
    if kind == "at":  # any positive multiple of the teacher's feature has the same attention map
        np.testing.assert_allclose(ops.convert_to_numpy(layer([3.0 * t, t])), 0.0, atol=1e-7)
    g0 = _grad(lambda x: layer([x, t]), np.zeros_like(s))  # all-zero student features: finite (AT's norm has its eps)
    assert np.all(np.isfinite(g0))


def test_bad_arguments_and_the_feature_term():
    with pytest.raises(ValueError):
        ChannelWiseLoss(tau=0.0)
    with pytest.raises(ValueError):
        AttentionTransferLoss(p=-1.0)
    with pytest.raises(ValueError):
        AddFeatureTerm(-1.0)
    with pytest.raises(ValueError):
        feature_loss_layer("kd", "f")
    parts = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], np.float32)
    out = ops.convert_to_numpy(AddFeatureTerm(0.5)([parts, np.array([1.0, 2.0], np.float32), np.array([0.5, 0.5], np.float32)]))
    np.testing.assert_allclose(out, [[1.75, 2, 3, 1.5], [5.25, 5, 6, 2.5]])


def test_every_feature_loss_choice_has_a_layer():
    """common.choices.FEATURE_LOSSES (what --feature-loss and the sweep accept) each build a loss layer; others are refused."""
    from distill.losses import feature_loss_layer

    assert {type(feature_loss_layer(k, f"f_{k}")).__name__ for k in FEATURE_LOSSES} == {
        "FitNetsLoss",
        "AttentionTransferLoss",
        "ChannelWiseLoss",
    }
    with pytest.raises(ValueError, match="fitnets, at, cwd"):
        feature_loss_layer("kd", "f")


# ---------------------------------------------------------------- the training graph


def tiny_models():
    keras.utils.set_random_seed(0)
    student = build_model("unet", (32, 32, 1), 2, 2, name="unet2d2")
    with keras.name_scope("teacher0"):  # as distill.teachers.load_teacher: its own variable paths
        teacher = build_model("unet", (32, 32, 1), 4, 2, name="unet4d2")
    return student, teacher


@pytest.mark.parametrize("kind", FEATURE_LOSSES)
def test_graph_adds_the_weighted_feature_term_and_keeps_the_student(kind, tmp_path):
    student, teacher = tiny_models()
    n_params, names = student.count_params(), [layer.name for layer in student.layers]
    source = TeacherLogits("unet4d2", models=[teacher])
    pairs = [("dec1_out", "dec1_out"), ("mid_out", "dec1_out")]  # 16x16 and 8x8 -> 16x16
    graph = build_training_graph(student, source, 2.0, 0.7, "T", feature_loss=kind, feature_weight=0.5, feature_layers=pairs)
    plain = build_training_graph(student, source, 2.0, 0.7, "T")
    rng = np.random.default_rng(0)
    feed = {"image": rng.random((2, 32, 32, 1)).astype(np.float32), "mask": (rng.random((2, 32, 32, 1)) > 0.5).astype(np.float32)}
    out, ref = ops.convert_to_numpy(graph(feed)), ops.convert_to_numpy(plain(feed))
    assert out.shape == (2, 4)
    # the feature column from the two models' named stages, through the graph's own loss layers
    _, s_dec1, s_mid = features_model(student, ["dec1_out", "mid_out"])(feed["image"])
    _, t_dec1 = features_model(teacher, ["dec1_out"])(feed["image"])
    feat = sum(ops.convert_to_numpy(graph.get_layer(f"feature_loss{i}")([s, t_dec1])) for i, s in enumerate((s_dec1, s_mid)))
    np.testing.assert_allclose(out[:, 3], feat, rtol=1e-5)
    assert np.all(out[:, 3] > 0)
    np.testing.assert_allclose(out[:, 1:3], ref[:, 1:3], rtol=1e-5)  # hard and soft as without feature KD
    np.testing.assert_allclose(out[:, 0], ref[:, 0] + 0.5 * out[:, 3], rtol=1e-5)
    # the adapters (FitNets, CWD) are trainable weights of the graph only; the teacher is frozen
    extra = {id(v) for v in graph.trainable_weights} - {id(v) for v in student.trainable_weights}
    assert len(extra) == (0 if kind == "at" else 4)
    assert student.count_params() == n_params and [layer.name for layer in student.layers] == names
    # .keras round trip (safe mode) and the checkpoint's weights file restore the adapters
    graph.save(tmp_path / "g.keras")
    np.testing.assert_allclose(ops.convert_to_numpy(keras.saving.load_model(tmp_path / "g.keras")(feed)), out, rtol=1e-5)
    if kind != "at":
        graph.save_weights(tmp_path / "g.weights.h5")
        kernel = graph.get_layer("feature_loss0").adapter.kernel
        before = ops.convert_to_numpy(kernel)
        kernel.assign(np.zeros_like(before))
        graph.load_weights(tmp_path / "g.weights.h5")
        np.testing.assert_array_equal(ops.convert_to_numpy(kernel), before)


def test_graph_refuses_unknown_layers_and_a_cache():
    from common.cli import UserError

    student, teacher = tiny_models()
    source = TeacherLogits("unet4d2", models=[teacher])
    with pytest.raises(UserError, match="student unet2d2 has no stage output 'dec5_out'; choose among enc0_out, enc1_out, mid_out"):
        build_training_graph(student, source, feature_loss="at", feature_layers=[("dec5_out", "dec1_out")])
    with pytest.raises(UserError, match="teacher unet4d2 has no stage output 'logits'"):
        build_training_graph(student, source, feature_loss="at", feature_layers=[("dec1_out", "logits")])
    with pytest.raises(UserError, match="not --teacher-cache"):
        build_training_graph(student, TeacherLogits("c", cache=object()), feature_loss="at", feature_layers=[("dec1_out", "dec1_out")])
    assert set(stage_names(student)) == {"enc0_out", "enc1_out", "mid_out", "dec1_out", "dec0_out"}


# ---------------------------------------------------------------- names, config, resume


def test_run_names_and_labels():
    kd = dict(model="unet4", teacher="unet8", lam=0.9, temperature=2.0, scale="T", seed=1)
    assert RunSpec(**kd).name == "unet4_from_unet8_T2_l0.9_sT_s1"  # off by default: unchanged
    assert RunSpec(**kd, feature_loss="fitnets").name == "unet4_from_unet8_T2_l0.9_sT_fitnets1_s1"
    assert RunSpec(**kd, feature_loss="fitnets").label == "unet4 KD T=2 lam=0.9 s=T +fitnets w=1"
    assert RunSpec(**kd, feature_loss="cwd", feature_weight=0.5).name == "unet4_from_unet8_T2_l0.9_sT_cwd0.5_s1"
    at = RunSpec(**kd, feature_loss="at", feature_weight=500, feature_layers=("dec2_out", "mid_out:dec1_out"))
    assert at.name == "unet4_from_unet8_T2_l0.9_sT_at500_dec2+mid-dec1_s1"
    assert at.label == "unet4 KD T=2 lam=0.9 s=T +at w=500 [dec2_out, mid_out:dec1_out]"
    assert RunSpec(**kd, feature_loss="at", feature_layers=("dec1_out",)).name.endswith("_at1_s1")  # = the default pair
    cfg = {"base_filters": 4, "lam": 0.0, "teacher": ["t.keras"], "seed": 0, "feature_loss": "fitnets", "feature_weight": 2.0}
    assert RunSpec.from_config(cfg, "unet8").name == "unet4_from_unet8_T2_l0_sT_fitnets2_s0"  # feature KD alone: not a baseline
    assert RunSpec.from_config({**cfg, "feature_loss": ""}, "unet8").name == "unet4_baseline_s0"
    assert feature_pairs(DEFAULT_FEATURE_LAYERS) == [("dec1_out", "dec1_out")] and feature_pairs(["a:b", "c"]) == [("a", "b"), ("c", "c")]
    for bad in ("a:b:c", ":b", "a:"):
        with pytest.raises(ValueError):
            feature_pairs([bad])


def test_sweep_options_name_and_pass_the_flags(tmp_path):
    from common.cli import UserError
    from experiments.sweep import plan, student_runs

    cfg = {
        "name": "f",
        "data": "d",
        "teacher": {"base_filters": 8},
        "teacher_cache": True,
        "student": {"base_filters": 4},
        "grid": {"lam": [0, 0.9], "options": [{}, {"feature_loss": "cwd", "feature_weight": 0.5}]},
        "seeds": [0],
    }
    names = sorted(r.name for r in student_runs(cfg, "unet8"))
    assert names == ["unet4_baseline_s0", "unet4_from_unet8_T2_l0.9_sT_cwd0.5_s0", "unet4_from_unet8_T2_l0.9_sT_s0"]
    args = argparse.Namespace(data="d", out=str(tmp_path / "sweep"), teacher="", seeds=None, shard="")
    cmds = {j.name: j.cmd for j in plan(cfg, args) if j.kind == "student"}
    cwd = cmds["unet4_from_unet8_T2_l0.9_sT_cwd0.5_s0"]
    assert cwd[cwd.index("--feature-loss") + 1] == "cwd" and cwd[cwd.index("--feature-weight") + 1] == "0.5"
    assert "--teacher-cache" not in cwd and "--teacher-cache" in cmds["unet4_from_unet8_T2_l0.9_sT_s0"]  # features need the model
    for opts in ({"feature_loss": "kd"}, {"feature_weight": 2}):
        with pytest.raises(UserError):
            student_runs({**cfg, "grid": {"lam": [0.9], "options": [opts]}}, "unet8")
    with pytest.raises(UserError, match="blackbox"):
        student_runs({**cfg, "grid": {"lam": [0.9], "blackbox": ["mirrored"], "options": [{"feature_loss": "at"}]}}, "unet8")


def test_resume_of_a_run_from_before_feature_kd(tmp_path):
    """start_run's --resume check: a config.json without the feature fields holds their defaults."""
    from common.cli import UserError
    from common.io import release_lock
    from student.config import DistillConfig
    from training.runs import start_run

    cfg = DistillConfig(data="d", lam=0.0)
    old = {k: v for k, v in json.loads(json.dumps(dataclasses.asdict(cfg))).items() if not k.startswith("feature_")}
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps(old))
    opts = argparse.Namespace(overwrite=False, resume=True)
    start_run(cfg, tmp_path / "run", opts)
    release_lock(tmp_path / "run")
    (tmp_path / "run" / "config.json").write_text(json.dumps(old))
    with pytest.raises(UserError, match="different config .*: feature_loss, teacher"):
        start_run(dataclasses.replace(cfg, feature_loss="at", teacher=("t.keras",)), tmp_path / "run", opts)
    release_lock(tmp_path / "run")


def test_bad_feature_flags(env, capsys):  # noqa: F811
    from distill_train import main

    g, r = str(env["root"] / "good"), env["root"]
    t = ["--teacher", str(r / "teacher104.keras")]
    cases = [
        ([*t, "--feature-loss", "fitnets", "--feature-layers", "dec5_out"], "has no stage output 'dec5_out'; choose among enc0_out"),
        (
            [*t, "--feature-loss", "at", "--feature-layers", "dec1_out:head_out"],
            "the teacher unet has no stage output 'head_out'; choose among enc0_out",
        ),
        ([*t, "--feature-loss", "cwd", "--feature-layers", "a:b:c"], "STUDENT_LAYER:TEACHER_LAYER"),
        ([*t, "--feature-loss", "hints"], "--feature-loss 'hints' must be one of fitnets, at, cwd"),
        ([*t, "--feature-loss", "at", "--feature-weight", "-1"], "--feature-weight"),
        ([*t, "--feature-loss", "at", "--feature-weight", "nan"], "--feature-weight"),
        ([*t, "--feature-loss", "at", "--teacher-cache", str(r / "empty")], "not --teacher-cache"),
        (["--lam", "0", "--feature-loss", "at"], "--feature-loss needs a --teacher"),
        (["--teacher", str(r / "teacher104.keras"), str(r / "teacher104.keras"), "--feature-loss", "at"], "not an ensemble"),
    ]
    for k, (argv, needle) in enumerate(cases):
        out = r / f"feature_out_{k}"
        code, err = call(main, ["--data", g, *argv, "--out", str(out), *TINY], capsys)
        check(code, err, needle)
        assert not out.exists(), argv


# ---------------------------------------------------------------- a run: the saved student is exactly the student


def test_one_epoch_with_fitnets_saves_only_the_student(synth_dir, tmp_path, capsys):
    import pandas as pd

    from distill_train import main

    keras.utils.set_random_seed(0)
    build_model("unet", (104, 104, 1), 4, 3, name="unet4d3").save(tmp_path / "teacher.keras")
    tiny = ["--epochs", "1", "--batch-size", "8", "--max-train", "16", "--base-filters", "2", "--depth", "3", "--input-size", "104"]
    out = tmp_path / "run"
    argv = ["--data", str(synth_dir), "--teacher", str(tmp_path / "teacher.keras"), "--out", str(out), *tiny]
    assert main([*argv, "--feature-loss", "fitnets", "--feature-weight", "0.5"]) == 0
    baseline = build_model("unet", (104, 104, 1), 2, 3, name="unet2d3")
    saved = keras.saving.load_model(out / "student.keras", safe_mode=True)
    assert saved.count_params() == baseline.count_params()
    assert [layer.name for layer in saved.layers] == [layer.name for layer in baseline.layers]
    assert not any(isinstance(layer, (FitNetsLoss, DistillationLoss)) for layer in saved.layers)
    history = pd.read_csv(out / "history.csv")
    assert history["feat"].iloc[0] > 0 and "val_feat" in history
    met = json.loads((out / "metrics.json").read_text())
    assert met["label"] == "unet2d3 KD T=2 lam=0.9 s=T +fitnets w=0.5" and met["params"] == baseline.count_params()
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["feature_loss"], cfg["feature_weight"], cfg["feature_layers"]) == ("fitnets", 0.5, ["dec1_out:dec1_out"])


def test_unets_saved_before_the_stage_names_match_by_their_last_activation():
    """A U-Net saved before `*_out` layers existed (the cpu teacher of 2026-11-27): its stage `dec0_out` is `dec0_relu2`."""
    import keras
    import numpy as np

    from models.registry import features_model, stage_names

    x = keras.Input((8, 8, 1))
    e = keras.layers.Activation("relu", name="enc0_relu2")(keras.layers.Conv2D(2, 3, padding="same", name="enc0_conv2")(x))
    m = keras.layers.Activation("relu", name="mid_relu2")(keras.layers.Conv2D(3, 3, padding="same")(e))
    d = keras.layers.Activation("relu", name="dec0_relu2")(keras.layers.Conv2D(2, 3, padding="same")(m))
    model = keras.Model(x, keras.layers.Conv2D(1, 1, name="logits")(d))
    assert stage_names(model) == ["enc0_out", "mid_out", "dec0_out"]
    z, mid = features_model(model, ["mid_out"])(np.ones((1, 8, 8, 1), np.float32))
    want = keras.Model(x, model.get_layer("mid_relu2").output)(np.ones((1, 8, 8, 1), np.float32))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(mid), keras.ops.convert_to_numpy(want))
    with pytest.raises(ValueError, match="enc0_out, mid_out, dec0_out"):
        features_model(model, ["dec1_out"])
