"""A table of bad inputs across the entry points: each must give one line `error: ...` naming the
problem, exit code 2, no traceback, and leave no partial output."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.cli import run
from tests.test_data import write_kaggle

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--epochs", "1", "--base-filters", "2", "--depth", "3", "--input-size", "104"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A small valid data set, a tiny teacher without and with a `logits` layer, broken files."""
    import keras

    from models.unet import build_unet

    root = tmp_path_factory.mktemp("bad")
    ids, _, _ = write_kaggle(root / "good", n=12)
    build_unet((104, 104, 1), 2, 3).save(root / "teacher104.keras")
    build_unet((128, 128, 1), 2, 4).save(root / "teacher128.keras")
    inp = keras.Input((104, 104, 1))
    keras.Model(inp, keras.layers.Conv2D(1, 1, activation="sigmoid", name="out")(inp)).save(root / "nologits.keras")
    (root / "garbage.keras").write_bytes(b"this is not a zip file")
    (root / "garbage.tflite").write_bytes(os.urandom(256))
    (root / "empty").mkdir()
    (root / "afile").write_text("x")
    return {"root": root, "ids": ids}


def damaged(env, fn):
    """A copy of the good data set, damaged by fn(root, ids)."""
    dst = env["root"] / f"damaged_{fn.__name__}"
    if not dst.exists():
        shutil.copytree(env["root"] / "good", dst)
        fn(dst, env["ids"])
    return dst


def corrupt_png(root, ids):
    (root / "train" / "images" / f"{ids[0]}.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00garbage")


def truncated_png(root, ids):
    p = root / "train" / "images" / f"{ids[1]}.png"
    p.write_bytes(p.read_bytes()[:100])


def wrong_size(root, ids):
    Image.fromarray(np.zeros((128, 128, 3), np.uint8)).save(root / "train" / "images" / f"{ids[0]}.png")


def two_channels(root, ids):
    Image.fromarray(np.zeros((101, 101, 2), np.uint8)[..., 0]).convert("LA").save(root / "train" / "images" / f"{ids[0]}.png")


def sixteen_bit_image(root, ids):
    Image.fromarray(np.zeros((101, 101), np.uint16)).save(root / "train" / "images" / f"{ids[0]}.png")


def no_mask(root, ids):
    (root / "train" / "masks" / f"{ids[0]}.png").unlink()


def csv_id_without_image(root, ids):
    with open(root / "train.csv", "a") as f:
        f.write("0123456789,1 5\n")


def image_without_csv_row(root, ids):
    lines = (root / "train.csv").read_text().splitlines()
    (root / "train.csv").write_text("\n".join(line for line in lines if not line.startswith(ids[2])) + "\n")


def malformed_rle(root, ids):
    text = (root / "train.csv").read_text().replace(f"{ids[0]},", f"{ids[0]},5 3 4", 1)
    (root / "train.csv").write_text(text)


def nan_depth(root, ids):
    (root / "depths.csv").write_text(f"id,z\n{ids[0]},nan\n")


def inf_depth(root, ids):
    (root / "depths.csv").write_text(f"id,z\n{ids[0]},inf\n")


def mask_wrong_size(root, ids):
    Image.fromarray(np.zeros((50, 50), np.uint16)).save(root / "train" / "masks" / f"{ids[0]}.png")


DATA_DAMAGE = [corrupt_png, truncated_png, wrong_size, two_channels, sixteen_bit_image, no_mask, csv_id_without_image,
               image_without_csv_row, malformed_rle, nan_depth, inf_depth, mask_wrong_size]
DATA_NEEDLE = {"corrupt_png": "cannot read image", "truncated_png": "cannot read image", "wrong_size": "expected 101x101",
               "two_channels": "image", "sixteen_bit_image": "16-bit", "no_mask": "has no mask",
               "csv_id_without_image": "without an image", "image_without_csv_row": "has no row", "malformed_rle": "bad RLE",
               "nan_depth": "depth", "inf_depth": "depth", "mask_wrong_size": "mask"}


