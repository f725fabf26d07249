"""experiments.epochs: the Kaggle mAP curve over training budgets, from hand-made run dirs."""

import json

import numpy as np
import pandas as pd
import pytest

from experiments import epochs
from tests.test_bad_input import call, check  # one line `error: ...`, exit 2


def _run(root, name, epochs_, seed, lam, kaggle, last, teacher="unet8", teacher_map=0.73):
    d = root / name
    d.mkdir(parents=True)
    cfg = {"arch": "unet", "base_filters": 4, "seed": seed, "lam": lam, "epochs": epochs_, "data": "d.npz"}
    if lam:
        cfg.update(temperature=2.0, scale="T", unlabelled=["d.npz"], teacher=["t.keras"] * (2 if "x2" in teacher else 1))
    (d / "config.json").write_text(json.dumps(cfg))
    met = {"val": {"mean_iou": 0.8, "salt_iou": 0.7, "kaggle_map": kaggle}, "val_last": {"kaggle_map": last}, "params": 1, "wall_s": 3600}
    if lam:
        met |= {"teacher": {"label": teacher, "val": {"kaggle_map": teacher_map}}, "temperature": 2.0}
    (d / "metrics.json").write_text(json.dumps(met))


@pytest.fixture
def dirs(tmp_path):
    a, b = tmp_path / "cpu", tmp_path / "cpu_e45"
    for s, (k15, k45) in enumerate([(0.66, 0.70), (0.68, 0.72)]):
        _run(a, f"unet4_baseline_s{s}", 15, s, 0, k15, k15 - 0.01)
        _run(b, f"unet4_baseline_s{s}", 45, s, 0, k45, k45 - 0.02)
        _run(a, f"unet4_from_unet8_T2_l0.9_sT_unl_s{s}", 15, s, 0.9, k15 + 0.03, k15 + 0.02)
    return a, b


def test_curve_per_config_and_budget(dirs, tmp_path):
    assert epochs.main([str(d) for d in dirs] + ["--out", str(tmp_path / "o")]) == 0
    t = pd.read_csv(tmp_path / "o" / "epochs.csv").set_index(["config", "epochs"])
    assert sorted(t.index) == [("unet4 KD T=2 lam=0.9 s=T +unl", 15), ("unet4 baseline", 15), ("unet4 baseline", 45)]
    b45 = t.loc[("unet4 baseline", 45)]
    assert b45.n_seeds == 2 and b45.kaggle_map == pytest.approx(0.71) and b45.kaggle_map_std == pytest.approx(np.std([0.70, 0.72], ddof=1))
    assert b45.kaggle_map_last == pytest.approx(0.69) and b45.wall_h == pytest.approx(1.0)
    assert t.loc[("unet4 KD T=2 lam=0.9 s=T +unl", 15)].kaggle_map == pytest.approx(0.70)
    assert (tmp_path / "o" / "epochs.png").stat().st_size > 1000


