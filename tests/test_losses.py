"""The loss layer against numpy, gradients, head swap, the training graph, .keras round trips."""

import keras
import numpy as np
import pytest
from keras import ops

from distill.graph import build_training_graph
from distill.losses import DistillationLoss, IdentityLoss, LossPart, lovasz_hinge, scale_factor
from distill.teachers import TeacherLogits, TemperatureSigmoid, soft_teacher
from models.registry import build_model, logits_model
from models.unet import build_unet


def build_student(input_shape, base_filters, depth):
    return build_model("unet", input_shape, base_filters, depth, name=f"unet{base_filters}")


def np_bce(t, p):
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return -(t * np.log(p) + (1 - t) * np.log(1 - p))


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


@pytest.mark.parametrize("scale", ["T", "T2", "1"])
@pytest.mark.parametrize("lam,T", [(0.9, 2.0), (0.5, 4.0), (1.0, 1.0), (0.0, 3.0)])
def test_loss_layer_matches_numpy(scale, lam, T):
    rng = np.random.default_rng(0)
    y = (rng.random((3, 8, 8, 1)) > 0.5).astype(np.float32)
    z = rng.normal(0, 3, (3, 8, 8, 1)).astype(np.float32)
    zt = rng.normal(0, 3, (3, 8, 8, 1)).astype(np.float32)
    t_soft = sigmoid(zt / T).astype(np.float32)
    out = ops.convert_to_numpy(DistillationLoss(lam, T, scale)([y, z, t_soft]))
    hard = np_bce(y, sigmoid(z)).mean(axis=(1, 2, 3))
    soft = np_bce(t_soft, sigmoid(z / T)).mean(axis=(1, 2, 3))
    s = {"T": T, "T2": T * T, "1": 1.0}[scale]
    assert scale_factor(scale, T) == s
    np.testing.assert_allclose(out[:, 1], hard, rtol=1e-5)
    np.testing.assert_allclose(out[:, 2], soft, rtol=1e-5)
    np.testing.assert_allclose(out[:, 0], (1 - lam) * hard + lam * s * soft, rtol=1e-5)


def test_loss_is_finite_for_extreme_logits():
    z = np.array([-200.0, -50.0, 0.0, 50.0, 200.0], np.float32).reshape(1, 5, 1, 1)
    y = np.array([1, 0, 1, 1, 0], np.float32).reshape(1, 5, 1, 1)
    out = ops.convert_to_numpy(DistillationLoss(0.5, 2.0)([y, z, np.full_like(z, 0.5)]))
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out[0, 1], np.mean([200, 0, np.log(2), 0, 200]), rtol=1e-4)


def test_unlabelled_pixels_count_in_soft_term_only():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(2, 4, 4, 1)).astype(np.float32)
    y = np.stack([(rng.random((4, 4, 1)) > 0.5), np.zeros((4, 4, 1))]).astype(np.float32)
    y[1] = -1.0  # second image unlabelled
    t = rng.random((2, 4, 4, 1)).astype(np.float32)
    out = ops.convert_to_numpy(DistillationLoss(0.9, 2.0)([y, z, t]))
    assert out[1, 1] == 0.0 and out[1, 2] > 0
    np.testing.assert_allclose(out[0, 1], np_bce(y[0], sigmoid(z[0])).mean(), rtol=1e-5)


def _grad_wrt_logits(layer, y, z, t):
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        zt = torch.tensor(z, requires_grad=True)
        layer([torch.tensor(y), zt, torch.tensor(t)])[:, 2].sum().backward()
        return zt.grad.numpy()
    if backend == "tensorflow":
        import tensorflow as tf

        zt = tf.Variable(z)
        with tf.GradientTape() as tape:
            out = tf.reduce_sum(layer([y, zt, t])[:, 2])
        return tape.gradient(out, zt).numpy()
    import jax

    return np.asarray(jax.grad(lambda zz: layer([y, zz, t])[:, 2].sum())(z))