def call(module_main, argv, capsys):
    with pytest.raises(SystemExit) as e:
        run(module_main, argv)
    err = capsys.readouterr().err.strip()
    return e.value.code, err


def check(code, err, needle):
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) >= 1 and lines[-1].startswith("error: "), err
    assert needle.lower() in lines[-1].lower(), (needle, lines[-1])


@pytest.mark.parametrize("damage", DATA_DAMAGE, ids=lambda f: f.__name__)
def test_teacher_train_bad_data(env, damage, capsys, tmp_path):
    from teacher.train import main

    data = damaged(env, damage)
    code, err = call(main, ["--data", str(data), "--out", str(tmp_path / "run"), *TINY], capsys)
    check(code, err, DATA_NEEDLE[damage.__name__])
    assert not (tmp_path / "run" / "metrics.json").exists() and not (tmp_path / "run" / "teacher.keras").exists()


def _distill_cases(env):
    g, r = str(env["root"] / "good"), env["root"]
    return [
        (["--data", g, "--lam", "0", "--temperature", "0"], "--temperature"),
        (["--data", g, "--lam", "0", "--temperature", "-2"], "--temperature"),
        (["--data", g, "--teacher", str(r / "teacher104.keras"), "--temperature", "hot"], "a number > 0 or 'auto'"),
        (["--data", g, "--lam", "0", "--temperature", "auto"], "--temperature auto needs a teacher"),
        (["--data", g, "--lam", "1.5"], "--lam"),
        (["--data", g, "--lam", "-0.1"], "--lam"),
        (["--data", g, "--lam", "nan"], "--lam"),
        (["--data", g, "--teacher", str(r / "teacher104.keras"), "--scale", "T3"], "--scale"),
        (["--data", g, "--lam", "0.9"], "needs a --teacher"),
        (["--data", g, "--teacher", str(r / "missing.keras")], "does not exist"),
        (["--data", g, "--teacher", str(r / "garbage.keras")], "not a Keras model"),
        (["--data", g, "--teacher", str(r / "nologits.keras")], "no layer named 'logits'"),
        (["--data", g, "--teacher", str(r / "teacher128.keras")], "takes input"),
        (["--data", str(r / "missing"), "--lam", "0"], "does not exist"),
        (["--data", str(r / "empty"), "--lam", "0"], "has no train/images"),
        (["--data", g, "--teacher", str(r / "teacher104.keras"), "--unlabelled", str(r / "missing")], "does not exist"),
        (["--data", g, "--teacher", str(r / "teacher104.keras"), "--unlabelled", str(r / "empty")], "no .png"),
        (["--data", g, "--teacher-cache", str(r / "empty")], "not a teacher cache"),
        (["--data", g, "--teacher", str(r / "teacher104.keras"), "--teacher-weights", "1", "2"], "--teacher-weights"),
        (["--data", g, "--lam", "0", "--out", str(r / "afile" / "run")], "afile"),
        (["--data", g, "--lam", "0", "--split-file", str(r / "afile")], "split file"),
    ]


def test_distill_train_bad_input(env, capsys):
    from distill_train import main

    cases = _distill_cases(env)
    for k, (argv, needle) in enumerate(cases):
        out = env["root"] / f"distill_out_{k}"
        extra = [] if "--out" in argv else ["--out", str(out)]
        code, err = call(main, argv + extra + TINY, capsys)
        check(code, err, needle)
        assert not (out / "metrics.json").exists() and not (out / "student.keras").exists()