def test_longer_budget_paired_by_seed_with_the_shortest(tmp_path):
    """45 epochs against 15, same configuration, paired by seed on the same validation images: the mean per-image
    difference (seeds averaged first), an interval around it, seeds above; best and last epoch; unpaired seeds left out."""
    rng = np.random.default_rng(0)
    ids = [f"i{k}" for k in range(40)]
    a, b = tmp_path / "cpu", tmp_path / "cpu_e45"
    diffs, last_diffs = [], []
    for s in range(3):
        short, short_last = rng.integers(0, 11, 40) / 10, rng.integers(0, 11, 40) / 10
        long_, long_last = np.clip(short + rng.choice([0, 0.1, 0.2], 40), 0, 1), np.clip(short_last - 0.1 * (s == 1), 0, 1)
        for root, ep, best, last in ((a, 15, short, short_last), (b, 45, long_, long_last)):
            _run(root, f"unet4_baseline_s{s}", ep, s, 0, best.mean(), last.mean())
            m = json.loads((root / f"unet4_baseline_s{s}" / "metrics.json").read_text())
            m |= {"val_ids": ids, "val_kaggle_per_image": best.tolist(), "val_last_kaggle_per_image": last.tolist()}
            (root / f"unet4_baseline_s{s}" / "metrics.json").write_text(json.dumps(m))
        diffs.append(long_ - short)
        last_diffs.append(long_last - short_last)
    _run(b, "unet4_baseline_s7", 45, 7, 0, 0.9, 0.9)  # no 15-epoch run of seed 7: not paired
    t = epochs.curve(epochs.students([a, b])).set_index("epochs")
    r = t.loc[45]
    assert r.n_seeds == 4 and r.d_vs_shortest == pytest.approx(np.mean(diffs)) and r.d_lo < r.d_vs_shortest < r.d_hi
    assert r.seeds_above == 3 and r.d_hi < 0.2
    assert r.d_last_vs_shortest == pytest.approx(np.mean(last_diffs)) and r.seeds_above_last == 0
    assert np.isnan(t.loc[15].d_vs_shortest) and np.isnan(t.loc[15].seeds_above)


def test_bad_input(dirs, tmp_path, capsys):
    check(*call(epochs.main, [str(tmp_path / "nowhere")], capsys), "does not exist")
    empty = tmp_path / "empty"
    empty.mkdir()
    check(*call(epochs.main, [str(empty)], capsys), "no finished student runs")
    assert not (empty / "epochs").exists()
    epochs.main([str(dirs[0])])
    before = (dirs[0] / "epochs" / "epochs.csv").read_text()
    check(*call(epochs.main, [str(dirs[0])], capsys), "--overwrite")
    assert (dirs[0] / "epochs" / "epochs.csv").read_text() == before


def test_model_keeps_one_models_curve(dirs, tmp_path, capsys):
    _run(dirs[0], "lraspp4_baseline_s0", 15, 0, 0, 0.6, 0.6)
    (dirs[0] / "lraspp4_baseline_s0" / "config.json").write_text(
        json.dumps({"arch": "lraspp", "base_filters": 4, "seed": 0, "lam": 0, "epochs": 15, "data": "d.npz"})
    )
    assert epochs.main([str(d) for d in dirs] + ["--out", str(tmp_path / "o"), "--model", "unet4"]) == 0
    t = pd.read_csv(tmp_path / "o" / "epochs.csv")
    assert len(t) == 3 and all(c.startswith("unet4 ") for c in t.config)
    code, err = call(epochs.main, [str(d) for d in dirs] + ["--out", str(tmp_path / "p"), "--model", "sepunet8"], capsys)
    check(code, err, "the models here: lraspp4, unet4")
    assert not (tmp_path / "p").exists()


def test_unreadable_runs_are_named_not_dropped(dirs, tmp_path, capsys):
    """A run whose metrics.json is truncated: named with its reason on stderr, exit 1, the other runs tabled; the
    frontier's reader skips a metrics.json of {} instead of failing on it (it names it the same way)."""
    from experiments.frontier import read_runs

    cut = dirs[0] / "unet4_baseline_s1" / "metrics.json"
    cut.write_text(cut.read_text()[:30])
    assert epochs.main([str(d) for d in dirs] + ["--out", str(tmp_path / "o")]) == 1
    out = capsys.readouterr()
    assert f"unreadable run {cut.parent}: {cut}: not valid JSON" in out.err and "1 unreadable run(s) left out" in out.out
    empty = dirs[0] / "unet4_from_unet8_T2_l0.9_sT_unl_s0" / "metrics.json"
    empty.write_text("{}")
    students, _ = read_runs(dirs[0])
    assert sorted(students.run) == ["unet4_baseline_s0", "unet4_from_unet8_T2_l0.9_sT_unl_s1"]


