"""The speed benchmarks run and report sane numbers (the figures themselves go in the README, not in tests)."""

import json

import pytest

from tests.conftest import cli


def test_input_pipeline_benchmark_reports_every_setting():
    out = cli("-m", "benchmarks.input_pipeline", "--images", "64", "--unlabelled", "32", "--batch-size", "16").stdout
    rows = [line for line in out.splitlines()[1:] if line.strip()]
    assert [r[:38].strip() for r in rows] == [
        "flips",
        "flips + 16 unlabelled",
        "flips + cached logits",
        "flips + unlabelled + cached logits",
        "all + 2 replicas",
        "strong + 16 unlabelled",
        "strong + unlabelled + mixup",
    ]
    assert all(float(r.split()[-1].replace(",", "")) > 0 for r in rows)


def test_train_speed_benchmark_names_backend_and_device(tmp_path):
    cli(
        "-m",
        "benchmarks.train_speed",
        "--backends",
        "torch",
        "--base-filters",
        "2",
        "--depth",
        "3",
        "--upsample",
        "bilinear",
        "--batch-size",
        "4",
        "--steps",
        "2",
        "--precision",
        "float32",
        "mixed_bfloat16",
        "--json",
        tmp_path / "speed.json",
    )
    rows = json.loads((tmp_path / "speed.json").read_text())
    assert [(r["precision"], r["jit_compile"]) for r in rows] == [("float32", "auto"), ("mixed_bfloat16", "auto")]
    for row in rows:
        assert row["backend"] == "torch" and "cpu" in row["device"] and row["img_per_s"] > 0 and row["first_step_s"] > 0
        assert row["model"] == "unet2d3_bilinear"  # the run dirs' name (training.naming), depth and decoder included
        assert row["peak_rss_mb"] > 50


def test_arch_latency_models_and_table():
    """benchmarks.arch_latency: the preset's model axis, ARCH:WIDTH[:DEPTH[:UPSAMPLE]], and the pivot of benchmark rows."""
    import pandas as pd

    from benchmarks.arch_latency import CONFIG, config_models, parse_model, table
    from common.cli import UserError

    assert {"arch": "unet", "base_filters": 4, "depth": 4, "upsample": ""} in config_models(CONFIG)
    assert parse_model("unet:6:3") == {"arch": "unet", "base_filters": 6, "depth": 3, "upsample": ""}
    assert parse_model("unet:4:4:bilinear")["upsample"] == "bilinear"
    with pytest.raises(UserError, match="ARCH:WIDTH"):
        parse_model("unet")
    rows = [
        ("unet4_int8.tflite", 150.0, 47.6e6, 1, 3.0, "tflite-runtime 2.14.0"),
        ("unet4_fp32.tflite", 490.0, 47.6e6, 1, 5.0, "tflite-runtime 2.14.0"),
        ("unet4_int8.tflite", 150.0, 47.6e6, 1, 2.0, "ai-edge-litert 2.3.0"),
        ("unet4_fp32.tflite", 490.0, 47.6e6, 1, 4.0, "ai-edge-litert 2.3.0"),
    ]
    b = pd.DataFrame(rows, columns=["model", "size_kb", "macs", "threads", "median_ms", "runtime"])
    t = table(b, {"unet4": 122757}).iloc[0]
    assert (t.model, t.params, t.mmacs, t.int8_kb, t.fp32_kb) == ("unet4", 122757, 47.6, 150.0, 490.0)
    assert t["int8 1t tflite-runtime 2.14.0"] == 3.0 and t["fp32 1t ai-edge-litert 2.3.0"] == 4.0


def test_save_default_picks_the_fastest_float32_backend_for_this_cpu(tmp_path, monkeypatch):
    """--save-default: the backend with the fastest float32 steps (geometric mean over the shapes every backend ran)
    is saved for this CPU; choose_backend takes it when KERAS_BACKEND is unset, ignores it on another CPU or when
    unreadable, and KERAS_BACKEND still wins."""
    import os
    import subprocess
    import sys

    from benchmarks.train_speed import fastest_backend, save_default
    from common.backend import saved_backend
    from common.cli import UserError
    from tests.conftest import ROOT

    def row(backend, model, img_s, precision="float32"):
        return {"backend": backend, "model": model, "batch_size": 32, "img_per_s": img_s, "precision": precision, "jit_compile": "auto"}

    rows = [row("torch", "unet4", 50.0), row("torch", "unet8", 30.0), row("jax", "unet4", 40.0)]
    rows += [row("tensorflow", "unet4", 80.0), row("tensorflow", "unet8", 40.0), row("torch", "unet4", 500.0, "mixed_bfloat16")]
    best, ratios = fastest_backend(rows)  # jax lacks unet8: unet4 alone is compared
    assert best == "tensorflow" and ratios == {"torch": 1.0, "jax": 0.8, "tensorflow": 1.6}
    assert fastest_backend(rows[:2] + rows[3:5])[1]["tensorflow"] == pytest.approx(((80 / 50) * (40 / 30)) ** 0.5, abs=1e-3)
    with pytest.raises(UserError, match="two or more"):
        fastest_backend([r for r in rows if r["backend"] == "torch"])
    saved = tmp_path / "backend.json"
    monkeypatch.setenv("SEG_DISTILL_BACKEND_FILE", str(saved))
    assert saved_backend() is None  # nothing saved yet
    assert "saved tensorflow as this CPU's default backend (1.60x torch" in save_default(rows)
    assert saved_backend() == "tensorflow"

    def chosen(**env):
        code = "from common.backend import choose_backend; print(choose_backend())"
        clean = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
        p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=120)
        return p.stdout.strip()

    assert chosen() == "tensorflow" and chosen(KERAS_BACKEND="jax") == "jax"
    saved.write_text(json.dumps({**json.loads(saved.read_text()), "cpu": "another-cpu"}))
    assert saved_backend() is None and chosen() == "torch"
    saved.write_text("{not json")
    assert saved_backend() is None and chosen() == "torch"