def test_evaluate_bad_input(env, capsys, tmp_path):
    import evaluate

    g, r = str(env["root"] / "good"), env["root"]
    (tmp_path / "ids.txt").write_text("not_an_id\n")
    cases = [
        (["--model", str(r / "afile"), "--data", g], "must be .keras or .tflite"),
        (["--model", str(r / "garbage.tflite"), "--data", g, "--split", "all"], "not a TFLite model"),
        (["--model", str(r / "garbage.keras"), "--data", g, "--split", "all"], "not a Keras model"),
        (["--model", str(r / "teacher104.keras"), "--data", g], "no split.json"),
        (["--model", str(r / "teacher104.keras"), "--data", g, "--split", str(tmp_path / "ids.txt")], "not in"),
        (["--pred-masks", str(r / "empty"), "--data", g], "no predicted mask"),
        (["--pred-masks", str(r / "missing"), "--data", g], "does not exist"),
        (["--pred-masks", str(r / "empty"), "--data", g, "--save-probabilities", str(tmp_path / "p")], "needs --model"),
        (["--model", str(r / "teacher104.keras"), "--data", g, "--split", "all", "--save-probabilities", str(r / "good")], "not empty"),
    ]
    for argv, needle in cases:
        check(*call(evaluate.main, argv, capsys), needle)
    assert not (tmp_path / "p").exists()


def test_other_entry_points(env, capsys, tmp_path):
    from data.prepare import main as prepare
    from experiments.sweep import main as sweep
    from teacher.cache import main as cache

    g, r = str(env["root"] / "good"), env["root"]
    (tmp_path / "nogrid.json").write_text(json.dumps({"name": "x", "seeds": [0]}))
    cases = [
        (prepare, ["--data", g, "--out", str(tmp_path / "c.zip")], "must end in .npz"),
        (prepare, ["--data", str(damaged(env, corrupt_png)), "--out", str(tmp_path / "c.npz")], "cannot read image"),
        (sweep, ["--config", str(tmp_path / "missing.json")], "cannot read sweep config"),
        (sweep, ["--config", str(tmp_path / "nogrid.json")], "has no 'grid'"),
        (cache, ["--teacher", str(r / "teacher104.keras"), "--teacher", str(r / "teacher128.keras"), "--data", g,
                 "--out", str(tmp_path / "cache")], "different input sizes"),
        (cache, ["--teacher", str(r / "nologits.keras"), "--data", g, "--out", str(tmp_path / "cache")], "logits"),
        (cache, ["--teacher", str(r / "teacher104.keras"), "--data", g, "--unlabelled", str(r / "empty"),
                 "--out", str(tmp_path / "cache")], "no .png"),
    ]
    for main, argv, needle in cases:
        check(*call(main, argv, capsys), needle)
    assert not (tmp_path / "c.npz").exists() and not (tmp_path / "cache" / "logits.npy").exists()


def test_export_bad_input(env, tmp_path):
    r = env["root"]
    for argv, needle in [
        (["--model", str(r / "teacher104.keras"), "--data", str(r / "good"), "--out", str(tmp_path), "--quant", "int4"], "unknown format"),
        (["--model", str(r / "garbage.keras"), "--data", str(r / "good"), "--out", str(tmp_path)], "not a Keras model"),
    ]:
        p = subprocess.run([sys.executable, "export_tflite.py", *argv], cwd=ROOT, capture_output=True, text=True, timeout=300)
        check(p.returncode, p.stderr.strip(), needle)
    assert not list(tmp_path.glob("*.tflite"))


def test_atomic_write_survives_a_failing_writer(tmp_path):
    from common import io

    target = tmp_path / "metrics.json"
    io.write_json(target, {"ok": 1})

    class Boom:
        pass

    with pytest.raises(TypeError):
        io.write_json(target, {"bad": Boom()})  # fails half-way through serialising
    assert json.loads(target.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temp file left behind


def test_kill_during_save_never_leaves_a_truncated_file(tmp_path):
    """SIGKILL a process that rewrites a large JSON in a loop: the file is always whole."""
    code = (
        "import sys; sys.path.insert(0, %r)\n"
        "from common import io\n"
        "big = {'x': list(range(200000))}\n"
        "i = 0\n"
        "while True:\n"
        "    big['i'] = i; io.write_json(%r, big); i += 1\n"
    ) % (str(ROOT), str(tmp_path / "big.json"))
    import time

    for delay in (0.4, 0.7, 1.1):
        p = subprocess.Popen([sys.executable, "-c", code])
        time.sleep(delay)
        p.kill()
        p.wait()
        if (tmp_path / "big.json").exists():
            d = json.loads((tmp_path / "big.json").read_text())
            assert len(d["x"]) == 200000
