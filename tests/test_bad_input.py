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
    """Gray + alpha with transparent pixels (an opaque LA image is read as gray, as on the Pi: pi/image_io.py)."""
    la = np.zeros((101, 101, 2), np.uint8)
    la[..., 1] = 255
    la[:10, :10, 1] = 0
    Image.fromarray(la, "LA").save(root / "train" / "images" / f"{ids[0]}.png")


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


DATA_DAMAGE = [
    corrupt_png,
    truncated_png,
    wrong_size,
    two_channels,
    sixteen_bit_image,
    no_mask,
    csv_id_without_image,
    image_without_csv_row,
    malformed_rle,
    nan_depth,
    inf_depth,
    mask_wrong_size,
]
DATA_NEEDLE = {
    "corrupt_png": "cannot read image",
    "truncated_png": "cannot read image",
    "wrong_size": "expected 101x101",
    "two_channels": "transparent",
    "sixteen_bit_image": "16-bit",
    "no_mask": "has no mask",
    "csv_id_without_image": "without an image",
    "image_without_csv_row": "has no row",
    "malformed_rle": "bad RLE",
    "nan_depth": "depth",
    "inf_depth": "depth",
    "mask_wrong_size": "mask",
}


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
        (["--data", g, "--lam", "0", "--precision", "half"], "--precision 'half' must be one of float32, mixed_bfloat16"),
        (["--data", g, "--lam", "0", "--accelerator", "tpu"], "--accelerator 'tpu' must be one of auto, gpu, cpu"),
        (["--data", g, "--lam", "0", "--accelerator", "gpu"], "--accelerator gpu: the torch backend sees no GPU"),
        (["--data", g, "--lam", "0", "--out", str(r / "afile" / "run")], "afile"),
        (["--data", g, "--lam", "0", "--split-file", str(r / "afile")], "split file"),
        # non-finite or negative numbers: each trained to NaN, dropped an image or raised a raw ValueError before
        (["--data", g, "--lam", "0", "--temperature", "inf"], "--temperature"),
        (["--data", g, "--lam", "0", "--temperature", "nan"], "--temperature"),
        (["--data", g, "--teacher", str(r / "teacher104.keras"), "--temperature", "inf"], "--temperature"),
        (["--data", g, "--lam", "0", "--weight-decay", "nan"], "--weight-decay"),
        (["--data", g, "--lam", "0", "--weight-decay", "-1"], "--weight-decay"),
        (["--data", g, "--lam", "0", "--max-train", "-1"], "--max-train"),
        (["--data", g, "--lam", "0", "--seed", "-1"], "--seed"),
        (["--data", g, "--lam", "0", "--lr", "inf"], "--lr"),
        (["--data", g, "--lam", "0", "--arch", "resnet"], "choose one of lraspp, mbv2add, mbv2cat, resunet, sepunet, unet"),
        (["--data", g, "--lam", "0", "--arch", "sepunet", "--upsample", "nearest"], "--upsample 'nearest'"),
        (
            ["--data", g, "--teacher", str(r / "teacher104.keras"), str(r / "teacher104.keras"), "--teacher-weights", "1", "nan"],
            "--teacher-weights",
        ),
    ]


def test_distill_train_bad_input(env, capsys):
    from distill_train import main

    cases = _distill_cases(env)
    for k, (argv, needle) in enumerate(cases):
        out = env["root"] / f"distill_out_{k}"
        extra = [] if "--out" in argv else ["--out", str(out)]
        code, err = call(main, argv + extra + TINY, capsys)
        check(code, err, needle)
        assert not out.exists(), (argv, "run dir created")


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--weight-decay", "nan"], "--weight-decay"),
        (["--weight-decay", "-1"], "--weight-decay"),
        (["--max-train", "-1"], "--max-train"),
        (["--seed", "-1"], "--seed"),
        (["--lr", "inf"], "--lr"),
        (["--lr", "nan"], "--lr"),
        (["--arch", "sepunet", "--base-filters", "0"], "leaves a layer with no channels"),
        (["--arch", "lraspp", "--depth", "1"], "lraspp: depth must be >= 2"),
        (["--arch", "mbv2cat", "--input-size", "108"], "input 108x108 is not divisible by 2**depth = 8"),
    ],
)
def test_teacher_train_bad_flags(env, argv, needle, capsys, tmp_path):
    from teacher.train import main

    code, err = call(main, ["--data", str(env["root"] / "good"), "--out", str(tmp_path / "run"), *TINY, *argv], capsys)
    check(code, err, needle)
    assert not (tmp_path / "run").exists()