def test_soft_gradient_zero_when_student_equals_teacher():
    rng = np.random.default_rng(2)
    T = 3.0
    z = rng.normal(0, 2, (2, 6, 6, 1)).astype(np.float32)
    y = (rng.random(z.shape) > 0.5).astype(np.float32)
    layer = DistillationLoss(0.9, T)
    g_same = _grad_wrt_logits(layer, y, z, sigmoid(z / T).astype(np.float32))
    g_diff = _grad_wrt_logits(layer, y, z, sigmoid((z + 1) / T).astype(np.float32))
    assert np.abs(g_same).max() < 1e-7
    assert np.abs(g_diff).max() > 1e-4


def test_head_swapped_teacher_is_sigmoid_of_logits_over_T():
    keras.utils.set_random_seed(0)
    teacher = build_unet((32, 32, 1), base_filters=2, depth=2, name="t")
    x = np.random.default_rng(0).random((2, 32, 32, 1)).astype(np.float32)
    z = ops.convert_to_numpy(logits_model(teacher)(x))
    for T in (1.0, 2.5):
        soft = ops.convert_to_numpy(soft_teacher(teacher, T)(x))
        np.testing.assert_allclose(soft, sigmoid(z / T), rtol=1e-5, atol=1e-6)
    assert not soft_teacher(teacher, 2.0).trainable_weights


def test_graph_soft_term_is_bce_of_head_swapped_teacher_and_student_over_T():
    """The graph's soft part equals BCE(sigmoid(z_t/T), sigmoid(z/T)) computed in numpy from both models' logits;
    the student has one output (the hard mask), T is given once and reaches the teacher head and the loss."""
    keras.utils.set_random_seed(0)
    T = 4.0
    student = build_student((32, 32, 1), 2, 2)
    with keras.name_scope("teacher0"):  # as distill.teachers.load_teacher: its own variable paths
        teacher = build_unet((32, 32, 1), base_filters=2, depth=2, name="t")
    assert len(student.outputs) == 1 and student.output_shape == (None, 32, 32, 1)
    graph = build_training_graph(student, TeacherLogits("t", models=[teacher]), temperature=T, lam=1.0, scale="1")
    assert graph.get_layer("soft_teacher").get_layer("teacher_soft").temperature == graph.get_layer("loss").temperature == T
    x = np.random.default_rng(0).random((2, 32, 32, 1)).astype(np.float32)
    z = ops.convert_to_numpy(logits_model(student)(x))
    zt = ops.convert_to_numpy(logits_model(teacher)(x))
    np.testing.assert_allclose(ops.convert_to_numpy(student(x)), sigmoid(z), rtol=1e-5, atol=1e-6)
    out = ops.convert_to_numpy(graph({"image": x, "mask": np.zeros_like(x)}))
    np.testing.assert_allclose(out[:, 2], np_bce(sigmoid(zt / T), sigmoid(z / T)).mean(axis=(1, 2, 3)), rtol=1e-4)
    np.testing.assert_allclose(out[:, 0], out[:, 2], rtol=1e-6)  # lam = 1, s(T) = 1


def test_unet_param_counts_and_names():
    t = build_unet(base_filters=16)
    s = build_unet(base_filters=4)
    assert 1.8e6 < t.count_params() < 2.1e6
    assert s.count_params() < t.count_params() / 10
    names = {layer.name for layer in t.layers}
    assert {"logits", "probs", "enc0_conv1", "dec0_concat"} <= names
    b = build_unet(base_filters=4, upsample="bilinear")
    assert not any(isinstance(layer, keras.layers.Conv2DTranspose) for layer in b.layers)


