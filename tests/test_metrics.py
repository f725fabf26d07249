import numpy as np

from metrics.segmentation import kaggle_per_image, score_masks


def _mask(cells):
    m = np.zeros((101, 101), bool)
    for r0, r1, c0, c1 in cells:
        m[r0:r1, c0:c1] = True
    return m


def test_kaggle_edge_cases():
    empty, full = np.zeros((101, 101), bool), np.ones((101, 101), bool)
    s = kaggle_per_image(np.stack([empty, empty, full]), np.stack([empty, full, empty]))
    assert s.tolist() == [1.0, 0.0, 0.0]


def test_kaggle_thresholds_on_hand_made_iou():
    true = _mask([(0, 10, 0, 10)])  # 100 pixels
    pred = _mask([(0, 10, 0, 6)])  # 60 pixels inside: IoU = 0.6
    # IoU 0.6 beats t = 0.50, 0.55 only: 2 of 10 thresholds
    assert kaggle_per_image(pred[None], true[None])[0] == 0.2
    pred = _mask([(0, 10, 0, 10), (50, 51, 0, 5)])  # 105 pixels, IoU = 100/105 = 0.952: all 10
    assert kaggle_per_image(pred[None], true[None])[0] == 1.0
    pred = _mask([(0, 10, 0, 7)])  # IoU 0.7 exactly is not > 0.7: 0.5..0.65 -> 4 of 10
    assert kaggle_per_image(pred[None], true[None])[0] == 0.4


def test_mean_iou_two_classes_over_all_pixels():
    true = np.stack([_mask([(0, 10, 0, 10)]), np.zeros((101, 101), bool)])
    pred = np.stack([_mask([(0, 10, 0, 5)]), _mask([(0, 10, 0, 5)])])
    tp, fp, fn = 50, 50, 50
    tn = 2 * 101 * 101 - tp - fp - fn
    r = score_masks(pred, true)
    assert r["n_images"] == 2
    assert np.isclose(r["salt_iou"], tp / (tp + fp + fn), atol=1e-6)
    assert np.isclose(r["mean_iou"], (tp / (tp + fp + fn) + tn / (tn + fp + fn)) / 2, atol=1e-6)
    assert r["kaggle_map"] == 0.0  # image 1: IoU 1/3; image 2: salt predicted on an empty image


def test_all_empty_set_is_perfect():
    z = np.zeros((3, 101, 101), bool)
    r = score_masks(z, z)
    assert r["mean_iou"] == 1.0 and r["salt_iou"] == 1.0 and r["kaggle_map"] == 1.0


def test_calibration_figures_and_best_temperature():
    from metrics.calibration import calibration

    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, 200000)
    y = rng.random(true_logits.size) < 1 / (1 + np.exp(-true_logits))
    good = calibration(true_logits, y)
    assert abs(good["best_temperature"] - 1.0) < 0.05 and good["ece"] < 0.01
    over = calibration(true_logits * 3, y)  # over-confident: logits 3x too large
    assert abs(over["best_temperature"] - 3.0) < 0.15
    assert over["nll"] > good["nll"] and over["ece"] > good["ece"] and over["nll_at_best"] < over["nll"]
    p = 1 / (1 + np.exp(-true_logits))
    assert abs(good["brier"] - np.mean((p - y) ** 2)) < 1e-4


def test_flip_equivariance_measures_the_mirrored_map_error():
    from benchmarks.flip_equivariance import compare_views
    from pi.sidecar import make_spec

    spec = make_spec(128, "pad")
    rng = np.random.default_rng(0)
    z0 = rng.normal(0, 3, (4, 128, 128)).astype(np.float32)
    exact = np.stack([z0, z0[:, :, ::-1]], axis=1)  # a flip-equivariant teacher: view 1 is the mirrored view 0
    masks = rng.random((4, 101, 101)) > 0.5
    r = compare_views(exact, masks, spec)
    assert r["mean_abs_prob_diff"] == 0 and r["label_disagreement"] == 0 and r["soft_kl_T2"] == 0
    assert r["kaggle_map_view0"] == r["kaggle_map_view1"] == r["kaggle_map_flip_tta"]
    off = exact.copy()
    off[:, 1, 20:60, 20:60] = -off[:, 1, 20:60, 20:60]  # view 1 disagrees on a block inside the original pixels
    r = compare_views(off, None, spec)
    assert abs(r["label_disagreement"] - 40 * 40 / 101**2) < 1e-4  # the whole block lies on original pixels: every label flips
    assert r["soft_kl_T2"] > 0 and r["mean_abs_prob_diff"] > 0
