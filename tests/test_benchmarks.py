"""The speed benchmarks run and report sane numbers (the figures themselves go in the README, not in tests)."""

import json

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
        "--batch-size",
        "4",
        "--steps",
        "2",
        "--json",
        tmp_path / "speed.json",
    )
    (row,) = json.loads((tmp_path / "speed.json").read_text())
    assert row["backend"] == "torch" and "cpu" in row["device"] and row["img_per_s"] > 0 and row["first_step_s"] > 0