def test_keras_round_trip_of_every_custom_object(tmp_path):
    keras.utils.set_random_seed(0)
    student = build_student((32, 32, 1), 2, 2)
    with keras.name_scope("teacher0"):
        t_model = build_unet((32, 32, 1), base_filters=2, depth=2, name="t")
    teacher = soft_teacher(t_model, 2.0)
    graph = build_training_graph(student, TeacherLogits("t", models=[t_model]), temperature=2.0, lam=0.7, scale="T2", dice=True)
    graph.compile(optimizer="adam", loss=IdentityLoss(), metrics=[LossPart(1, "hard"), LossPart(2, "soft")])
    x = np.random.default_rng(0).random((2, 32, 32, 1)).astype(np.float32)
    feed = {"image": x, "mask": (x > 0.5).astype(np.float32)}
    graph.fit(feed, np.zeros((2, 1), np.float32), epochs=1, verbose=0)
    for model, inputs in ((student, x), (teacher, x), (graph, feed)):
        path = tmp_path / f"{model.name}.keras"
        model.save(path)
        loaded = keras.saving.load_model(path)  # safe_mode=True: no Lambda, no closures
        a, b = model.predict(inputs, verbose=0), loaded.predict(inputs, verbose=0)
        for u, v in zip(a if isinstance(a, list) else [a], b if isinstance(b, list) else [b]):
            np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)
    loaded = keras.saving.load_model(tmp_path / "train_graph.keras")
    layer = loaded.get_layer("loss")
    assert (layer.lam, layer.temperature, layer.scale, layer.dice) == (0.7, 2.0, "T2", True)
    assert isinstance(loaded.loss, IdentityLoss)


@pytest.mark.parametrize("kwargs", [{"lam": 1.5}, {"lam": -0.1}, {"temperature": 0.0}, {"temperature": -1.0}, {"scale": "T3"}])
def test_loss_layer_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        DistillationLoss(**kwargs)
    with pytest.raises(ValueError):
        TemperatureSigmoid(0.0)


# ---------------------------------------------------------------- Lovasz hinge (Berman et al. 2018) against Berman's reference code


def np_lovasz_grad(gt_sorted):
    """Berman's reference `lovasz_grad` (github.com/bermanmaxim/LovaszSoftmax, lovasz_losses.py), in numpy."""
    p = len(gt_sorted)
    gts = gt_sorted.sum()
    intersection = gts - np.cumsum(gt_sorted)
    union = gts + np.cumsum(1.0 - gt_sorted)
    jaccard = 1.0 - intersection / union
    if p > 1:  # cover the 1-pixel case
        jaccard[1:p] = jaccard[1:p] - jaccard[0:-1]
    return jaccard


def np_lovasz_hinge(logits, labels):
    """Berman's `lovasz_hinge(logits, labels, per_image=True, ignore=-1)` per image: (loss (B,), d loss / d logits)."""
    losses, grads = [], np.zeros(logits.shape, np.float64)
    for b, (z, y) in enumerate(zip(logits.reshape(len(logits), -1).astype(np.float64), labels.reshape(len(labels), -1))):
        keep = np.flatnonzero(y != -1)  # flatten_binary_scores(ignore=-1)
        if len(keep) == 0:  # lovasz_hinge_flat: an empty image contributes 0
            losses.append(0.0)
            continue
        z, y = z[keep], y[keep].astype(np.float64)
        signs = 2.0 * y - 1.0
        errors = 1.0 - z * signs
        perm = np.argsort(-errors, kind="stable")
        grad = np_lovasz_grad(y[perm])
        losses.append(float(np.dot(np.maximum(errors[perm], 0.0), grad)))
        g = np.zeros(len(z))
        g[perm] = -signs[perm] * grad * (errors[perm] > 0)
        grads.reshape(len(grads), -1)[b, keep] = g
    return np.array(losses), grads


def lovasz_inputs():
    rng = np.random.default_rng(3)
    z = rng.normal(0, 2, (6, 8, 8, 1)).astype(np.float32)
    y = (rng.random((6, 8, 8, 1)) > 0.6).astype(np.float32)
    y[1] = 0.0  # all background: relu(max error)
    y[2, :3] = -1.0  # partly unlabelled: those pixels are left out
    y[3] = -1.0  # an unlabelled image: contributes nothing
    y[4] = 1.0  # all salt
    return z, y


def _grad(fn, z):
    """d sum(fn(z)) / dz on the current backend."""
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        zt = torch.tensor(z, requires_grad=True)
        fn(zt).sum().backward()
        return zt.grad.numpy()
    if backend == "tensorflow":
        import tensorflow as tf

        zt = tf.Variable(z)
        with tf.GradientTape() as tape:
            out = tf.reduce_sum(fn(zt))
        return tape.gradient(out, zt).numpy()
    import jax

    return np.asarray(jax.grad(lambda zz: fn(zz).sum())(z))


