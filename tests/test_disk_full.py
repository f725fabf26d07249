"""A full disk ends in one line, never a crash: every writer (config/split JSON, student.keras, history.csv,
the checkpoint's h5 file, the teacher cache, a .tflite export) stops with `error: no space left writing PATH`
(PATH: the file being written), exit 2, no traceback or signal; its temp file is gone and what was there
before is still whole. The disks are small tmpfs mounts (root only: skipped where mount fails)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from common import io
from common.cli import DiskFull, disk_full_message, is_disk_full
from tests.conftest import ROOT, TINY, cli

PAGE = os.sysconf("SC_PAGE_SIZE")  # tmpfs counts whole pages per file


def pages(nbytes: int) -> int:
    return -(-nbytes // PAGE)


@pytest.fixture
def tmpfs(tmp_path):
    """mount(kb) -> a fresh tmpfs of that size under tmp_path; all unmounted at teardown."""
    mounted = []

    def mount(kb: int) -> Path:
        d = tmp_path / f"disk{len(mounted)}_{kb}k"
        d.mkdir()
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kb}k", "tmpfs", str(d)], capture_output=True, text=True)
        if p.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs (needs root): {p.stderr.strip()}")
        mounted.append(d)
        return d

    yield mount
    for d in reversed(mounted):
        if subprocess.run(["umount", str(d)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(d)], capture_output=True)


# what may share stderr with the error line: tqdm bars (leave=False: a bar, then a blank, after \r) and
# TensorFlow's C++ start-up log (absl), which are printed before anything is written
_BAR = re.compile(r"\d+%\|.*\|\s*\d+/\d+ \[")
_ABSL = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\)|[IWE]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] |To enable the following instructions)"
)


def error_line(p: subprocess.CompletedProcess, disk: Path) -> Path:
    """Check a disk-full exit; return the file it names (on `disk`)."""
    err = p.stderr
    assert p.returncode in (1, 2), f"rc {p.returncode}\n{err[-3000:]}"
    for bad in ("Traceback", "Exception ignored", "Segmentation", "Fatal Python", "core dumped"):
        assert bad not in err, err[-3000:]
    lines = [s for line in err.split("\n") for s in line.split("\r") if s.strip() and not _BAR.search(s) and not _ABSL.match(s)]
    assert len(lines) == 1, err[-3000:]
    m = re.fullmatch(r"error: no space left writing (\S+)", lines[0])
    assert m, lines[0]
    print(f"rc {p.returncode}: {lines[0]}")  # shown with -s
    named = Path(m.group(1))
    assert named.is_relative_to(disk), lines[0]
    return named


def leftovers(d: Path) -> list[str]:
    """Temp files and dirs of the atomic writers, and lock files, anywhere under d."""
    return sorted(
        str(p.relative_to(d)) for p in d.rglob("*") if re.search(r"\.tmp\d+\.|\.partial-\d+|\.old-\d+", p.name) or p.name.endswith(".lock")
    )


def fill(path: Path) -> None:
    """Write `path` until the disk is full."""
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * PAGE)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_whole(run_dir: Path) -> None:
    """Every result file in run_dir is complete: JSON parses, .keras zips pass their CRCs, the checkpoint matches its state."""
    for f in run_dir.glob("*.json"):
        json.loads(f.read_text())
    for f in run_dir.glob("*.keras"):
        with zipfile.ZipFile(f) as z:
            assert z.testzip() is None, f
    if (run_dir / "history.csv").exists():
        assert (run_dir / "history.csv").read_text().startswith("epoch,")
    ckpt, state = run_dir / "checkpoint.weights.h5", run_dir / "checkpoint.json"
    if ckpt.exists():
        import h5py

        with h5py.File(ckpt, "r") as f:
            assert int(f.attrs["epoch"]) == json.loads(state.read_text())["epoch"]


def train(data, out, *extra, check=True):
    return cli("distill_train.py", "--data", data, "--lam", "0", "--out", out, *TINY, *extra, check=check)


@pytest.fixture(scope="module")
def finished(synth_dir, tmp_path_factory):
    """A TINY run finished on a big disk: its dir and its files' sizes."""
    run_dir = tmp_path_factory.mktemp("disk_full") / "run"
    train(synth_dir, run_dir)
    return run_dir


# ---- 1. the helpers ------------------------------------------------------------------------------


