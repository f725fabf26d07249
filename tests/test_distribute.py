"""Data-parallel training (--devices N) on two logical CPU devices: the code path a multi-GPU box takes."""

import importlib.util
import json

import numpy as np
import pytest
from conftest import cli

TINY_DP = ["--epochs", "2", "--batch-size", "16", "--base-filters", "2", "--depth", "3", "--input-size", "104"]


def test_batches_split_evenly_over_replicas():
    from data.pipeline import Batches

    x = np.zeros((37, 8, 8, 1), np.float32)
    b = Batches(x, x.copy(), batch_size=16, seed=0, multiple_of=4)
    sizes = [len(b[i][0]["image"]) for i in range(len(b))]
    assert sizes == [16, 16, 4]  # 36 of 37 images; every batch splits into 4 equal shares
    assert len(np.unique(np.concatenate([b.perm[: b.n_used]]))) == 36
    assert [len(Batches(x, x.copy(), batch_size=16)[i][0]["image"]) for i in range(3)] == [16, 16, 5]  # one device: all images


def test_tensorflow_mirrored_strategy_on_two_logical_cpus(synth_dir, tmp_path):
    out = tmp_path / "t"
    p = cli("-m", "teacher.train", "--data", synth_dir, "--out", out, *TINY_DP, "--devices", "2", env={"KERAS_BACKEND": "tensorflow"})
    assert "data parallel over 2 devices (tf.distribute.MirroredStrategy)" in p.stdout
    m = json.loads((out / "metrics.json").read_text())
    assert m["parallel"]["replicas"] == 2 and len(m["parallel"]["devices"]) == 2
    import pandas as pd

    h = pd.read_csv(out / "history.csv")
    assert len(h) == 2 and np.isfinite(h.loss).all()
    assert (out / "teacher.keras").exists()


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed (the GPU box's backend)")
def test_jax_data_parallel_matches_one_device(synth_dir, tmp_path):
    """Keras' DataParallel computes the same global batch (BatchNorm included) on 2 devices as on 1."""
    env = {"KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    losses = {}
    for n in (1, 2):
        out = tmp_path / f"d{n}"
        cli("distill_train.py", "--data", synth_dir, "--lam", "0", "--out", out, *TINY_DP, "--devices", n, env=env)
        m = json.loads((out / "metrics.json").read_text())
        assert m["parallel"]["replicas"] == n
        import pandas as pd

        losses[n] = pd.read_csv(out / "history.csv").loss.to_numpy()
    np.testing.assert_allclose(losses[2], losses[1], rtol=2e-3)


def test_devices_refused_where_they_cannot_work(synth_dir, tmp_path):
    p = cli(
        "distill_train.py",
        "--data",
        synth_dir,
        "--lam",
        "0",
        "--out",
        tmp_path / "a",
        *TINY_DP,
        "--devices",
        "2",
        check=False,
        env={"KERAS_BACKEND": "torch"},
    )
    assert p.returncode == 2 and p.stderr.strip().startswith("error: --devices 2 needs KERAS_BACKEND=jax")
    assert "Traceback" not in p.stderr and not (tmp_path / "a").exists()
    p = cli(
        "distill_train.py",
        "--data",
        synth_dir,
        "--lam",
        "0",
        "--out",
        tmp_path / "b",
        *TINY_DP,
        "--devices",
        "3",
        check=False,
        env={"KERAS_BACKEND": "tensorflow"},
    )
    assert p.returncode == 2 and "--batch-size 16 must be a multiple of --devices 3" in p.stderr