def test_lovasz_hinge_matches_berman_reference():
    z, y = lovasz_inputs()
    want, want_grad = np_lovasz_hinge(z, y)
    got = ops.convert_to_numpy(lovasz_hinge(y, z))
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert got[3] == 0.0 and got[1] > 0
    np.testing.assert_allclose(got[1], 1 + z[1].max(), atol=1e-5)  # all background: relu(max error) = 1 + max z
    np.testing.assert_allclose(float(np.mean(got)), float(np.mean(want)), atol=1e-5)  # Keras' mean over the batch
    np.testing.assert_allclose(_grad(lambda zz: lovasz_hinge(y, zz), z), want_grad, atol=1e-5)
    # ties (here: all logits 0, every error 1) do not change the value
    np.testing.assert_allclose(ops.convert_to_numpy(lovasz_hinge(y, np.zeros_like(z))), np_lovasz_hinge(np.zeros_like(z), y)[0], atol=1e-5)
    # perfect, confident logits: every error <= 0
    assert np.all(ops.convert_to_numpy(lovasz_hinge(np.maximum(y, 0), 5 * (2 * np.maximum(y, 0) - 1))) == 0.0)


def test_loss_layer_hard_term_switches_between_bce_and_lovasz():
    z, y = lovasz_inputs()
    rng = np.random.default_rng(4)
    t = sigmoid(rng.normal(size=z.shape)).astype(np.float32)
    layer = DistillationLoss(0.3, 2.0, hard_loss="lovasz")
    assert float(ops.convert_to_numpy(layer.lovasz_on)) == 1.0 and not layer.trainable_weights
    out = ops.convert_to_numpy(layer([y, z, t]))
    bce = ops.convert_to_numpy(DistillationLoss(0.3, 2.0)([y, z, t]))
    np.testing.assert_allclose(out[:, 1], np_lovasz_hinge(z, y)[0], atol=1e-5)
    np.testing.assert_allclose(out[:, 2], bce[:, 2], rtol=1e-6)  # the soft term is unchanged
    np.testing.assert_allclose(out[:, 0], 0.7 * out[:, 1] + 0.3 * 2.0 * out[:, 2], rtol=1e-5)
    layer.lovasz_on.assign(0.0)
    np.testing.assert_allclose(ops.convert_to_numpy(layer([y, z, t])), bce, rtol=1e-6)  # BCE phase: the default layer's numbers
    assert not DistillationLoss(0.3, 2.0).weights  # the default layer holds no variable
    with pytest.raises(ValueError):
        DistillationLoss(hard_loss="dice")


def test_lovasz_graph_round_trip_keeps_the_switch(tmp_path):
    """A training graph with hard_loss="lovasz" reloads (safe_mode) with its loss config and switch value."""
    keras.utils.set_random_seed(0)
    graph = build_training_graph(build_student((32, 32, 1), 2, 2), lam=0.0, hard_loss="lovasz")
    graph.get_layer("loss").lovasz_on.assign(0.0)
    x = np.random.default_rng(0).random((2, 32, 32, 1)).astype(np.float32)
    feed = {"image": x, "mask": (x > 0.5).astype(np.float32)}
    graph.save(tmp_path / "g.keras")
    loaded = keras.saving.load_model(tmp_path / "g.keras")
    layer = loaded.get_layer("loss")
    assert layer.hard_loss == "lovasz" and float(ops.convert_to_numpy(layer.lovasz_on)) == 0.0
    np.testing.assert_allclose(ops.convert_to_numpy(loaded(feed)), ops.convert_to_numpy(graph(feed)), rtol=1e-6)
    assert "hard_loss" not in DistillationLoss().get_config()  # the default layer's config is as before


@pytest.mark.parametrize("backend", ["jax", "tensorflow"])
def test_lovasz_on_other_backends(backend):
    """The two tests above, run on the jax and tensorflow backends (torch: the session's backend)."""
    import subprocess
    import sys
    from pathlib import Path

    code = "import tests.test_losses as t; t.test_lovasz_hinge_matches_berman_reference(); t.test_loss_layer_hard_term_switches_between_bce_and_lovasz()"
    root = Path(__file__).resolve().parents[1]
    env = {**__import__("os").environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    p = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
