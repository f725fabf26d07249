"""experiments.results: the paired bootstrap interval and the paired per-image differences, on numbers
whose answers are worked out by hand."""

import json

import numpy as np
import pytest

from experiments.results import _paired_diff, bootstrap_ci


@pytest.mark.parametrize("diff", [[0.25] * 7, [-0.5], [0.0] * 3])
def test_bootstrap_ci_of_a_constant_is_that_constant(diff):
    """Every resample of a constant vector has that mean, so both ends are the constant, exactly."""
    c = diff[0]
    assert bootstrap_ci(np.array(diff)) == (c, c)
    assert bootstrap_ci(np.array(diff), n=5, seed=3) == (c, c)


def test_bootstrap_ci_of_zero_one_is_zero_to_one():
    """Resamples of [0, 1] have means 0, 0.5 or 1 with chances 1/4, 1/2, 1/4: with 2000 resamples about
    500 are 0 and 500 are 1, far more than the 2.5% (50) at each end, so the interval is [0, 1]."""
    draws = np.random.default_rng(0).integers(0, 2, (2000, 2))  # the resampled indices for seed 0
    means = draws.mean(axis=1)
    assert set(means) == {0.0, 0.5, 1.0}
    assert (means == 0).sum() > 51 and (means == 1).sum() > 51
    assert bootstrap_ci(np.array([0.0, 1.0])) == (0.0, 1.0)
    assert bootstrap_ci(np.array([0.0, 1.0]), n=2000, seed=7) == (0.0, 1.0)


def test_bootstrap_ci_interpolates_between_resample_means():
    """n = 4 resamples of [0, 1]: sorted means m0 <= m1 <= m2 <= m3; numpy's linear percentile puts
    2.5% at m0 + 0.075 (m1 - m0) and 97.5% at m2 + 0.925 (m3 - m2)."""
    for seed in range(5):
        m = np.sort(np.random.default_rng(seed).integers(0, 2, (4, 2)).mean(axis=1))
        lo, hi = bootstrap_ci(np.array([0.0, 1.0]), n=4, seed=seed)
        assert lo == pytest.approx(m[0] + 0.075 * (m[1] - m[0]), abs=1e-12)
        assert hi == pytest.approx(m[2] + 0.925 * (m[3] - m[2]), abs=1e-12)


def test_bootstrap_ci_shifts_and_scales_with_the_data():
    """The same seed resamples the same indices: diff + 1 moves both ends by 1, 2 * diff doubles them."""
    diff = np.array([0.0, 0.5, -0.25, 1.0, 0.75, -1.0])
    lo, hi = bootstrap_ci(diff)
    assert min(diff) <= lo <= diff.mean() <= hi <= max(diff) and lo < hi
    assert bootstrap_ci(diff + 1.0) == pytest.approx((lo + 1.0, hi + 1.0), abs=1e-12)
    assert bootstrap_ci(2.0 * diff) == pytest.approx((2.0 * lo, 2.0 * hi), abs=1e-12)
    assert bootstrap_ci(-diff) == pytest.approx((-hi, -lo), abs=1e-12)
    assert bootstrap_ci(diff) == (lo, hi)  # deterministic for a fixed seed


def _run(tmp_path, name, ids, scores):
    d = tmp_path / name
    d.mkdir()
    (d / "metrics.json").write_text(json.dumps({"val_ids": ids, "val_kaggle_per_image": scores}))
    return d


def test_paired_diff(tmp_path):
    base = _run(tmp_path, "base", ["a", "b", "c"], [0.5, 0.5, 1.0])
    kd = _run(tmp_path, "kd", ["a", "b", "c"], [1.0, 0.5, 0.0])
    np.testing.assert_array_equal(_paired_diff(kd, base), [0.5, 0.0, -1.0])
    np.testing.assert_array_equal(_paired_diff(base, kd), [-0.5, 0.0, 1.0])
    # not the same validation images (other ids, another order, fewer): no paired difference
    assert _paired_diff(_run(tmp_path, "other", ["a", "b", "d"], [1.0, 0.5, 0.0]), base) is None
    assert _paired_diff(_run(tmp_path, "order", ["c", "b", "a"], [0.0, 0.5, 1.0]), base) is None
    assert _paired_diff(_run(tmp_path, "fewer", ["a", "b"], [1.0, 0.5]), base) is None


def test_reference_pairs_each_config_by_seed_with_the_reference_config(tmp_path):
    """--reference: d_ref is the mean per-image difference against the reference config's run of the same seed."""
    import pandas as pd

    from experiments.results import summarize

    rows = []
    for config, scores in (("ref", [[0.5, 0.5], [0.0, 1.0]]), ("more", [[1.0, 0.5], [0.0, 0.0]])):
        for seed, sc in enumerate(scores):
            d = _run(tmp_path, f"{config}{seed}", ["a", "b"], sc)
            rows.append(
                {"path": str(d), "label": config, "kind": "student", "seed": seed, "lam": 0.9, "params": 1, "model": "unet4"}
                | {"mean_iou": 0.5, "kaggle_map": float(np.mean(sc)), "kaggle_map_last": np.nan, "base_filters": 4}
            )
    s = summarize(pd.DataFrame(rows), reference="ref").set_index("config")
    # seed 0: [+0.5, 0], seed 1: [0, -1]; averaged over seeds per image: [+0.25, -0.5] -> mean -0.125
    assert s.loc["more", "d_ref"] == pytest.approx(-0.125)
    assert s.loc["more", "d_ref_lo"] == pytest.approx(-0.5) and s.loc["more", "d_ref_hi"] == pytest.approx(0.25)
    assert s.loc["more", "ref_seeds_above"] == 1 and s.loc["more", "n_ref_pairs"] == 2
    assert np.isnan(s.loc["ref", "d_ref"])  # no pairing with itself
