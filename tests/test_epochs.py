"""experiments.epochs: the Kaggle mAP curve over training budgets, from hand-made run dirs."""

import json

import numpy as np
import pandas as pd
import pytest

from experiments import epochs
from tests.test_bad_input import call, check  # one line `error: ...`, exit 2


def _run(root, name, epochs_, seed, lam, kaggle, last):
    d = root / name
    d.mkdir(parents=True)
    cfg = {"arch": "unet", "base_filters": 4, "seed": seed, "lam": lam, "epochs": epochs_, "data": "d.npz"}
    if lam:
        cfg.update(temperature=2.0, scale="T", unlabelled=["d.npz"], teacher=["t.keras"])
    (d / "config.json").write_text(json.dumps(cfg))
    met = {"val": {"mean_iou": 0.8, "salt_iou": 0.7, "kaggle_map": kaggle}, "val_last": {"kaggle_map": last}, "params": 1, "wall_s": 3600}
    if lam:
        met |= {"teacher": {"label": "unet8"}, "temperature": 2.0}
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
