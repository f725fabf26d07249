"""experiments.results: the paired bootstrap interval and the paired per-image differences, on numbers
whose answers are worked out by hand."""

import json

import numpy as np
import pandas as pd
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


def _run(tmp_path, name, ids, scores, last=None):
    d = tmp_path / name
    d.mkdir()
    m = {"val_ids": ids, "val_kaggle_per_image": scores} | ({"val_last_kaggle_per_image": last} if last is not None else {})
    (d / "metrics.json").write_text(json.dumps(m))
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


def test_last_epoch_differences_pair_the_last_epochs_scores(tmp_path):
    """d_kaggle_last / d_ref_last use the last epoch's per-image scores (no epoch picked on these images), paired by
    seed like the best-epoch ones; a config with one run lacking them (an older run) gets none, not a partial mean."""
    import pandas as pd

    from experiments.results import LAST, _paired_diff, format_summary, summarize

    base = _run(tmp_path, "b0", ["a", "b"], [0.5, 0.5], last=[0.5, 0.0])
    kd = _run(tmp_path, "k0", ["a", "b"], [1.0, 0.5], last=[0.0, 1.0])
    np.testing.assert_array_equal(_paired_diff(kd, base, LAST), [-0.5, 1.0])
    assert _paired_diff(kd, _run(tmp_path, "old", ["a", "b"], [0.5, 0.5]), LAST) is None

    def row(path, label, lam, seed=0):
        return {"path": str(path), "label": label, "kind": "student", "seed": seed, "lam": lam, "params": 1, "model": "unet4"} | {
            "mean_iou": 0.5,
            "kaggle_map": 0.5,
            "kaggle_map_last": 0.5,
            "base_filters": 4,
        }

    s = summarize(pd.DataFrame([row(base, "base", 0.0), row(kd, "kd", 0.9)]), reference="base").set_index("config")
    assert s.loc["kd", "d_kaggle"] == pytest.approx(0.25) and s.loc["kd", "d_kaggle_last"] == pytest.approx(0.25)
    assert (s.loc["kd", "d_kaggle_last_lo"], s.loc["kd", "d_kaggle_last_hi"]) == (-0.5, 1.0)
    assert s.loc["kd", "d_ref_last"] == pytest.approx(0.25)
    assert "+0.2500 [-0.5000,+1.0000]" in format_summary(s.reset_index())
    # seed 1's runs predate the last-epoch scores: the config gets its best-epoch difference, and no last-epoch one
    b1, k1 = _run(tmp_path, "b1", ["a", "b"], [0.5, 0.5]), _run(tmp_path, "k1", ["a", "b"], [1.0, 1.0])
    rows = [row(base, "base", 0.0), row(kd, "kd", 0.9), row(b1, "base", 0.0, 1), row(k1, "kd", 0.9, 1)]
    s = summarize(pd.DataFrame(rows)).set_index("config")
    assert s.loc["kd", "d_kaggle"] == pytest.approx(0.375)  # per image: seed 0 [+0.5, 0], seed 1 [+0.5, +0.5]
    assert "d_kaggle_last" not in s


def _counts(rng, n):
    """Per-image [tp, fp, fn, tn] of n random 101x101 predictions (some images empty)."""
    from metrics.segmentation import confusion_per_image

    true = rng.random((n, 101, 101)) < rng.random((n, 1, 1)) * (rng.random((n, 1, 1)) < 0.7)
    pred = true ^ (rng.random((n, 101, 101)) < 0.1 * rng.random((n, 1, 1)))
    return confusion_per_image(pred, true), pred, true


def test_pooled_mean_iou_from_counts_equals_score_masks():
    """Summed per-image counts give exactly score_masks' pooled mean IoU and salt IoU (the golden metric)."""
    from metrics.segmentation import pooled_iou, score_masks

    counts, pred, true = _counts(np.random.default_rng(1), 12)
    miou, salt = pooled_iou(counts.sum(axis=0))
    s = score_masks(pred, true)
    assert round(float(miou), 6) == s["mean_iou"] and round(float(salt), 6) == s["salt_iou"]
    assert counts.sum() == 12 * 101 * 101 and (counts >= 0).all()


