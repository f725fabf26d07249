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