def test_teacher_cache_refuses_other_weights(env, capsys, tmp_path):
    """A cache of the equal-weight ensemble of A and B serves --teacher-weights 1 1, not 0.9 0.1 (once silently used)."""
    import keras

    from distill_train import main
    from models.unet import build_unet

    teachers = []
    for seed, name in ((1, "A"), (2, "B")):
        keras.utils.set_random_seed(seed)
        build_unet((104, 104, 1), 2, 3).save(tmp_path / f"{name}.keras")
        teachers.append(str(tmp_path / f"{name}.keras"))
    assert (tmp_path / "A.keras").read_bytes() != (tmp_path / "B.keras").read_bytes()
    g, cache = str(env["root"] / "good"), tmp_path / "cache"
    p = subprocess.run(
        [sys.executable, "-m", "teacher.cache", "--teacher", teachers[0], "--teacher", teachers[1], "--data", g, "--out", str(cache)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr
    argv = [
        "--data",
        g,
        "--teacher",
        *teachers,
        "--teacher-cache",
        str(cache),
        "--lam",
        "0.9",
        *TINY,
        "--max-train",
        "16",
        "--batch-size",
        "4",
    ]  # one batch per epoch would hit the one-step schedule bug in training/loop.py
    code, err = call(main, [*argv, "--teacher-weights", "0.9", "0.1", "--out", str(tmp_path / "w91")], capsys)
    check(code, err, "--teacher-weights 0.9 0.1")
    assert "weights 0.5 0.5" in err, err
    assert not (tmp_path / "w91").exists()
    code, err = call(main, [*argv, "--teacher-weights", "1", "1", "--out", str(tmp_path / "w11")], capsys)
    assert code == 0, err
    metrics = json.loads((tmp_path / "w11" / "metrics.json").read_text())
    assert metrics["teacher"]["kind"] == "cache" and metrics["teacher"]["weights"] == [0.5, 0.5]


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
        (["--model", str(r / "teacher104.keras"), "--data", g, "--save-probabilities", str(r / "good"), "--overwrite"], "not a folder of"),
        (["--model", str(r / "teacher104.keras"), "--data", g, "--save-probabilities", str(r / "afile"), "--overwrite"], "not a folder"),
    ]
    for argv, needle in cases:
        check(*call(evaluate.main, argv, capsys), needle)
    assert not (tmp_path / "p").exists() and (r / "good").is_dir() and (r / "afile").is_file()  # nothing replaced


def test_evaluate_replaces_its_own_probability_maps(env, capsys, tmp_path):
    """--overwrite replaces a folder of .png maps (the one it wrote before), whole: a stale map of another id goes."""
    import evaluate

    argv = ["--model", str(env["root"] / "teacher104.keras"), "--data", str(env["root"] / "good"), "--split", "all"]
    out = tmp_path / "p"
    assert evaluate.main([*argv, "--save-probabilities", str(out)]) == 0
    first = sorted(f.name for f in out.iterdir())
    (out / "stale_id.png").write_bytes((out / first[0]).read_bytes())
    assert evaluate.main([*argv, "--save-probabilities", str(out), "--overwrite"]) == 0
    assert sorted(f.name for f in out.iterdir()) == first and len(first) == 12
    capsys.readouterr()


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
        (
            cache,
            [
                "--teacher",
                str(r / "teacher104.keras"),
                "--teacher",
                str(r / "teacher128.keras"),
                "--data",
                g,
                "--out",
                str(tmp_path / "cache"),
            ],
            "different input sizes",
        ),
        (cache, ["--teacher", str(r / "nologits.keras"), "--data", g, "--out", str(tmp_path / "cache")], "logits"),
        (
            cache,
            ["--teacher", str(r / "teacher104.keras"), "--data", g, "--unlabelled", str(r / "empty"), "--out", str(tmp_path / "cache")],
            "no .png",
        ),
    ]
    for main, argv, needle in cases:
        check(*call(main, argv, capsys), needle)
    assert not (tmp_path / "c.npz").exists() and not (tmp_path / "cache" / "logits.npy").exists()