def test_paired_mean_iou_is_pinned_to_a_seeded_numpy_bootstrap():
    """The paired mean-IoU interval is the one a plain loop gives: the same seeded index draws as bootstrap_ci, the
    pooled mean IoU of each resample of both runs of a seed, differences averaged over seeds, 2.5/97.5 percentiles."""
    from experiments.results import paired_mean_iou
    from metrics.segmentation import pooled_iou

    rng = np.random.default_rng(0)
    pairs = [(_counts(rng, 9)[0], _counts(rng, 9)[0]) for _ in range(3)]  # 3 seeds, 9 images
    got = paired_mean_iou(pairs, n=300, seed=5)
    idx = np.random.default_rng(5).integers(0, 9, (300, 9))
    boots = [np.mean([pooled_iou(a[i].sum(0))[0] - pooled_iou(b[i].sum(0))[0] for a, b in pairs]) for i in idx]
    per_seed = [pooled_iou(a.sum(0))[0] - pooled_iou(b.sum(0))[0] for a, b in pairs]
    assert got["d"] == pytest.approx(np.mean(per_seed), abs=1e-12)
    assert (got["lo"], got["hi"]) == pytest.approx(tuple(np.percentile(boots, [2.5, 97.5])), abs=1e-12)
    assert got["above"] == sum(d > 0 for d in per_seed)
    same = paired_mean_iou([(a, a) for a, _ in pairs])  # a run against itself: zero, with a zero-width interval
    assert (same["d"], same["lo"], same["hi"], same["above"]) == (0.0, 0.0, 0.0, 0)


def _full_run(tmp_path, name, cfg, ids, kaggle, counts, seed):
    d = tmp_path / name
    d.mkdir()
    c = np.asarray(counts).sum(0)
    from metrics.segmentation import pooled_iou

    miou, salt = pooled_iou(c)
    val = {"n_images": len(ids), "mean_iou": float(miou), "salt_iou": float(salt), "kaggle_map": float(np.mean(kaggle))}
    m = {"val": val, "val_ids": ids, "val_kaggle_per_image": kaggle, "val_counts_per_image": counts, "params": 10, "best_epoch": 1}
    (d / "metrics.json").write_text(json.dumps(m))
    (d / "config.json").write_text(json.dumps({"seed": seed, "base_filters": 4, "epochs": 2, **cfg}))
    return d


def test_results_pair_mean_iou_and_select_the_reference_by_fields(tmp_path, capsys):
    """experiments.results on run dirs with per-image counts: d mean IoU vs the baseline with its interval, the
    reference picked by fields (model=unet4,lam=0) equal to the one picked by label; ambiguous or unknown fields refused."""
    from common.cli import UserError
    from experiments.results import load_runs, main, reference_config, summarize
    from metrics.segmentation import pooled_iou

    ids = ["a", "b", "c"]
    base_c = [[10, 0, 10, 81], [0, 0, 0, 101], [5, 5, 5, 86]]
    kd_c = [[15, 2, 5, 79], [0, 1, 0, 100], [8, 2, 2, 89]]
    kd = {"lam": 0.9, "teacher": ["t.keras"], "temperature": 2.0, "scale": "T"}
    for seed in (0, 1):
        _full_run(tmp_path, f"unet4_baseline_s{seed}", {"lam": 0.0}, ids, [0.5, 1.0, 0.5], base_c, seed)
        _full_run(tmp_path, f"unet4_from_t_T2_l0.9_sT_s{seed}", kd, ids, [0.7, 0.0, 0.6], kd_c, seed)
    df = load_runs(tmp_path)
    assert reference_config(df, "model=unet4,lam=0") == "unet4 baseline" == reference_config(df, "unet4 baseline")
    with pytest.raises(UserError, match="2 configs"):
        reference_config(df, "model=unet4")
    with pytest.raises(UserError, match="not a column"):
        reference_config(df, "modle=unet4")
    with pytest.raises(UserError, match="no config"):
        reference_config(df, "model=unet4,lam=0.5")
    s = summarize(df, "unet4 baseline").set_index("config")
    want = pooled_iou(np.sum(kd_c, 0))[0] - pooled_iou(np.sum(base_c, 0))[0]
    row = s.loc["unet4 KD T=2 lam=0.9 s=T"]
    assert row["d_miou"] == pytest.approx(want) and row["d_ref_miou"] == pytest.approx(want)
    assert row["d_miou_lo"] <= row["d_miou"] <= row["d_miou_hi"] and row["miou_seeds_positive"] == 2
    assert row["d_kaggle"] == pytest.approx((0.2 - 1.0 + 0.1) / 3)
    assert main([str(tmp_path), "--reference", "model=unet4,lam=0"]) == 0
    out = capsys.readouterr().out
    # the reference is the KD config's own baseline: its pairs are printed once, in the baseline block
    assert f"{want:+.4f}" in out and out.count("paired by seed") == 1 and "vs the baseline" in out
    assert main([str(tmp_path), "--reference", "model=unet4,lam=0.9"]) == 0  # a reference that is not a baseline
    assert "vs the reference" in capsys.readouterr().out


