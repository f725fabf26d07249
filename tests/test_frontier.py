"""experiments.frontier on a hand-made sweep: grouping, paired differences worked out by hand, the Pareto front, the Pi
CSV's columns, bad input; the export and benchmark subprocesses are faked (no training, no TensorFlow)."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from common.cli import run
from experiments import frontier, frontier_export, frontier_plot, frontier_table
from experiments.frontier_plot import pareto_front
from pi.bench_csv import CSV_COLUMNS
from student import latency
from training.naming import RunSpec

IDS = ["a", "b", "c", "d"]
REF = [0.5, 0.5, 0.5, 0.5]
# (arch, width, lam, unlabelled, seed, per-image Kaggle scores); sepunet8 kd_unl minus unet4 kd_unl per image:
# seed 0 [+0.25, 0, +0.25, 0], seed 1 [-0.125, +0.125, -0.125, +0.125] -> averaged 0.0625 on every image
RUNS = [
    ("unet", 4, 0.0, False, 0, REF),
    ("unet", 4, 0.0, False, 1, [0.25, 0.5, 0.5, 0.75]),
    ("unet", 4, 0.9, True, 0, REF),
    ("unet", 4, 0.9, True, 1, REF),
    ("sepunet", 8, 0.9, True, 0, [0.75, 0.5, 0.75, 0.5]),
    ("sepunet", 8, 0.9, True, 1, [0.375, 0.625, 0.375, 0.625]),
    ("sepunet", 8, 0.0, False, 0, [0.5, 0.5, 0.75, 0.75]),
    ("mbv2cat", 8, 0.9, False, 1, [1.0, 1.0, 0.0, 0.0]),
    ("mbv2cat", 8, 0.0, False, 2, [0.0, 0.0, 0.0, 1.0]),
]
# fake median ms per (model, format, threads); MACs of the int8 file
MACS = {"unet4": 40e6, "sepunet8": 20e6, "mbv2cat8": 8e6}


def _ms(model, fmt, threads):
    return {"unet4": 10.0, "sepunet8": 4.0, "mbv2cat8": 2.0}[model] * (2 if fmt == "fp32" else 1) / threads


def _write_run(root, arch, width, lam, unl, seed, scores, teacher=False):
    name = f"{arch}{width}_{'teacher' if teacher else ('kd' if lam else 'base')}{'_unl' if unl else ''}_s{seed}"
    d = root / name
    d.mkdir(parents=True)
    cfg = {"data": str(root / "data.npz"), "arch": arch, "base_filters": width, "depth": 4, "upsample": "", "seed": seed}
    cfg.update(lam=lam, temperature=2.0, scale="T", unlabelled=["u"] if unl else [], teacher=["t.keras"] if lam else [])
    met = {
        "params": 1000 * width,
        "val": {"mean_iou": 0.5 + 0.01 * seed + (0.1 if lam else 0), "salt_iou": 0.4, "kaggle_map": float(np.mean(scores))},
        "val_ids": IDS,
        "val_kaggle_per_image": scores,
        # the last epoch's scores (half the best epoch's), except in the unet4 baseline of seed 0 (a run from before them)
        **({} if (arch, width, lam, seed) == ("unet", 4, 0.0, 0) else {"val_last": {"kaggle_map": float(np.mean(scores)) / 2}}),
        **({} if (arch, width, lam, seed) == ("unet", 4, 0.0, 0) else {"val_last_kaggle_per_image": [x / 2 for x in scores]}),
        "train_img_per_s": 100.0 / width + seed,
        "peak_rss_mb": 500.0 + width,
    }
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "metrics.json").write_text(json.dumps(met))
    (d / ("teacher.keras" if teacher else "student.keras")).write_bytes(b"k")
    return d


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "sweep"
    for r in RUNS:
        _write_run(root, *r)
    _write_run(root, "unet", 16, 0.0, False, 0, [0.75, 0.75, 0.75, 0.75], teacher=True)
    (root / "data.npz").write_bytes(b"")
    return root


def _bench_csv(path, files, threads, runtime="fake-runtime 1.0", machine="x86_64"):
    rows = []
    for f in files:
        model, fmt = f.name.removesuffix(".tflite").rsplit("_", 1)
        for t in threads:
            ms = _ms(model, fmt, t)
            rows.append([f.name, str(f), 10.0, MACS[model], t, ms, ms * 1.1, 1000 / ms, runtime, machine])
    pd.DataFrame(rows, columns=CSV_COLUMNS).to_csv(path, index=False)


@pytest.fixture
def calls(monkeypatch):
    """Fake export_tflite.py and pi/benchmark.py: the files they would write; the commands, recorded."""
    seen = []

    def fake(cmd, what):
        seen.append(cmd)
        opt = lambda k: cmd[cmd.index(k) + 1]  # noqa: E731
        if cmd[1].endswith("export_tflite.py"):
            out, name = Path(opt("--out")), opt("--name")
            out.mkdir(parents=True, exist_ok=True)
            rows = [{"format": "keras", "size_kb": 0.0, "d_mean_iou": 0.0, "d_kaggle_map": 0.0}]
            for fmt, kb, d in (("fp32", 40.0, 0.0), ("int8", 12.5, -0.002)):
                (out / f"{name}_{fmt}.tflite").write_bytes(b"t")
                rows.append({"format": fmt, "size_kb": kb, "mean_iou": 0.5, "kaggle_map": 0.5, "d_mean_iou": d, "d_kaggle_map": 2 * d})
                rows[-1]["convert_s"] = 3.5 if fmt == "int8" else 1.25
            (out / "export.json").write_text(json.dumps({"model": opt("--model"), "rows": rows}))
        else:
            files = [Path(f) for f in cmd[cmd.index("--models") + 1 : cmd.index("--threads")]]
            _bench_csv(opt("--csv"), files, [int(t) for t in opt("--threads").split(",")])
        return ""

    monkeypatch.setattr(frontier_export, "call", fake)
    monkeypatch.setattr(latency, "call", fake)
    return seen


def _exits(argv, capsys):
    with pytest.raises(SystemExit) as e:
        run(frontier.main, argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    return err


def test_pareto_front_on_hand_made_points():
    pts = [(1.0, 0.5), (2.0, 0.7), (2.0, 0.6), (3.0, 0.65), (4.0, 0.8), (0.5, 0.4), (5.0, 0.8), (float("nan"), 0.99)]
    # (2, 0.6) loses to (2, 0.7); (3, 0.65) to (2, 0.7); (5, 0.8) to (4, 0.8); the NaN is left out
    assert pareto_front(pts) == [5, 0, 1, 4]
    assert pareto_front([(1.0, 0.5), (1.0, 0.5)]) == [0, 1]  # equal points: neither dominates
    assert pareto_front([]) == []


def test_point_label_names_the_options_not_the_setting():
    kd_unl = RunSpec("unet4", teacher="unet8", lam=0.9, unlabelled=True)
    label = lambda **kw: frontier_plot.point_label("unet4", dataclasses.replace(kd_unl, **kw))  # noqa: E731
    assert label(lovasz_epochs=3, tune_threshold=True) == "unet4 +lovasz3 +thr"
    assert label() == "unet4"
    assert frontier_plot.point_label("lraspp4", RunSpec("lraspp4")) == "lraspp4"
    # the unlabelled count and a feature loss's weight are options too: two kd_unl points must not share a label
    assert label(unlabelled_count=18000) == "unet4 18k"
    assert label(n_unlabelled=32, unlabelled_count=18000) == "unet4 +unl32 18k"
    assert label(feature_loss="cwd", feature_weight=3.0) == "unet4 +cwd w=3"
    assert label(teacher_tta=True, mixup=0.2) == "unet4 +tta +mixup0.2"
    assert frontier_plot.point_label("unet4", RunSpec("unet4", augment="strong")) == "unet4 +aug"
    # +tta of a run distilled by its feature loss alone (lam = 0)
    assert (
        frontier_plot.point_label("unet4", RunSpec("unet4", teacher="unet8", feature_loss="at", teacher_tta=True)) == "unet4 +tta +at w=1"
    )
    # the export prefers the fewest options: one per option, however many words its label takes
    assert len(frontier_table.options(dataclasses.replace(kd_unl, feature_loss="at", feature_layers=("a_out:b_out",)))) == 1


def test_spread_pushes_labels_of_one_column_apart():
    np.testing.assert_allclose(frontier_plot.spread(np.array([0.70, 0.701, 0.75]), 0.01), [0.70, 0.71, 0.75])
    # order of the input kept, three points at one height stacked upwards, a far point left alone
    np.testing.assert_allclose(frontier_plot.spread(np.array([0.5, 0.5, 0.9, 0.5]), 0.1), [0.5, 0.6, 0.9, 0.7])
    np.testing.assert_allclose(frontier_plot.spread(np.array([0.3]), 0.1), [0.3])


def test_slug():
    assert frontier_table.slug("tflite-runtime 2.14.0") == "tflite-runtime-2.14.0"
    assert frontier_table.slug("aarch64-ai-edge-litert 1.4.0") == "aarch64-ai-edge-litert-1.4.0"


def test_frontier_table_and_paired_differences(sweep, calls, capsys):
    assert frontier.main([str(sweep)]) == 0
    out = capsys.readouterr().out
    f = pd.read_csv(sweep / "frontier" / "frontier.csv")
    assert sorted(zip(f.model, f.setting)) == [
        ("mbv2cat8", "baseline"),
        ("mbv2cat8", "kd"),
        ("sepunet8", "baseline"),
        ("sepunet8", "kd_unl"),
        ("unet4", "baseline"),
        ("unet4", "kd_unl"),
    ]
    row = f.set_index(["model", "setting"])
    s = row.loc[("sepunet8", "kd_unl")]
    assert s.n_seeds == 2 and s.kaggle_map == pytest.approx((0.625 + 0.5) / 2)
    assert s.kaggle_map_std == pytest.approx(np.std([0.625, 0.5], ddof=1))
    assert s.mean_iou == pytest.approx(0.605) and s.mean_iou_std == pytest.approx(np.std([0.6, 0.61], ddof=1))
    # per image: (+0.25 - 0.125) / 2 = (0 + 0.125) / 2 = 0.0625 -> the bootstrap of a constant is that constant
    assert (s.d_kaggle_vs_ref, s.d_lo, s.d_hi) == (0.0625, 0.0625, 0.0625)
    assert s.n_pairs == 2 and s.seeds_above_ref == 1  # seed 0: 0.625 > 0.5; seed 1: 0.5, not above
    # last epoch: every score halved -> the difference halved, on every image; its mean score is the seeds' mean
    assert (s.d_last_vs_ref, s.d_last_lo, s.d_last_hi) == (0.03125, 0.03125, 0.03125)
    assert s.kaggle_map_last == pytest.approx((0.625 + 0.5) / 4)
    b = row.loc[("sepunet8", "baseline")]  # seed 0 only: vs unet4 baseline seed 0, +0.125 on images c, d
    assert b.n_seeds == 1 and np.isnan(b.kaggle_map_std) and b.d_kaggle_vs_ref == pytest.approx(0.125) and b.seeds_above_ref == 1
    assert np.isnan(b.d_last_vs_ref)  # its reference run (unet4 baseline seed 0) has no last-epoch scores
    assert np.isnan(row.loc[("unet4", "baseline")].d_last_vs_ref)  # one of its two pairs lacks them: no partial mean
    assert row.loc[("mbv2cat8", "kd")].n_pairs == 0 and np.isnan(row.loc[("mbv2cat8", "kd")].d_kaggle_vs_ref)  # no unet4 kd runs
    assert row.loc[("mbv2cat8", "baseline")].n_pairs == 0  # seed 2: unet4 has no baseline of that seed
    u = row.loc[("unet4", "baseline")]
    assert u.d_kaggle_vs_ref == 0 and u.seeds_above_ref == 0 and u.train_img_per_s == pytest.approx(25.5)
    assert u.peak_rss_mb == 504.0 and u.params == 4000
    # export and latency: once per model, from kd_unl seed 0, else the lowest seed
    exports = {c[c.index("--name") + 1]: c[c.index("--model") + 1] for c in calls if c[1].endswith("export_tflite.py")}
    assert set(exports) == {"unet4", "sepunet8", "mbv2cat8"}
    assert exports["unet4"].endswith("unet4_kd_unl_s0/student.keras") and exports["mbv2cat8"].endswith("mbv2cat8_kd_s1/student.keras")
    assert all(c[c.index("--quant") + 1] == "fp32,int8" for c in calls if c[1].endswith("export_tflite.py"))
    assert (row.int8_kb == 12.5).all() and (row.fp32_kb == 40.0).all() and (row.int8_d_mean_iou == -0.002).all()
    assert (row.int8_convert_s == 3.5).all() and (row.fp32_convert_s == 1.25).all()
    assert row.loc[("sepunet8", "kd_unl")].macs == 20e6 and row.loc[("mbv2cat8", "baseline")].macs == 8e6
    for fmt, t in (("int8", 1), ("int8", 4), ("fp32", 1), ("fp32", 4)):
        assert row.loc[("unet4", "kd_unl")][f"{fmt}_ms_{t}t_fake-runtime-1.0"] == _ms("unet4", fmt, t)
    assert "sepunet8" in out and "+0.0625" in out
    assert (sweep / "frontier" / "frontier.png").stat().st_size > 1000


def test_rerun_reuses_exports_and_refuses_to_overwrite(sweep, calls, capsys):
    frontier.main([str(sweep)])
    n_exports = sum(c[1].endswith("export_tflite.py") for c in calls)
    before = (sweep / "frontier" / "frontier.csv").read_text()
    err = _exits([str(sweep)], capsys)
    assert "--overwrite" in err and (sweep / "frontier" / "frontier.csv").read_text() == before
    frontier.main([str(sweep), "--overwrite", "--threads", "2"])
    assert sum(c[1].endswith("export_tflite.py") for c in calls) == n_exports  # export.json newer than student.keras
    f = pd.read_csv(sweep / "frontier" / "frontier.csv")
    assert "int8_ms_2t_fake-runtime-1.0" in f and "int8_ms_1t_fake-runtime-1.0" not in f


def test_pi_csv_adds_the_boards_columns(sweep, calls, tmp_path, capsys):
    pi = tmp_path / "pi.csv"
    files = [tmp_path / f"{m}_{f}.tflite" for m in ("unet4", "sepunet8") for f in ("int8", "fp32")]
    _bench_csv(pi, files, [1, 4], runtime="tflite-runtime 2.14.0", machine="aarch64")
    assert frontier.main([str(sweep), "--pi-csv", str(pi)]) == 0
    f = pd.read_csv(sweep / "frontier" / "frontier.csv").set_index(["model", "setting"])
    col = "pi_int8_ms_1t_aarch64-tflite-runtime-2.14.0"
    assert f.loc[("sepunet8", "kd_unl"), col] == 4.0 and f.loc[("unet4", "baseline"), "pi_fp32_ms_4t_aarch64-tflite-runtime-2.14.0"] == 5.0
    assert np.isnan(f.loc[("mbv2cat8", "kd"), col])  # not in the Pi CSV
    assert "int8_ms_1t_fake-runtime-1.0" in f  # this machine's latency stays beside the board's
    assert "aarch64" in capsys.readouterr().out


@pytest.mark.parametrize("bad", ["missing", "columns", "numbers"])
def test_bad_pi_csv_is_refused_before_anything_is_written(sweep, calls, tmp_path, capsys, bad):
    pi = tmp_path / "pi.csv"
    if bad == "columns":
        pi.write_text("model,median_ms\nunet4_int8.tflite,3.0\n")
    elif bad == "numbers":
        _bench_csv(pi, [tmp_path / "unet4_int8.tflite"], [1])
        pi.write_text(pi.read_text().replace(",1,", ",one,", 1))
    err = _exits([str(sweep), "--pi-csv", str(pi)], capsys)
    assert "--pi-csv" in err
    assert not (sweep / "frontier").exists() and calls == []


def test_bad_sweep_dirs(tmp_path, calls, capsys):
    assert "not a folder" in _exits([str(tmp_path / "nowhere")], capsys)
    (tmp_path / "empty").mkdir()
    assert "no finished student runs" in _exits([str(tmp_path / "empty")], capsys)
    _write_run(tmp_path / "teachers", "unet", 16, 0.0, False, 0, REF, teacher=True)
    assert "no finished student runs" in _exits([str(tmp_path / "teachers")], capsys)
    assert not (tmp_path / "teachers" / "frontier").exists()
    assert "--threads" in _exits([str(tmp_path / "empty"), "--threads", "one"], capsys)
    assert "--max-int8-kb" in _exits([str(tmp_path / "empty"), "--max-int8-kb", "0"], capsys)
    assert "--max-params" in _exits([str(tmp_path / "empty"), "--max-params", "-5"], capsys)


def test_no_reference_runs_omit_the_paired_columns(sweep, calls, capsys):
    assert frontier.main([str(sweep), "--reference", "unet99"]) == 0
    assert "no runs of the reference model unet99" in capsys.readouterr().out
    f = pd.read_csv(sweep / "frontier" / "frontier.csv")
    assert not {"d_kaggle_vs_ref", "d_lo", "d_hi", "seeds_above_ref"} & set(f.columns) and len(f) == 6


def test_over_budget_names_what_breaks_the_pi_budget(sweep, calls, capsys):
    # fake sweep: params 1000 x width (unet4 4000, the others 8000), every int8 file 12.5 KB, int8 1-thread ms
    # unet4 10, sepunet8 4, mbv2cat8 2; the latency is judged against the reference model's
    frontier.main([str(sweep), "--threads", "1", "--max-params", "6000", "--max-int8-kb", "20", "--reference", "sepunet8"])
    f = pd.read_csv(sweep / "frontier" / "frontier.csv", keep_default_na=False).set_index(["model", "setting"])
    assert f.loc[("unet4", "baseline"), "over_budget"] == "latency"  # 10 ms > sepunet8's 4
    assert f.loc[("sepunet8", "kd_unl"), "over_budget"] == "params"
    assert f.loc[("mbv2cat8", "kd"), "over_budget"] == "params"
    frontier.main([str(sweep), "--threads", "1", "--max-int8-kb", "10", "--overwrite"])
    f = pd.read_csv(sweep / "frontier" / "frontier.csv", keep_default_na=False).set_index(["model", "setting"])
    assert f.loc[("unet4", "kd_unl"), "over_budget"] == "int8_kb"  # the reference: never slower than itself
    assert f.loc[("mbv2cat8", "baseline"), "over_budget"] == "int8_kb"
    assert "int8_kb" in capsys.readouterr().out


def test_export_comes_from_the_plain_kd_run_not_an_option_run(sweep, calls):
    # unet4_kd_unl_aug_s0 sorts before unet4_kd_unl_s0; its label carries +aug
    d = _write_run(sweep / "aug", "unet", 4, 0.9, True, 0, REF)
    cfg = json.loads((d / "config.json").read_text()) | {"augment": "strong"}
    (d / "config.json").write_text(json.dumps(cfg))
    d.rename(sweep / "unet4_kd_unl_aug_s0")
    (sweep / "aug").rmdir()
    frontier.main([str(sweep), "--threads", "1"])
    exports = {c[c.index("--name") + 1]: c[c.index("--model") + 1] for c in calls if c[1].endswith("export_tflite.py")}
    assert exports["unet4"].endswith("unet4_kd_unl_s0/student.keras")
    f = pd.read_csv(sweep / "frontier" / "frontier.csv")
    assert any("+aug" in str(c) for c in f.config)  # the +aug run is in the table, as its own row
