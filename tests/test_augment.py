"""Strong augmentation and mixup (data.augment, --augment strong, --mixup): the flip path unchanged byte for byte,
seeded draws, images and masks warped together, mixup on unlabelled rows only, the teacher cache refused, a tiny run."""

import json

import numpy as np
import pytest

from tests.conftest import cli

S = 128


def blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n smooth salt-like masks (101x101, 20-80 % salt) and images that are the masks in grey levels (0 / 255)."""
    from pi.tgs_common import resize_bilinear

    rng = np.random.default_rng(seed)
    field = resize_bilinear(rng.random((n, 6, 6)), (101, 101))
    masks = field > np.quantile(field, rng.uniform(0.2, 0.8, n), axis=(1, 2)).diagonal()[:, None, None]
    return (masks * 255).astype(np.uint8), masks


def padded(n: int, seed: int, n_unlabelled: int = 0):
    """Reflect-padded (128x128) uint8 images and 0/1 masks as training.runs.batches makes them, plus unlabelled images."""
    from data.pipeline import prep_images_unscaled, prep_masks
    from pi.sidecar import make_spec

    spec = make_spec(S)
    images, masks = blobs(n + n_unlabelled, seed)
    x, y = prep_images_unscaled(images[:n], spec), prep_masks(masks[:n], spec)
    ux = prep_images_unscaled(images[n:], spec) if n_unlabelled else None
    return x, y, ux


def old_batch(x, y, ux, seed, epoch, i, batch_size, n_unlabelled):
    """The batches of earlier versions (flips only), written out plainly: what augment="flip" must still give."""
    rng = np.random.default_rng([seed, epoch])
    perm, uperm = rng.permutation(len(x)), rng.permutation(len(ux))
    idx = np.sort(perm[i * batch_size : (i + 1) * batch_size])
    uidx = np.sort(np.take(uperm, np.arange(i * n_unlabelled, (i + 1) * n_unlabelled) % len(ux)))
    flips = np.random.default_rng([seed, epoch, i]).random(len(idx) + len(uidx)) < 0.5
    xb = np.concatenate([x[idx], ux[uidx]])
    yb = np.concatenate([y[idx].astype(np.int8), np.full((len(uidx),) + y.shape[1:], -1, np.int8)])
    xb[flips], yb[flips] = xb[flips][:, :, ::-1], yb[flips][:, :, ::-1]
    return xb, yb


def test_flip_path_gives_the_batches_of_earlier_versions_byte_for_byte():
    from data.pipeline import Batches

    x, y, ux = padded(40, 0, 12)
    default = Batches(x, y, 16, seed=3, unlabelled_x=ux, n_unlabelled=4)
    flip = Batches(x, y, 16, seed=3, unlabelled_x=ux, n_unlabelled=4, augment="flip", mixup=0.0)
    for epoch in range(2):
        for i in range(len(flip)):
            want_x, want_y = old_batch(x, y, ux, 3, epoch, i, 16, 4)
            for b in (default, flip):
                feed, _ = b[i]
                assert feed["image"].dtype == np.uint8 and feed["mask"].dtype == np.int8
                assert feed["image"].tobytes() == want_x.tobytes() and feed["mask"].tobytes() == want_y.tobytes(), (epoch, i)
        default.on_epoch_end()
        flip.on_epoch_end()


def test_strong_augmentation_is_seeded_changes_images_and_keeps_masks_binary():
    from data.pipeline import Batches

    x, y, ux = padded(48, 1, 12)
    kw = dict(batch_size=16, unlabelled_x=ux, n_unlabelled=4, augment="strong")
    a, b, other = Batches(x, y, seed=5, **kw), Batches(x, y, seed=5, **kw), Batches(x, y, seed=6, **kw)
    plain = Batches(x, y, 16, seed=5, unlabelled_x=ux, n_unlabelled=4)
    for i in range(len(a)):
        fa, fb, fo, fp = a[i][0], b[i][0], other[i][0], plain[i][0]
        assert fa["image"].tobytes() == fb["image"].tobytes() and fa["mask"].tobytes() == fb["mask"].tobytes()  # seeded
        assert fa["image"].tobytes() != fo["image"].tobytes()  # another seed, other views
        assert fa["image"].shape == fp["image"].shape == (20, S, S, 1) and fa["image"].dtype == np.float32
        assert fa["mask"].shape == fp["mask"].shape and fa["mask"].dtype == np.int8
        changed = np.abs(fa["image"] - fp["image"].astype(np.float32)).reshape(20, -1).max(axis=1)
        assert (changed > 10).all()  # every image moved or changed its grey levels (same rows, same flips as `plain`)
        assert 0 <= fa["image"].min() and fa["image"].max() <= 255
        assert set(np.unique(fa["mask"][:16])) <= {0, 1} and (fa["mask"][16:] == -1).all()
    a.on_epoch_end()
    assert a[0][0]["image"].tobytes() != b[0][0]["image"].tobytes()  # a new epoch draws new views


def test_image_and_mask_move_together():
    """Images are their masks in grey levels; after warp and jitter each mask is still its image above mid-grey."""
    from data.pipeline import Batches

    x, y, _ = padded(32, 2)
    feed, _ = Batches(x, y, 32, seed=0, augment="strong")[0]
    img, mask = feed["image"][..., 0], feed["mask"][..., 0]
    lo, hi = img.min(axis=(1, 2), keepdims=True), img.max(axis=(1, 2), keepdims=True)
    assert (hi - lo > 100).all()  # every image holds salt and sediment
    wrong = ((img >= (lo + hi) / 2) != (mask == 1)).mean(axis=(1, 2))
    assert wrong.max() < 0.01, wrong.max()  # bilinear boundary pixels only (a mask warped apart would be ~10-50 % off)
    # and the masks did move: not the flipped-only masks
    plain, _ = Batches(x, y, 32, seed=0)[0]
    assert (plain["mask"] != feed["mask"]).mean() > 0.02


def test_shift_is_reflect_padding_then_crop_and_zoom_keeps_the_centre():
    from data.augment import source_coords, warp

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (3, S, S)).astype(np.uint8)
    dy, dx = np.array([0.0, 7.0, -12.0]), np.array([0.0, -3.0, 12.0])
    out = warp(a, source_coords(S, np.ones(3), dy), source_coords(S, np.ones(3), dx))
    for k in range(3):  # integer shifts copy pixels: numpy reflect padding by 12, cropped at the shift
        ref = np.pad(a[k], 12, mode="reflect")[12 + int(dy[k]) : 12 + int(dy[k]) + S, 12 + int(dx[k]) : 12 + int(dx[k]) + S]
        np.testing.assert_array_equal(out[k], ref.astype(np.float32))
    ramp = np.broadcast_to(np.arange(S, dtype=np.float32), (2, S, S))  # value = column
    z = np.array([0.9, 1.1])
    zoomed = warp(ramp, source_coords(S, z, np.zeros(2)), source_coords(S, z, np.zeros(2)))
    c = (S - 1) / 2
    inner = slice(8, S - 8)  # sources inside the frame: bilinear is exact on a ramp
    for k in range(2):
        np.testing.assert_allclose(zoomed[k, :, inner], np.broadcast_to(c + (np.arange(S)[inner] - c) / z[k], (S, S - 16)), atol=1e-4)
    assert zoomed[0, 0, 0] == zoomed[0, 0, 0] and zoomed[0].min() >= 0 and zoomed[0].max() <= S - 1  # zoom out reflects, no NaN


def test_mixup_mixes_unlabelled_rows_only_with_weights_in_0_1():
    from data.augment import mixup
    from data.pipeline import Batches

    rng = np.random.default_rng(0)
    xb = rng.integers(0, 256, (12, 8, 8, 1)).astype(np.uint8)
    mixed, w, partner = mixup(xb, 8, 0.4, np.random.default_rng(1))
    assert ((0 <= w) & (w <= 1)).all() and w.shape == (4,)
    assert ((partner >= 8) & (partner < 12) & (partner != np.arange(8, 12))).all()
    np.testing.assert_array_equal(mixed[:8], xb[:8])
    np.testing.assert_allclose(mixed[8:], w[:, None, None, None] * xb[8:] + (1 - w[:, None, None, None]) * xb[partner], rtol=1e-6)
    assert xb.dtype == np.uint8  # the caller's batch is untouched

    x, y, ux = padded(32, 3, 16)
    plain = Batches(x, y, 16, seed=2, unlabelled_x=ux, n_unlabelled=6)
    mix = Batches(x, y, 16, seed=2, unlabelled_x=ux, n_unlabelled=6, mixup=0.4)
    for i in range(len(mix)):
        fp, fm = plain[i][0], mix[i][0]
        assert fm["image"][:16].tobytes() == fp["image"][:16].astype(np.float32).tobytes()  # labelled rows as before
        assert fm["mask"].tobytes() == fp["mask"].tobytes()  # masks untouched (-1: soft term only)
        u, m = fp["image"][16:, ..., 0].astype(np.float64), fm["image"][16:, ..., 0].astype(np.float64)
        assert not np.array_equal(u, m)
        for k in range(6):  # each mixed row is w * own + (1 - w) * another unlabelled row of the batch, w in [0, 1]
            fits = []
            for p in set(range(6)) - {k}:
                d = u[k] - u[p]
                wk = float((d * (m[k] - u[p])).sum() / (d * d).sum())
                fits.append((np.abs(wk * u[k] + (1 - wk) * u[p] - m[k]).max(), wk))
            err, wk = min(fits)
            assert err < 1e-3 and -1e-6 <= wk <= 1 + 1e-6, (i, k, err, wk)


def test_batches_refuse_cached_logits_with_strong_augmentation_or_mixup():
    from data.pipeline import Batches

    x, y, ux = padded(8, 4, 4)
    t = np.zeros((8, 2, S, S, 1), np.float16)
    Batches(x, y, 4, t=t)  # flips with a cache: as before
    for kw in ({"augment": "strong"}, {"mixup": 0.2, "unlabelled_x": ux, "n_unlabelled": 2, "unlabelled_t": t[:4]}):
        with pytest.raises(ValueError, match="teacher in the graph"):
            Batches(x, y, 4, t=t, **kw)
    with pytest.raises(ValueError, match="augment"):
        Batches(x, y, 4, augment="rotate")


@pytest.mark.parametrize(
    "extra, needle",
    [
        (
            ["--teacher", "t.keras", "--teacher-cache", "cache", "--augment", "strong"],
            "--augment strong needs the teacher in the graph (a cache holds only the image and its flip); drop --teacher-cache",
        ),
        (
            ["--teacher", "t.keras", "--teacher-cache", "cache", "--unlabelled", "u", "--mixup", "0.2"],
            "--mixup needs the teacher in the graph (a cache holds only the image and its flip); drop --teacher-cache",
        ),
        (["--teacher", "t.keras", "--augment", "rotate"], "--augment 'rotate' must be one of flip, strong"),
        (["--teacher", "t.keras", "--unlabelled", "u", "--mixup", "-1"], "--mixup must be a finite number >= 0"),
        (["--teacher", "t.keras", "--mixup", "0.2"], "--mixup mixes pairs of unlabelled images: it needs --unlabelled"),
        (["--teacher", "t.keras", "--unlabelled", "u", "--n-unlabelled", "1", "--mixup", "0.2"], "--n-unlabelled >= 2"),
    ],
)
def test_distill_train_refuses_inconsistent_teaching(synth_dir, tmp_path, capsys, extra, needle):
    from distill_train import main
    from tests.test_bad_input import call, check

    out = tmp_path / "run"
    code, err = call(main, ["--data", str(synth_dir), "--out", str(out), *extra], capsys)
    check(code, err, needle)
    assert not out.exists()


def test_run_names_say_strong_augmentation_and_mixup():
    from training.naming import RunSpec

    kd = {"base_filters": 4, "lam": 0.9, "temperature": 2.0, "scale": "T", "seed": 0}
    assert RunSpec.from_config({**kd, "augment": "flip", "mixup": 0.0}, "unet8").name == "unet4_from_unet8_T2_l0.9_sT_s0"
    assert RunSpec.from_config({**kd, "augment": "strong"}, "unet8").name == "unet4_from_unet8_T2_l0.9_sT_aug_s0"
    unl = RunSpec.from_config({**kd, "unlabelled": True, "augment": "strong", "mixup": 0.2}, "unet8")
    assert unl.name == "unet4_from_unet8_T2_l0.9_sT_unl_aug_mix0.2_s0" and unl.label.endswith("+unl +aug +mixup0.2")
    base = RunSpec.from_config({**kd, "lam": 0, "augment": "strong"})
    assert base.name == "unet4_baseline_aug_s0" and base.label == "unet4 baseline +aug"


def test_sweep_options_augment_and_mixup(tmp_path):
    """Baselines keep "augment" and drop "mixup"; augmented runs put the teacher in the graph (no --teacher-cache)."""
    from common.cli import UserError
    from experiments.sweep import parse_args, plan, student_runs

    cfg = {
        "name": "a",
        "data": "synthetic",
        "teacher": {"base_filters": 4},
        "teacher_cache": True,
        "seeds": [0],
        "grid": {"lam": [0, 0.9], "unlabelled": [True], "options": [{}, {"augment": "strong", "mixup": 0.2}]},
    }
    names = [r.name for r in student_runs(cfg, "unet4")]
    assert names == [
        "unet4_baseline_s0",
        "unet4_baseline_aug_s0",
        "unet4_from_unet4_T2_l0.9_sT_unl_s0",
        "unet4_from_unet4_T2_l0.9_sT_unl_aug_mix0.2_s0",
    ]
    (tmp_path / "a.json").write_text(json.dumps(cfg))
    jobs = {j.name: " ".join(j.cmd) for j in plan(cfg, parse_args(["--config", str(tmp_path / "a.json"), "--out", str(tmp_path / "x")]))}
    assert "--augment strong" in jobs["unet4_baseline_aug_s0"] and "--mixup" not in jobs["unet4_baseline_aug_s0"]
    aug = jobs["unet4_from_unet4_T2_l0.9_sT_unl_aug_mix0.2_s0"]
    assert "--augment strong --mixup 0.2" in aug and "--teacher-cache" not in aug and "--teacher " in aug
    assert "--teacher-cache" in jobs["unet4_from_unet4_T2_l0.9_sT_unl_s0"] and "--augment" not in jobs["unet4_from_unet4_T2_l0.9_sT_unl_s0"]
    with pytest.raises(UserError, match="blackbox"):
        student_runs({**cfg, "grid": {"blackbox": ["mirrored"], "options": [{"augment": "strong"}]}}, "unet4")
    with pytest.raises(UserError, match="augment"):
        student_runs({**cfg, "grid": {"options": [{"augment": "rotate"}]}}, "unet4")


def test_tiny_run_with_strong_augmentation_mixup_and_the_teacher_in_the_graph(synth_dir, tmp_path):
    from models.unet import build_unet

    build_unet((104, 104, 1), 2, 3).save(tmp_path / "teacher.keras")
    out = tmp_path / "run"
    cli(
        "distill_train.py",
        "--data",
        synth_dir,
        "--teacher",
        tmp_path / "teacher.keras",
        "--augment",
        "strong",
        "--unlabelled",
        synth_dir / "test" / "images",
        "--n-unlabelled",
        "4",
        "--mixup",
        "0.4",
        "--max-train",
        "32",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--base-filters",
        "2",
        "--depth",
        "3",
        "--input-size",
        "104",
        "--out",
        out,
        env={"OMP_NUM_THREADS": "1"},
    )
    cfg, met = json.loads((out / "config.json").read_text()), json.loads((out / "metrics.json").read_text())
    assert cfg["augment"] == "strong" and cfg["mixup"] == 0.4
    assert met["label"].endswith(" +aug +mixup0.4") and met["teacher"]["kind"] == "model"
    assert (out / "student.keras").exists()


def test_results_pair_a_run_with_the_baseline_of_the_same_augmentation(tmp_path):
    """With a flip baseline and a strong baseline of the same seed, each KD run's paired d is against its own kind."""
    import pandas as pd

    from experiments.results import summarize

    rows = []
    for label, lam, augment, scores in (
        ("base", 0.0, "flip", [0.5, 0.5]),
        ("base aug", 0.0, "strong", [0.0, 0.0]),
        ("kd", 0.9, "flip", [1.0, 0.5]),
        ("kd aug", 0.9, "strong", [1.0, 0.5]),
    ):
        d = tmp_path / label.replace(" ", "_")
        d.mkdir()
        (d / "metrics.json").write_text(json.dumps({"val_ids": ["a", "b"], "val_kaggle_per_image": scores}))
        rows.append(
            {"path": str(d), "label": label, "kind": "student", "seed": 0, "lam": lam, "params": 1, "model": "unet4", "augment": augment}
            | {"mean_iou": 0.5, "kaggle_map": float(np.mean(scores)), "kaggle_map_last": np.nan, "base_filters": 4, "arch": "unet"}
        )
    s = summarize(pd.DataFrame(rows)).set_index("config")
    assert s.loc["kd", "d_kaggle"] == pytest.approx(0.25) and s.loc["kd aug", "d_kaggle"] == pytest.approx(0.75)
