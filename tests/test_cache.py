"""The teacher-output cache (`python -m teacher.cache` writes it, `distill.cache.TeacherCache` reads it):
atomic replacement of the whole dir, locking, image fingerprints, id de-duplication, the CLI's
spellings and bad --out, cleanup of temp files of killed writers, the final report line."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common import io
from common.cli import UserError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A synthetic Kaggle folder (24 train + 8 test images) and two tiny teachers (other weights, same input)."""
    import keras

    from data.synthetic import generate
    from models.unet import build_unet

    root = tmp_path_factory.mktemp("cache")
    generate(root / "tgs", n_train=24, n_test=8, seed=0)
    keras.utils.set_random_seed(0)
    build_unet((104, 104, 1), 2, 3).save(root / "a.keras")
    keras.utils.set_random_seed(1)
    build_unet((104, 104, 1), 2, 3).save(root / "b.keras")
    return {"root": root, "data": root / "tgs", "test": root / "tgs" / "test" / "images", "a": root / "a.keras", "b": root / "b.keras"}


def cache_main(argv):
    from teacher.cache import main

    return main([str(a) for a in argv])


def build(env, out, *extra, teacher="a"):
    assert cache_main(["--teacher", env[teacher], "--data", env["data"], "--out", out, *extra]) == 0
    return json.loads((out / "meta.json").read_text())