# sidecars that ended in `unexpected TypeError/KeyError/ValueError` without naming the file
BAD_SIDECARS = {"array": [1, 2], "no_input_size": {"resize_mode": "pad"}, "threshold_high": {"input_size": 104, "threshold": "high"}}


def with_bad_sidecars(model: Path, folder: Path) -> dict:
    """{case: copy of model in folder with that bad sidecar <copy>.json}."""
    folder.mkdir(exist_ok=True)
    out = {}
    for case, side in BAD_SIDECARS.items():
        m = folder / f"{case}{model.suffix}"
        shutil.copy(model, m)
        (folder / f"{m.name}.json").write_text(json.dumps(side))
        out[case] = m
    return out


def check_sidecar_error(code, err, model: Path):
    """exit 2, one line naming the sidecar file."""
    assert code == 2, err
    assert "Traceback" not in err and "unexpected" not in err, err
    assert err.splitlines()[-1].startswith(f"error: sidecar {model}.json"), err


# export_tflite.py needs the tensorflow backend, this process has torch: its cases run in ONE subprocess
# (each through `common.cli.run(export_tflite.main, argv)`, exactly as `python export_tflite.py` does) to pay
# TensorFlow's start-up once; stderr is captured per case.
EXPORT_CASES = r"""
import contextlib, io, json, sys
sys.path.insert(0, sys.argv[1])
import export_tflite
from common.cli import run
results = []
for argv in json.loads(sys.argv[2]):
    err, code = io.StringIO(), None
    with contextlib.redirect_stderr(err):
        try:
            run(export_tflite.main, argv)
        except SystemExit as e:
            code = e.code
    results.append([code, err.getvalue()])
with open(sys.argv[3], "w") as f:
    json.dump(results, f)
"""