def test_students_of_several_teachers_get_a_line_each_and_the_teacher_plot(dirs, tmp_path, capsys):
    """One recipe from three soft targets: unet8 (dir b), unet16 (dir u16; the same label as unet8's, so both become
    recipe <- teacher) and a flip-averaged unet8x2 ensemble (its own label): a line each, each with its soft target's
    score, teachers.png drawn. With one teacher no teachers.png is made."""
    a, b = dirs
    assert epochs.main([str(a), str(b), "--out", str(tmp_path / "one")]) == 0
    assert not (tmp_path / "one" / "teachers.png").exists()
    for s in (0, 1):
        _run(b, f"unet4_from_unet8_T2_l0.9_sT_unl_s{s}", 45, s, 0.9, 0.74, 0.73)
        _run(tmp_path / "u16", f"unet4_from_unet16_T2_l0.9_sT_unl_s{s}", 45, s, 0.9, 0.745, 0.74, "unet16", 0.755)
        _run(tmp_path / "ens", f"unet4_from_unet8x2_T2_l0.9_sT_unl_tta_s{s}", 45, s, 0.9, 0.75 + s / 100, 0.745, "unet8x2", 0.746)
        cfg = json.loads((tmp_path / "ens" / f"unet4_from_unet8x2_T2_l0.9_sT_unl_tta_s{s}" / "config.json").read_text())
        (tmp_path / "ens" / f"unet4_from_unet8x2_T2_l0.9_sT_unl_tta_s{s}" / "config.json").write_text(
            json.dumps({**cfg, "teacher_tta": True})
        )
    capsys.readouterr()
    assert epochs.main([str(d) for d in (a, b, tmp_path / "u16", tmp_path / "ens")] + ["--out", str(tmp_path / "o")]) == 0
    t = pd.read_csv(tmp_path / "o" / "epochs.csv").set_index(["config", "epochs"])
    recipe = "unet4 KD T=2 lam=0.9 s=T +unl"
    assert sorted(i for i in t.index if i[0] != "unet4 baseline") == [
        (f"{recipe} <- unet16", 45),
        (f"{recipe} <- unet8", 15),
        (f"{recipe} <- unet8", 45),
        (f"{recipe} ens2 +tta", 45),
    ]
    ens = t.loc[(f"{recipe} ens2 +tta", 45)]
    assert ens.teacher_kaggle_map == pytest.approx(0.746) and ens.kaggle_map == pytest.approx(0.755) and ens.recipe == recipe
    assert t.loc[(f"{recipe} <- unet16", 45)].teacher_kaggle_map == pytest.approx(0.755)
    assert t.loc[(f"{recipe} <- unet8", 45)].teacher_kaggle_map == pytest.approx(0.73)
    assert np.isnan(t.loc[("unet4 baseline", 45)].teacher_kaggle_map)
    assert (tmp_path / "o" / "teachers.png").stat().st_size > 1000 and "teachers.png" in capsys.readouterr().out
    # the plot's points are paired by seed: a third seed of unet16's students alone does not enter its point
    _run(tmp_path / "u16", "unet4_from_unet16_T2_l0.9_sT_unl_s2", 45, 2, 0.9, 0.80, 0.80, "unet16", 0.755)
    pts = epochs.teacher_points(epochs.students([b, tmp_path / "u16", tmp_path / "ens"])).set_index(["recipe", "epochs", "teacher"])
    u16, ens = pts.loc[(recipe, 45, "unet16")], pts.loc[(recipe, 45, "unet8x2")]
    assert u16.seeds == ens.seeds == "0 1" and u16.best == pytest.approx(0.745) and u16["last"] == pytest.approx(0.74)
    assert (
        ens.best == pytest.approx(0.755) and ens["std"] == pytest.approx(np.std([0.75, 0.76], ddof=1)) and ens.soft == pytest.approx(0.746)
    )
    assert epochs.teacher_points(epochs.students([b])).empty  # one teacher: nothing to set side by side