def cli(*args, code=None):
    """python -m teacher.cache ... (or python -c code ...) in a subprocess, as a user runs it."""
    cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", "teacher.cache"]
    return subprocess.run(
        [*cmd, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    )


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def leftovers(out: Path) -> list[str]:
    """What a build leaves next to the cache dir besides the dir itself."""
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def snapshot(out: Path):
    return json.loads((out / "meta.json").read_text()), (out / "logits.npy").read_bytes()


# ---- 1. the pair logits.npy + meta.json is replaced as one ------------------------------------

KILL_AFTER = """
import os, signal, sys
sys.path.insert(0, {root!r})
from common import io
{patch}
from teacher.cache import main
main(sys.argv[1:])
"""


def test_kill_between_logits_and_meta_keeps_the_old_cache(env, tmp_path):
    """SIGKILL after logits.npy is written, before meta.json (the old bug: new logits under old meta)."""
    out = tmp_path / "cache"
    build(env, out, teacher="a")
    before = snapshot(out)
    patch = "io.write_json = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)"
    p = cli("--teacher", env["b"], "--data", env["data"], "--out", out, "--overwrite", code=KILL_AFTER.format(root=str(ROOT), patch=patch))
    assert p.returncode == -9, p.stderr
    assert snapshot(out) == before  # the old cache, whole: teacher a's logits under teacher a's meta
    assert [n.split("-")[0] for n in leftovers(out)] == [".cache.lock", ".cache.partial"]  # its lock, its new logits aside
    assert not io.is_locked(out)  # the lock of a dead process does not count
    meta = build(env, out, "--overwrite", teacher="b")  # the next build cleans up what the killed one left
    assert meta["teachers"][0]["sha256"] == io.file_sha256(env["b"]) and leftovers(out) == []


def test_kill_mid_swap_restores_the_old_cache(env, tmp_path):
    """SIGKILL after the old dir is renamed aside, before the new one is in place: the next start puts the old one back."""
    from distill.cache import TeacherCache

    out = tmp_path / "cache"
    build(env, out, teacher="a")
    before = snapshot(out)
    patch = (
        "real = os.rename\n"
        "def rename(a, b):\n"
        "    real(a, b)\n"
        "    if '.old-' in str(b): os.kill(os.getpid(), signal.SIGKILL)\n"
        "io.os.rename = rename"
    )
    p = cli("--teacher", env["b"], "--data", env["data"], "--out", out, "--overwrite", code=KILL_AFTER.format(root=str(ROOT), patch=patch))
    assert p.returncode == -9, p.stderr
    assert not out.exists()  # a reader now gets "not a teacher cache", never a mix
    with pytest.raises(UserError, match="not a teacher cache"):
        TeacherCache(out)
    with pytest.raises(UserError, match="not empty"):  # no --overwrite: the old cache is back, and kept
        build(env, out, teacher="b")
    assert snapshot(out) == before and leftovers(out) == []


def test_failed_overwrite_leaves_the_old_cache_and_no_temp_dir(env, tmp_path, monkeypatch):
    out = tmp_path / "cache"
    build(env, out)
    before = snapshot(out)

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(io, "write_json", boom)
    with pytest.raises(RuntimeError):
        build(env, out, "--overwrite", teacher="b")
    assert snapshot(out) == before and leftovers(out) == []
    assert not io.is_locked(out) and not io.sibling_lock(out).exists()  # the lock is released


def test_stale_partial_dirs_of_dead_pids_are_removed(env, tmp_path):
    out = tmp_path / "cache"
    stale, live = tmp_path / f".cache.partial-{dead_pid()}", tmp_path / f".cache.partial-{os.getppid()}"
    for d in (stale, live):
        d.mkdir()
        (d / "logits.npy").write_bytes(b"x" * 100)
    build(env, out)
    assert not stale.exists() and live.exists()  # a live process's build is not touched


def test_lock_refuses_a_second_build_and_is_seen_by_the_sweep(env, tmp_path, monkeypatch):
    import teacher.cache as tc

    out = tmp_path / "cache"
    seen = {}
    real = tc.teacher_views

    def spy(heads, x, weights, batch):
        if seen:
            return real(heads, x, weights, batch)
        # another process (the sweep) sees the dir as busy while this one predicts into it
        p = subprocess.run(
            [sys.executable, "-c", f"from common.io import is_locked; print(is_locked({str(out)!r}))"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        seen["other"] = p.stdout.strip()
        with pytest.raises(UserError, match="in use"):  # a second build of the same dir is refused
            build(env, out)
        return real(heads, x, weights, batch)

    monkeypatch.setattr(tc, "teacher_views", spy)
    build(env, out)
    assert seen["other"] == "True"
    assert not io.is_locked(out) and not io.sibling_lock(out).exists()  # released after the build

    sleeper = subprocess.Popen(["sleep", "30"])  # a live process holds the lock: refused, nothing written
    try:
        io.sibling_lock(out).write_text(str(sleeper.pid))
        assert io.is_locked(out)
        with pytest.raises(UserError, match="in use"):
            build(env, out, "--overwrite", teacher="b")
    finally:
        sleeper.kill()
        sleeper.wait()
    assert json.loads((out / "meta.json").read_text())["teachers"][0]["sha256"] == io.file_sha256(env["a"])
    assert not io.is_locked(out)  # stale now
    build(env, out, "--overwrite", teacher="b")  # a stale lock is taken over


def test_black_box_cache_is_atomic_too(env, tmp_path, monkeypatch):
    from data.tgs import load_data
    from distill.cache import TeacherCache

    d = load_data(env["data"], progress=False)
    maps = tmp_path / "maps"
    maps.mkdir()
    for i in d.ids:
        np.save(maps / f"{i}.npy", np.full((101, 101), 0.25))
    out = tmp_path / "bb"
    argv = ["--from-probabilities", maps, "--data", env["data"], "--input-size", "104", "--out", out]
    assert cache_main(argv) == 0
    before = snapshot(out)
    (tmp_path / f".bb.partial-{dead_pid()}").mkdir()
    monkeypatch.setattr(io, "write_json", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError):
        cache_main(argv + ["--overwrite"])
    assert snapshot(out) == before and leftovers(out) == []
    c = TeacherCache(out)
    assert len(c.meta["fingerprints"]) == len(d.ids)
    c.take(d.ids, d.images)


# ---- 2. image fingerprints ---------------------------------------------------------------------


def test_take_refuses_other_pixels_under_the_same_ids(env, tmp_path):
    from data.tgs import load_data
    from distill.cache import TeacherCache, fingerprint

    out = tmp_path / "cache"
    meta = build(env, out)
    d = load_data(env["data"], progress=False)
    assert meta["fingerprints"] == [fingerprint(im) for im in d.images] and meta["ids"] == d.ids
    c = TeacherCache(out)
    np.testing.assert_array_equal(c.take(d.ids[:5], d.images[:5]), c.take(d.ids[:5]))
    other = d.images.copy()
    other[3, 50, 50] ^= 1  # one pixel of one image
    with pytest.raises(UserError, match=f"image {d.ids[3]} "):
        c.take(d.ids, other)
    c.take(d.ids)  # no images: ids only, as before

    old = tmp_path / "old"  # a cache of an earlier version has no fingerprints: taken as it is
    shutil.copytree(out, old)
    m = json.loads((old / "meta.json").read_text())
    del m["fingerprints"], m["fingerprint"]
    (old / "meta.json").write_text(json.dumps(m))
    TeacherCache(old).take(d.ids, other)


def test_training_batches_pass_the_images(env, tmp_path):
    """training.runs.batches checks the run's pixels against the cache (train, val and unlabelled)."""
    from data.tgs import TgsData, load_data, load_unlabelled
    from distill.cache import TeacherCache
    from pi.sidecar import make_spec
    from training.runs import batches

    out = tmp_path / "cache"
    build(env, out, "--unlabelled", env["test"])
    c = TeacherCache(out)
    d, u = load_data(env["data"], progress=False), load_unlabelled(env["test"], progress=False)
    train, val = d.subset(d.ids[:16]), d.subset(d.ids[16:])
    spec = make_spec(104)
    batches(train, val, spec, 8, 0, True, u, 4, c)
    for which in ("train", "val", "unlabelled"):
        parts = {"train": train, "val": val, "unlabelled": u}
        p = parts[which]
        images = p.images.copy()
        images[-1] = 255 - images[-1]
        parts[which] = TgsData(p.ids, images, p.masks, p.depths, p.source)
        with pytest.raises(UserError, match=f"image {p.ids[-1]} "):
            batches(parts["train"], parts["val"], spec, 8, 0, True, parts["unlabelled"], 4, c)


# ---- 3. de-duplication: linear, and refuses one id with two images --------------------------


def test_duplicate_ids_same_pixels_kept_once_other_pixels_refused(env, tmp_path):
    """Between labelled inputs or between unlabelled ones: same pixels kept once, other pixels refused (naming
    both files). An unlabelled image under a labelled id is refused whatever its pixels (tests/test_cache_stream.py)."""
    from data.tgs import load_data, load_unlabelled

    d = load_data(env["data"], progress=False)
    meta = build(env, tmp_path / "c1", "--unlabelled", env["data"], "--unlabelled", env["test"], "--data", env["data"])
    assert len(meta["ids"]) == len(set(meta["ids"])) == 24 + 8 and meta["ids"][:24] == d.ids

    u = load_unlabelled(env["test"], progress=False)
    same, other = tmp_path / "same", tmp_path / "other"
    for f in (same, other):
        f.mkdir()
        shutil.copy(env["test"] / f"{u.ids[2]}.png", f)
    Image.fromarray(255 - u.images[2]).save(other / f"{u.ids[2]}.png")
    meta = build(env, tmp_path / "c2", "--unlabelled", env["test"], same)
    assert len(meta["ids"]) == 32 and meta["ids"].count(u.ids[2]) == 1
    first, second = env["test"] / f"{u.ids[2]}.png", other / f"{u.ids[2]}.png"
    with pytest.raises(UserError, match=f"image id {u.ids[2]} is in {first} and in {second} with different pixels"):
        build(env, tmp_path / "c3", "--unlabelled", env["test"], other)
    assert not (tmp_path / "c3").exists() and leftovers(tmp_path / "c3") == []


def test_collect_images_is_linear(monkeypatch):
    """30,000 ids twice (--data D --data D): well under a second (the old code compared each id with every other)."""
    import teacher.cache as tc
    from data.tgs import TgsData

    n = 30_000
    ids = [f"{k:010x}" for k in range(n)]
    part = TgsData(ids, np.arange(n, dtype=np.uint32).view(np.uint8).reshape(n, 2, 2), None, np.zeros(n, np.float32))
    monkeypatch.setattr(tc, "load_data", lambda p: part)
    monkeypatch.setattr(tc, "load_unlabelled", lambda p: part)
    t0 = time.perf_counter()
    got, images, fps = tc.collect_images(["d", "d"], [])
    assert time.perf_counter() - t0 < 5 and got == ids and len(images) == len(fps) == n


# ---- 4. both spellings of repeated values ------------------------------------------------------


def test_repeated_values_take_both_spellings(env, tmp_path):
    a = build(env, tmp_path / "a", "--unlabelled", env["test"], env["data"])
    b = build(env, tmp_path / "b", "--unlabelled", env["test"], "--unlabelled", env["data"])
    assert a["ids"] == b["ids"] and len(a["ids"]) == 32
    args = ["--data", env["data"], "--out"]
    e1 = cache_main(["--teacher", env["a"], env["b"], "--teacher-weights", "1", "3", *args, tmp_path / "e1"])
    e2 = cache_main(["--teacher", env["a"], "--teacher", env["b"], "--teacher-weights", "1", "3", *args, tmp_path / "e2"])
    assert e1 == e2 == 0
    m1, m2 = (json.loads((tmp_path / e / "meta.json").read_text()) for e in ("e1", "e2"))
    assert m1["teachers"] == m2["teachers"] and m1["weights"] == m2["weights"] == [0.25, 0.75]
    np.testing.assert_array_equal(np.load(tmp_path / "e1" / "logits.npy"), np.load(tmp_path / "e2" / "logits.npy"))
    d2 = cache_main(["--teacher", env["a"], "--data", env["data"], env["data"], "--out", tmp_path / "d2"])
    assert d2 == 0 and json.loads((tmp_path / "d2" / "meta.json").read_text())["ids"] == a["ids"][:24]


# ---- 5. --out ------------------------------------------------------------------------------------


def test_out_that_is_a_file_is_refused(env, tmp_path):
    f = tmp_path / "afile"
    f.write_text("keep me")
    p = cli("--teacher", env["a"], "--data", env["data"], "--out", f)
    assert p.returncode == 2 and p.stderr.strip() == f"error: --out {f} exists and is not a directory", p.stderr
    with pytest.raises(UserError, match=f"^--out {f / 'cache'}: {f} is not a directory$"):
        build(env, f / "cache", "--overwrite")
    assert f.read_text() == "keep me" and sorted(x.name for x in tmp_path.iterdir()) == ["afile"]

    out = tmp_path / "cache"
    out.mkdir()
    (out / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="not empty; pass --overwrite"):
        build(env, out)
    assert sorted(x.name for x in out.iterdir()) == ["notes.txt"]


def test_overwrite_replaces_only_a_cache(env, tmp_path):
    """--out cache --overwrite beside the README's cache/tgs.npz: the folder is replaced as a whole, so one that holds
    no cache (no meta.json) is refused with one line, and what it holds is kept; a cache is still replaced."""
    out = tmp_path / "cache"
    out.mkdir()
    (out / "tgs.npz").write_bytes(b"the user's data")
    p = cli("--teacher", env["a"], "--data", env["data"], "--out", out, "--overwrite")
    assert p.returncode == 2 and p.stderr.strip().startswith(f"error: --out {out} is not empty and is not a teacher cache"), p.stderr
    assert (out / "tgs.npz").read_bytes() == b"the user's data" and sorted(x.name for x in tmp_path.iterdir()) == ["cache"]
    (out / "tgs.npz").unlink()
    build(env, out, teacher="a")
    build(env, out, "--overwrite", teacher="b")
    assert (out / "meta.json").is_file()


# ---- 6. temp files of killed atomic writes ------------------------------------------------------


def test_atomic_write_removes_temp_files_of_dead_writers(tmp_path):
    target = tmp_path / "big.json"
    dead, live = dead_pid(), os.getpid()
    stale = tmp_path / f".big.json.tmp{dead}.abcd1234.json"
    mine = tmp_path / f".big.json.tmp{live}.efgh5678.json"
    alive_other = tmp_path / f".big.json.tmp{os.getppid()}.ijkl9012.json"
    unrelated = tmp_path / f".other.json.tmp{dead}.mnop3456.json"
    for f in (stale, mine, alive_other, unrelated):
        f.write_bytes(b"x" * 1000)
    io.write_json(target, {"ok": 1})
    assert json.loads(target.read_text()) == {"ok": 1}
    assert not stale.exists() and mine.exists() and alive_other.exists() and unrelated.exists()
    with io.atomic_path(target) as tmp:
        assert tmp.name.startswith(f".big.json.tmp{live}.")  # the writer's pid is in the temp name
        tmp.write_text("{}")


# ---- 7. the report line and build_s --------------------------------------------------------------


def test_report_line_has_time_and_peak_rss(env, tmp_path, capsys):
    out = tmp_path / "cache"
    capsys.readouterr()
    build(env, out, "--unlabelled", env["test"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and "32 images x 2 views" in lines[0] and "built in" in lines[0] and "peak RSS" in lines[0]
    meta = json.loads((out / "meta.json").read_text())
    assert isinstance(meta["build_s"], float) and meta["build_s"] >= 0


def test_merged_caches_are_the_ensemble_cache_a_student_accepts(env, tmp_path):
    """--from-caches A B: per image and view the mean of the members' logits, within float16's last bit of the cache
    `--teacher a b` builds; the same teachers, weights and ids in its meta, so a student's --teacher a b accepts it; run
    names say both kinds of teacher (unet2d3_wide); bad merges are refused before anything is written."""
    from distill.cache import TeacherCache
    from pi.sidecar import make_spec

    root = tmp_path / "kinds"
    root.mkdir()
    for t in ("a", "b"):  # two kinds, as a sidecar names them
        shutil.copy(env[t], root / f"{t}.keras")
        (root / f"{t}.keras.json").write_text(json.dumps({**make_spec(104, "pad"), "model_name": "unet2d3" if t == "a" else "wide"}))
    kinds = {**env, "a": root / "a.keras", "b": root / "b.keras"}
    one_a, one_b = (
        build(kinds, tmp_path / "a", "--unlabelled", env["test"]),
        build(kinds, tmp_path / "b", "--unlabelled", env["test"], teacher="b"),
    )
    assert one_a["teachers"][0]["model_name"] == "unet2d3"
    both = tmp_path / "both"
    assert cache_main(["--teacher", kinds["a"], kinds["b"], "--data", env["data"], "--unlabelled", env["test"], "--out", both]) == 0
    merged = tmp_path / "merged"
    assert cache_main(["--from-caches", tmp_path / "b", tmp_path / "a", "--out", merged]) == 0  # another order: same ensemble
    ref, got = TeacherCache(both), TeacherCache(merged)
    rows = [got.index[i] for i in ref.meta["ids"]]
    z_ref, z_got = np.asarray(ref.logits, np.float32), np.asarray(got.logits, np.float32)[rows]
    members = [TeacherCache(tmp_path / t) for t in ("a", "b")]
    z_a, z_b = (np.asarray(m.logits, np.float32)[[m.index[i] for i in ref.meta["ids"]]] for m in members)
    spacing = lambda z: np.abs(np.spacing(z.astype(np.float16))).astype(np.float32)  # noqa: E731
    # each member was rounded to float16 once (within a float16 step of it), then the mean once more
    assert np.all(np.abs(z_got - z_ref) <= np.maximum(spacing(z_a), spacing(z_b)) + spacing(z_ref) + 1e-7)
    assert np.allclose(z_got, (z_a + z_b) / 2, atol=1e-2) and not np.array_equal(z_got, z_a)  # the mean, not a member
    got.check([kinds["a"], kinds["b"]], ref.meta["spec"])  # a student's --teacher a b --teacher-cache MERGED
    assert got.label == "wide_unet2d3" and ref.label == "unet2d3_wide" and got.weights == [0.5, 0.5]
    assert sorted(got.meta["ids"]) == sorted(one_a["ids"]) and got.meta["merged_from"] == [str(tmp_path / "b"), str(tmp_path / "a")]
    # weights per cache: 3:1 between the members
    weighted = tmp_path / "weighted"
    assert cache_main(["--from-caches", tmp_path / "a", tmp_path / "b", "--teacher-weights", "3", "1", "--out", weighted]) == 0
    assert TeacherCache(weighted).weights == [0.75, 0.25]
    # refused, nothing written: one cache, a teacher twice, other images, other pixels, data flags
    labelled_only = build(kinds, tmp_path / "a_labelled", teacher="a")
    assert labelled_only["n"] < one_b["n"]
    for argv, msg in [
        (["--from-caches", tmp_path / "a"], "two caches or more"),
        (["--from-caches", tmp_path / "a", both], "share a teacher file"),
        (["--from-caches", tmp_path / "a_labelled", tmp_path / "b"], "different images"),
        (["--from-caches", tmp_path / "a", tmp_path / "b", "--data", env["data"]], "leave out --data"),
        (["--from-caches", tmp_path / "a", tmp_path / "b", "--teacher-weights", "1"], "1 values for 2 cache"),
    ]:
        with pytest.raises(UserError, match=msg):
            cache_main([*argv, "--out", tmp_path / "refused"])
        assert not (tmp_path / "refused").exists()
    meta_b = json.loads((tmp_path / "b" / "meta.json").read_text())
    other = tmp_path / "b_other"
    shutil.copytree(tmp_path / "b", other)
    (other / "meta.json").write_text(json.dumps({**meta_b, "fingerprints": ["0" * 16] * meta_b["n"]}))
    with pytest.raises(UserError, match="other pixels"):
        cache_main(["--from-caches", tmp_path / "a", other, "--out", tmp_path / "refused"])


def test_calibration_scores_an_ensemble_from_its_files_or_its_cache(env, tmp_path, capsys):
    """teacher.calibration: two teacher files (--tta: with their flips) and the cache of the same ensemble are one soft
    target with the same scores and calibration (float16 storage aside); without --tta the flips are not in it; a
    cache is scored only on a named split."""
    import keras

    from data.tgs import load_data
    from teacher.calibration import main

    ids = load_data(env["data"]).ids
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"seed": 0, "train": ids[8:], "val": ids[:8]}))
    sharp = {}
    for t in ("a", "b"):  # untrained teachers' logits are near 0 everywhere: scale them up so the figures tell maps apart
        model = keras.saving.load_model(env[t])
        layer = model.get_layer("logits")
        layer.set_weights([w * 200 for w in layer.get_weights()])
        model.save(tmp_path / f"{t}.keras")
        sharp[t] = tmp_path / f"{t}.keras"
    both = tmp_path / "both"
    assert cache_main(["--teacher", sharp["a"], sharp["b"], "--data", env["data"], "--out", both]) == 0

    def scored(*argv):
        capsys.readouterr()
        assert main([*map(str, argv), "--data", str(env["data"]), "--split", str(split)]) == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    files, cached = scored("--teacher", sharp["a"], sharp["b"], "--tta"), scored("--cache", both, "--tta")
    plain = scored("--cache", both)
    assert files["n_images"] == cached["n_images"] == 8 and {"kaggle_map", "mean_iou", "nll", "ece"} <= set(files)
    assert abs(files["nll"] - cached["nll"]) < 1e-3 and abs(files["mean_iou"] - cached["mean_iou"]) < 0.01
    assert plain["nll"] != cached["nll"] and scored("--teacher", sharp["a"])["nll"] != scored("--teacher", sharp["a"], sharp["b"])["nll"]
    with pytest.raises(UserError, match="--cache needs --split"):
        main(["--cache", str(both), "--data", str(env["data"])])