@pytest.fixture(scope="module")
def export_runs(env):
    """Every export case (bad ones, then one good fp32 export of the tiny teacher): {name: (exit code, stderr)}."""
    r = env["root"]
    g, out = str(r / "good"), r / "export"
    sides = with_bad_sidecars(r / "teacher104.keras", r / "sidecars_keras")
    cases = {
        "int4": ["--model", str(r / "teacher104.keras"), "--data", g, "--out", str(out / "int4"), "--quant", "int4"],
        "garbage": ["--model", str(r / "garbage.keras"), "--data", g, "--out", str(out / "garbage")],
        "missing_model": ["--model", str(r / "missing.keras"), "--data", g, "--out", str(out / "missing_model")],
        "out_is_file": ["--model", str(r / "teacher104.keras"), "--data", g, "--out", str(r / "afile")],
        "out_under_file": ["--model", str(r / "teacher104.keras"), "--data", g, "--out", str(r / "afile" / "sub")],
        **{f"sidecar_{c}": ["--model", str(m), "--data", g, "--out", str(out / c)] for c, m in sides.items()},
        "good": ["--model", str(r / "teacher104.keras"), "--data", g, "--out", str(out / "good"), "--quant", "fp32", "--calib", "4"],
    }
    p = subprocess.run(
        [sys.executable, "-c", EXPORT_CASES, str(ROOT), json.dumps(list(cases.values())), str(r / "export.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert p.returncode == 0, p.stderr[-3000:]
    results = dict(zip(cases, map(tuple, json.loads((r / "export.json").read_text()))))
    return {"results": results, "sidecars": sides, "out": out, "tflite": out / "good" / "teacher104_fp32.tflite"}


def test_export_bad_input(env, export_runs):
    res, out = export_runs["results"], export_runs["out"]
    check(*res["int4"], "unknown format")
    check(*res["garbage"], "not a Keras model")
    check(*res["missing_model"], "does not exist")
    check(*res["out_is_file"], f"--out {env['root'] / 'afile'} exists and is not a directory")
    check(*res["out_under_file"], "is not a directory")
    assert (env["root"] / "afile").read_text() == "x"
    for case, model in export_runs["sidecars"].items():
        check_sidecar_error(*res[f"sidecar_{case}"], model)
    # bad input creates no --out folder (it was made before --model was even looked at)
    assert sorted(p.name for p in out.iterdir()) == ["good"], list(out.iterdir())
    assert res["good"][0] == 0, res["good"][1]
    assert export_runs["tflite"].is_file()


def test_evaluate_bad_sidecar(env, capsys):
    import evaluate

    g = str(env["root"] / "good")
    for case, model in with_bad_sidecars(env["root"] / "teacher104.keras", env["root"] / "sidecars_eval").items():
        for split in ("all", "val"):  # all: the model loader; val: the split lookup reads the sidecar first
            check_sidecar_error(*call(evaluate.main, ["--model", str(model), "--data", g, "--split", split], capsys), model)


def test_tflite_bad_sidecar(env, export_runs, capsys, tmp_path):
    """pi/infer.py (in the Pi's own environment) and evaluate.py on a .tflite with each bad sidecar."""
    import evaluate

    pi_python = os.environ.get("PI_PYTHON", sys.executable)
    images = env["root"] / "good" / "train" / "images"
    for case, model in with_bad_sidecars(export_runs["tflite"], tmp_path / "models").items():
        p = subprocess.run(
            [
                pi_python,
                str(ROOT / "pi" / "infer.py"),
                "--model",
                str(model),
                "--images",
                str(images),
                "--out",
                str(tmp_path / f"masks_{case}"),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr
        check_sidecar_error(p.returncode, p.stderr.strip(), model)
        assert not (tmp_path / f"masks_{case}").exists()
        check_sidecar_error(
            *call(evaluate.main, ["--model", str(model), "--data", str(env["root"] / "good"), "--split", "all"], capsys), model
        )


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


KILL_CHILD = """
import sys; sys.path.insert(0, sys.argv[1])
from common import io
big = {'x': list(range(200000))}
i = 0
while True:
    print('start', i, flush=True)
    big['i'] = i; io.write_json(sys.argv[2], big)
    print('done', i, flush=True)
    i += 1
"""


def test_kill_during_save_never_leaves_a_truncated_file(tmp_path):
    """SIGKILL a process that rewrites a large JSON in a loop, in the middle of a rewrite: the file is always whole.

    The child prints `start i` before and `done i` after each write, so the last line it printed tells
    where the kill landed; the test insists on kills that landed during a rewrite of an existing file."""
    import time

    target, rng = tmp_path / "big.json", np.random.default_rng(0)
    mid_rewrite = 0
    for _ in range(12):  # bounded: stop after 3 kills that landed mid-rewrite
        p = subprocess.Popen([sys.executable, "-c", KILL_CHILD, str(ROOT), str(target)], stdout=subprocess.PIPE, text=True)
        done_at = []
        while True:
            word, k = p.stdout.readline().split()
            if word == "done":
                done_at.append(time.perf_counter())
            elif int(k) == 2:  # writes 0 and 1 are complete, write 2 begins
                break
        time.sleep((done_at[1] - done_at[0]) * rng.uniform(0.1, 0.9))  # a fraction of one write's time
        p.kill()
        rest = p.stdout.read()
        p.wait()
        p.stdout.close()
        lines = [line.split() for line in rest.splitlines(keepends=True) if line.endswith("\n")]
        word, k = lines[-1] if lines else ("start", "2")
        k = int(k)
        d = json.loads(target.read_text())
        assert len(d["x"]) == 200000
        if word == "start":  # killed during write k of a file that write k-1 completed: old or new, never torn
            assert d["i"] in (k - 1, k), (d["i"], k)
            mid_rewrite += 1
            if mid_rewrite == 3:
                break
        else:
            assert d["i"] == k
    assert mid_rewrite >= 1, "no kill landed during a rewrite"


@pytest.mark.parametrize(
    "argv",
    [["--backends", "torch"], ["--backends", "torch", "tensorflow", "--precision", "mixed_bfloat16"]],
    ids=["one backend", "no float32"],
)
def test_train_speed_save_default_needs_two_float32_backends(argv, capsys, tmp_path, monkeypatch):
    """--save-default with nothing to compare is refused before anything is timed, and saves nothing."""
    from benchmarks.train_speed import main

    monkeypatch.setenv("SEG_DISTILL_BACKEND_FILE", str(tmp_path / "backend.json"))
    code, err = call(main, [*argv, "--save-default"], capsys)
    check(code, err, "--save-default compares backends")
    assert not (tmp_path / "backend.json").exists()