def test_results_report_unreadable_runs(tmp_path, capsys):
    """A run whose metrics.json is truncated or holds no scores is named with its reason and exit 1, not dropped."""
    from experiments.results import main

    ids = ["a"]
    _full_run(tmp_path, "unet4_baseline_s0", {"lam": 0.0}, ids, [1.0], [[0, 0, 0, 101]], 0)
    cut = _full_run(tmp_path, "unet4_baseline_s1", {"lam": 0.0}, ids, [1.0], [[0, 0, 0, 101]], 1)
    (cut / "metrics.json").write_text((cut / "metrics.json").read_text()[:20])
    empty = _full_run(tmp_path, "unet4_baseline_s2", {"lam": 0.0}, ids, [1.0], [[0, 0, 0, 101]], 2)
    (empty / "metrics.json").write_text("{}")
    assert main([str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"unreadable run {cut}" in err and "truncated" in err
    assert f"unreadable run {empty}" in err and "no validation scores" in err
    assert "unreadable run" in (tmp_path / "summary.txt").read_text()


def test_students_of_two_single_teachers_are_two_configs(tmp_path):
    """A label names an ensemble but not which single teacher: where unet8's and unet16's students of one recipe meet
    (one sweep dir, or experiments.epochs over several), each is its own config, recipe <- teacher, and the
    reference can be picked by the teacher field."""
    import pandas as pd

    from experiments.results import config_labels, reference_config, summarize

    recipe = "unet4 KD T=2 lam=0.9 s=T +unl"
    rows = [
        {"label": "unet4 baseline", "recipe": "unet4 baseline", "teacher": "", "lam": 0.0},
        {"label": recipe, "recipe": recipe, "teacher": "unet8", "lam": 0.9},
        {"label": recipe, "recipe": recipe, "teacher": "unet16", "lam": 0.9},
        {"label": f"{recipe} ens2", "recipe": recipe, "teacher": "unet8x2", "lam": 0.9},
    ]
    df = pd.DataFrame(
        [
            {
                **r,
                "kind": "student",
                "seed": 0,
                "params": 1,
                "model": "unet4",
                "base_filters": 4,
                "path": str(_run(tmp_path, f"p{i}", ["a", "b"], [0.5, 0.5 + i / 10])),
                "mean_iou": 0.8,
                "kaggle_map": 0.7,
            }
            for i, r in enumerate(rows)
        ]
    )
    # the ensemble's label names it: it keeps its label, as every run does where a label holds one teacher
    assert list(config_labels(df)) == ["unet4 baseline", f"{recipe} <- unet8", f"{recipe} <- unet16", f"{recipe} ens2"]
    assert list(config_labels(df[df.teacher != "unet16"])) == ["unet4 baseline", recipe, f"{recipe} ens2"]
    assert len(summarize(df)) == 4 and reference_config(df, "teacher=unet16") == f"{recipe} <- unet16"


def test_several_sweeps_read_as_one_pair_across_them(tmp_path, capsys):
    """experiments.results A B --out C: the runs of both sweeps in one table in C (neither sweep's tables touched), a
    config of one sweep paired by seed with the reference config of the other; the same recipe at two --epochs is two
    configs ("... epochs=N"), never pooled; several dirs without --out, or a missing dir, are one-line errors."""
    from common.cli import UserError
    from experiments.results import main

    ids = ["a", "b"]
    kd = {"lam": 0.9, "teacher": ["t.keras"], "temperature": 2.0, "scale": "T"}
    short, long = tmp_path / "e15", tmp_path / "e45"
    short.mkdir(), long.mkdir()
    for seed in (0, 1):
        _full_run(short, f"unet4_baseline_s{seed}", {"lam": 0.0}, ids, [0.5, 0.5], [[5, 5, 5, 86]] * 2, seed)
        _full_run(long, f"unet4_baseline_s{seed}", {"lam": 0.0, "epochs": 4}, ids, [0.5, 1.0], [[5, 5, 5, 86]] * 2, seed)
        _full_run(long, f"unet4_from_t_T2_l0.9_sT_s{seed}", {**kd, "epochs": 4}, ids, [1.0, 1.0], [[8, 2, 2, 89]] * 2, seed)
    assert main([str(short), str(long), "--out", str(tmp_path / "both"), "--reference", "unet4 baseline epochs=2"]) == 0
    out = capsys.readouterr().out
    s = pd.read_csv(tmp_path / "both" / "summary.csv").set_index("config")
    assert set(s.index) == {"unet4 baseline epochs=2", "unet4 baseline epochs=4", "unet4 KD T=2 lam=0.9 s=T"}
    assert s.loc["unet4 baseline epochs=4", "d_ref"] == pytest.approx(0.25)  # (0 + 0.5) / 2 per image, both seeds
    assert s.loc["unet4 KD T=2 lam=0.9 s=T", "d_ref"] == pytest.approx(0.5)
    assert s.loc["unet4 KD T=2 lam=0.9 s=T", "d_kaggle"] == pytest.approx(0.25)  # vs its own (45-epoch) baseline
    assert "unet4 baseline epochs=4" in out and not (short / "summary.csv").exists() and not (long / "summary.csv").exists()
    with pytest.raises(UserError, match="--out"):
        main([str(short), str(long)])
    with pytest.raises(UserError, match="not a folder of run dirs"):
        main([str(short), str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")])


def test_one_recipe_on_two_backends_and_precisions_is_four_configs(tmp_path):
    """The torch runs in one sweep, the TensorFlow ones in another (same run names): read together, each backend is its
    own config ("... backend=tensorflow"), bfloat16 runs are their own ("+bf16"), each pairs by seed with the torch
    float32 reference, and picking the reference by its backend works."""
    from experiments.results import main

    ids = ["a", "b"]
    kd = {"lam": 0.9, "teacher": ["t.keras"], "temperature": 2.0, "scale": "T"}
    dirs = {"torch": tmp_path / "pt", "tensorflow": tmp_path / "tf"}
    for i, (backend, d) in enumerate(dirs.items()):
        d.mkdir()
        for seed in (0, 1):
            env = {"environment": {"backend": backend}}
            _full_run(d, f"unet4_from_t_T2_l0.9_sT_s{seed}", {**kd, **env}, ids, [0.5, 0.5 + i / 2], [[5, 5, 5, 86]] * 2, seed)
            bf16 = {**kd, **env, "precision": "mixed_bfloat16"}
            _full_run(d, f"unet4_from_t_T2_l0.9_sT_bf16_s{seed}", bf16, ids, [0.5 + i / 4, 0.5], [[5, 5, 5, 86]] * 2, seed)
    ref = "backend=torch,precision=float32"
    assert main([str(dirs["torch"]), str(dirs["tensorflow"]), "--out", str(tmp_path / "both"), "--reference", ref]) == 0
    s = pd.read_csv(tmp_path / "both" / "summary.csv").set_index("config")
    label = "unet4 KD T=2 lam=0.9 s=T"
    assert set(s.index) == {f"{label} backend={b}" for b in dirs} | {f"{label} +bf16 backend={b}" for b in dirs}
    assert s.loc[f"{label} backend=tensorflow", "d_ref"] == pytest.approx(0.25)  # image b: +0.5, both seeds
    assert s.loc[f"{label} +bf16 backend=tensorflow", "d_ref"] == pytest.approx(0.125)
    assert s.loc[f"{label} +bf16 backend=torch", "d_ref"] == pytest.approx(0.0)