def test_is_disk_full_reads_errno_text_and_chain():
    h5 = "Can't decrement id ref count (file write failed: filename = '/d/x.h5', errno = 28, error message = 'No space left on device')"
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert is_disk_full(RuntimeError(h5))  # h5py: no errno, only the text
    assert is_disk_full(OSError(None, h5))
    assert disk_full_message(RuntimeError(h5)) == "no space left writing /d/x.h5"
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/d/y.npy")
        except OSError as e:
            raise ValueError("saving failed") from e  # a library's wrapper
    except ValueError as wrapped:
        assert is_disk_full(wrapped)
        assert disk_full_message(wrapped) == "no space left writing /d/y.npy"
    assert (
        disk_full_message(OSError(errno.ENOSPC, "No space left on device"))
        == "no space left on device ([Errno 28] No space left on device)"
    )
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied", "/d/z"))
    assert not is_disk_full(ValueError("errno = 2"))


def test_atomic_writers_name_the_file_and_keep_the_old_one(tmpfs):
    d = tmpfs(4 * PAGE // 1024)
    io.write_text(d / "a.txt", "old\n")
    big = "x" * (8 * PAGE)
    with pytest.raises(DiskFull, match=f"^no space left writing {re.escape(str(d / 'a.txt'))}$"):
        io.write_text(d / "a.txt", big)
    assert (d / "a.txt").read_text() == "old\n" and leftovers(d) == []
    # atomic_dir: a file's failed write names the file at its final place, an inner atomic_path's too
    with pytest.raises(DiskFull, match=f"writing {re.escape(str(d / 'c' / 'logits.npy'))}$"):
        with io.atomic_dir(d / "c") as tmp, io.naming(tmp / "logits.npy"), open(tmp / "logits.npy", "wb") as f:
            f.write(big.encode())
    with pytest.raises(DiskFull, match=f"writing {re.escape(str(d / 'c' / 'meta.json'))}$"):
        with io.atomic_dir(d / "c") as tmp:
            io.write_text(tmp / "meta.json", big)
    assert not (d / "c").exists() and leftovers(d) == []
    # a lock file that cannot hold its pid is not left behind (it would read as held forever)
    (d / "r").mkdir()
    fill(d / "fill")
    with pytest.raises(DiskFull, match=re.escape(str(d / "r" / ".lock"))):
        io.acquire_lock(d / "r")
    assert not (d / "r" / ".lock").exists()


EXIT_CASE = r"""
import errno, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from common import io
from common.cli import run

def main(argv):
    io.acquire_lock(Path(argv[0]))
    print("before", end="")  # unflushed: os._exit must not lose it
    raise OSError(errno.ENOSPC, "No space left on device", argv[0] + "/events.out")
run(main, sys.argv[2:])
"""


def test_disk_full_outside_the_atomic_writers_exits_at_once_and_releases_the_lock(tmp_path):
    p = subprocess.run([sys.executable, "-c", EXIT_CASE, str(ROOT), str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert (p.returncode, p.stdout, p.stderr) == (2, "before", f"error: no space left writing {tmp_path}/events.out\n")
    assert not (tmp_path / ".lock").exists()


# ---- 2. distill_train.py: a full disk at each writer -----------------------------------------------


def test_training_on_a_full_disk_fails_in_one_line_at_every_writer(synth_dir, finished, tmpfs):
    """Disks sized from a finished run's files so the failure lands at different writers: the run's start
    (config/split), the first student.keras, the first checkpoint (h5py), a write of epoch 2 with epoch 1's
    files in place (they stay whole: the checkpoint still matches checkpoint.json)."""
    k = pages((finished / "student.keras").stat().st_size)
    base = 4  # .lock, config.json, split.json, student.keras.json
    sizes = {
        "start": 2,
        "student": base + k // 2,
        "checkpoint": base + k + 1 + k // 2,  # the checkpoint (weights + optimizer) is bigger than k // 2
        "epoch 2": base + 2 + (11 * k) // 4,  # room for epoch 1 (its checkpoint < 1.75 k), not for epoch 2's new files
    }
    named = {}
    for case, n in sizes.items():
        disk = tmpfs(n * PAGE // 1024)
        run_dir = disk / "run"
        p = train(synth_dir, run_dir, check=False)
        if p.returncode == 0:  # a disk big enough is no failure (the sizes are estimates)
            named[case] = None
            continue
        named[case] = error_line(p, disk)
        assert named[case].parent == run_dir, named[case]
        assert leftovers(disk) == [], case
        check_whole(run_dir)
        if case == "epoch 2":
            assert (run_dir / "checkpoint.json").exists() and json.loads((run_dir / "checkpoint.json").read_text())["epoch"] == 1
    print({c: n and n.name for c, n in named.items()})
    assert len({n.name for n in named.values() if n}) >= 3, named
    assert named["checkpoint"] and named["checkpoint"].name == "checkpoint.weights.h5", named


@pytest.mark.parametrize("free_pages", [0, 1])
def test_overwrite_on_a_full_disk_keeps_the_old_results_or_none(synth_dir, finished, tmpfs, free_pages):
    """A finished run, rerun with --overwrite on a disk with `free_pages` left. 0: the lock file cannot be
    written, before anything is removed: the old results are all there, byte for byte. 1: the lock fits, and
    --overwrite removes the old results (metrics.json, history.csv, student.keras) as the run starts; the
    rerun then fails at a later write and leaves no old metrics next to a new model, and every file whole."""
    used = sum(pages(f.stat().st_size) for f in finished.iterdir())
    disk = tmpfs((used + 8) * PAGE // 1024)
    run_dir = disk / "run"
    shutil.copytree(finished, run_dir)
    fill(disk / "filler")
    os.truncate(disk / "filler", (disk / "filler").stat().st_size - free_pages * PAGE)
    before = {f.name: sha(f) for f in run_dir.iterdir()}
    p = train(synth_dir, run_dir, "--overwrite", check=False)
    named = error_line(p, disk)
    assert named.parent == run_dir
    assert leftovers(disk) == []
    if free_pages == 0:
        assert named.name == ".lock"
        assert {f.name: sha(f) for f in run_dir.iterdir()} == before
    else:
        assert named.name != ".lock"
        assert not (run_dir / "metrics.json").exists()
    check_whole(run_dir)


# ---- 3. the teacher cache and the export -------------------------------------------------------------


def test_cache_on_a_full_disk_keeps_the_old_cache(synth_dir, finished, tmpfs, tmp_path):
    """A rebuild (--overwrite) on a disk with room for the old cache only: one line, the old cache untouched."""
    teacher = finished / "student.keras"  # any model of the project with a logits layer serves as a teacher
    old = tmp_path / "cache"
    p = cli("-m", "teacher.cache", "--teacher", teacher, "--data", synth_dir, "--out", old)
    used = sum(pages(f.stat().st_size) for f in old.iterdir())
    disk = tmpfs((used + 64) * PAGE // 1024)
    out = disk / "cache"
    shutil.copytree(old, out)
    before = {f.name: sha(f) for f in out.iterdir()}
    p = cli("-m", "teacher.cache", "--teacher", teacher, "--data", synth_dir, "--out", out, "--overwrite", check=False)
    assert error_line(p, disk) == out / "logits.npy"
    assert {f.name: sha(f) for f in out.iterdir()} == before
    assert sorted(q.name for q in disk.iterdir()) == ["cache"]  # no .cache.partial-PID, no .cache.lock


def test_export_to_a_full_disk_leaves_no_partial_tflite(finished, synth_dir, tmpfs):
    disk = tmpfs(4 * PAGE // 1024)
    out = disk / "export"
    p = cli(
        "export_tflite.py",
        "--model",
        finished / "student.keras",
        "--data",
        synth_dir,
        "--out",
        out,
        "--quant",
        "fp32",
        "--calib",
        "4",
        check=False,
    )
    assert error_line(p, disk) == out / "student_fp32.tflite"
    assert list(out.iterdir()) == []


def test_the_pi_program_on_a_full_disk_names_the_file_and_leaves_out_as_it_was(finished, synth_dir, tmpfs, tmp_path):
    """pi/infer.py writing masks and a submission onto a disk too small for them: one line naming the file (a mask of
    --out or the CSV), exit 2, no staging folder or temp file left, --out empty as before."""
    exported = tmp_path / "export"
    cli("export_tflite.py", "--model", finished / "student.keras", "--data", synth_dir, "--out", exported, "--quant", "fp32")
    model = exported / "student_fp32.tflite"
    pi_python = os.environ.get("PI_PYTHON") or sys.executable
    for kb, csv in ((8, True), (24, True), (8, False)):
        disk = tmpfs(kb)
        out, sub = disk / "masks", disk / "sub.csv"
        p = subprocess.run(
            [pi_python, "pi/infer.py", "--model", model, "--images", synth_dir / "test" / "images", "--out", out]
            + (["--submission", sub] if csv else []),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        named = error_line(p, disk)
        assert named == sub if csv else named.parent == out, named
        assert sorted(os.listdir(out)) == [] and not sub.exists() and leftovers(disk) == []
