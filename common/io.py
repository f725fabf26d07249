"""Atomic writes and run directories.

Every model, JSON and CSV is written to a temporary file in the same directory and renamed, so a
kill at any moment leaves the old file or the new one, never a truncated one. A run dir that
already holds results is refused unless the user passes --overwrite, and a lock file stops two
runs from writing the same dir at once.

A full disk (or quota) while writing ends as `DiskFull(PATH)`, "no space left writing PATH", PATH the
file being written (its final name), raised after the temp file or dir is removed: what was there
before is untouched (common.cli prints it as one line).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from common.cli import DiskFull, UserError, at_exit, is_disk_full, quiet_disk_full

RESULT_FILES = ("metrics.json", "history.csv", "teacher.keras", "teacher_last.keras", "student.keras")
# An interrupted run's checkpoint (training.loop writes it each epoch; --resume reads it; a finished run deletes it).
CKPT_WEIGHTS, CKPT_STATE = "checkpoint.weights.h5", "checkpoint.json"


@contextmanager
def atomic_path(path, suffix=None):
    """Yield a temp path next to `path`; on success rename it onto `path`, else delete it.

    The temp name carries the writer's pid (`.NAME.tmpPID.XXXX.SUFFIX`): after a successful
    replace, the temp files of the same target left by killed writers (pid no longer alive) are
    deleted, so a SIGKILL mid-write costs disk space only until the next successful write.

    A full disk while writing raises `DiskFull(path)` (after the temp file is removed); the writer's own
    reports of it that Python would print meanwhile are dropped (common.cli.quiet_disk_full)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{_tmp_prefix(path.name)}{os.getpid()}.", suffix=suffix or path.suffix)
    except OSError as e:
        _raise_if_full(e, path)
        raise
    os.close(fd)
    try:
        with quiet_disk_full():
            yield Path(tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except Exception as e:
        _raise_if_full(e, path)
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    remove_stale_temps(path)


def _raise_if_full(exc: BaseException, path: Path, inside: Path | None = None) -> None:
    """Raise `DiskFull(path)` from `exc` when it says the disk is full. A DiskFull that names a file under
    `inside` (a temp dir that becomes `path`) is renamed to the file's final place under `path`."""
    if not is_disk_full(exc):
        return
    if isinstance(exc, DiskFull):
        if inside is None:
            raise exc
        named = Path(exc.path)
        raise DiskFull(path / named.relative_to(inside) if named.is_relative_to(inside) else named) from exc
    named = getattr(exc, "filename", None)
    if inside is not None and named and Path(named).is_relative_to(inside):
        raise DiskFull(path / Path(named).relative_to(inside)) from exc
    raise DiskFull(path) from exc


@contextmanager
def naming(path):
    """An OSError raised in the body that names no file (a failed write or flush of an open file) is given
    `path` as its filename, so a full disk is reported by the file being written (atomic_dir, common.cli)."""
    try:
        yield
    except OSError as e:
        if e.filename is None:
            e.filename = str(path)
        raise


def _tmp_prefix(name: str) -> str:
    return f".{name}.tmp"


def _stale(name: str, pattern: str) -> bool:
    """True when `name` matches `pattern` (its group 1 a pid) and that pid is a dead process (not this one)."""
    m = re.fullmatch(pattern, name)
    return m is not None and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1)))


def remove_stale_temps(path) -> list[Path]:
    """Delete the temp files of `atomic_path(path)` and temp dirs of `atomic_dir(path)` that killed
    writers left behind (their pid is dead); returns what it deleted."""
    path = Path(path)
    patterns = (
        re.escape(_tmp_prefix(path.name)) + r"(\d+)\.[a-z0-9_]{8}.*",  # mkstemp's 8 random characters
        re.escape(_partial_prefix(path.name)) + r"(\d+)",
    )
    gone, start = [], f".{path.name}."
    try:
        siblings = [p for p in path.parent.iterdir() if p.name.startswith(start)]
    except OSError:
        return gone
    for p in siblings:
        if any(_stale(p.name, pat) for pat in patterns):
            try:
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
                gone.append(p)
            except FileNotFoundError:
                pass  # another process cleaned it first
    return gone


def fsync_path(path) -> None:
    """fsync a file, or a directory (its entries: the names of what was created or renamed in it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _partial_prefix(name: str) -> str:
    return f".{name}.partial-"


def _aside_prefix(name: str) -> str:
    return f".{name}.old-"


def recover_dir(path) -> None:
    """Undo what a writer of `atomic_dir(path)` killed mid-swap left: its old dir renamed aside
    with no new one in place is renamed back; stale partial dirs and set-aside dirs are deleted.

    Call it while holding the lock that serialises writers of `path`."""
    path = Path(path)
    aside = re.escape(_aside_prefix(path.name)) + r"(\d+)"
    try:
        siblings = sorted(path.parent.iterdir())
    except OSError:
        return
    for p in siblings:
        if not _stale(p.name, aside):
            continue
        if not os.path.lexists(path):
            os.rename(p, path)  # killed between "old aside" and "new in place": the old dir comes back
        else:
            shutil.rmtree(p, ignore_errors=True)
    remove_stale_temps(path)


@contextmanager
def atomic_dir(path):
    """Yield a new empty temp dir next to `path` (`.NAME.partial-PID`); on success fsync its files and
    swap it into place: the old `path` is renamed aside, the new dir renamed onto `path`, the old one
    deleted. A reader sees the old dir or the new one, never a mix of their files; a kill mid-swap
    is undone by `recover_dir` on the next start. On failure the temp dir is deleted; a full disk
    raises `DiskFull` naming the file being written at its final place (`path/NAME`: an OSError's
    filename or an inner atomic_path's DiskFull), else `path` itself.

    Writers of the same `path` must hold one lock (the temp names carry only the pid)."""
    path = Path(path)
    if os.path.lexists(path) and not path.is_dir():
        raise UserError(f"{path} exists and is not a directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f"{_partial_prefix(path.name)}{os.getpid()}"
    aside = path.parent / f"{_aside_prefix(path.name)}{os.getpid()}"
    if aside.exists() and not os.path.lexists(path):  # left by a dead process whose pid this one reuses
        os.rename(aside, path)
    recover_dir(path)
    for p in (tmp, aside):
        shutil.rmtree(p, ignore_errors=True)
    tmp.mkdir()
    try:
        try:
            with quiet_disk_full():
                yield tmp
                for f in tmp.iterdir():
                    if f.is_file():
                        fsync_path(f)
                fsync_path(tmp)
        except Exception as e:
            shutil.rmtree(tmp, ignore_errors=True)
            _raise_if_full(e, path, inside=tmp)
            raise
        if os.path.lexists(path):
            os.rename(path, aside)
            os.rename(tmp, path)
            fsync_path(path.parent)
            shutil.rmtree(aside, ignore_errors=True)  # one left behind is deleted by the next recover_dir
        else:
            os.rename(tmp, path)
        fsync_path(path.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def save_model(model, path) -> None:
    """Save a Keras model atomically (`.keras` needs the suffix, so the temp name keeps it)."""
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)


def check_replaceable(path, is_ours, what: str, flag: str = "--out") -> None:
    """--overwrite replaces a folder of the kind this program writes, never another: a non-empty `path` that
    `is_ours(path)` does not recognise (a data folder, the repo's docs/, a parent of the runs) is refused, so a
    mistyped --out costs an error, not the folder."""
    path = Path(path)
    if path.is_dir() and any(path.iterdir()) and not is_ours(path):
        raise UserError(f"{flag} {path} is not empty and is not a {what}: --overwrite replaces only a {what}; choose another {flag}")


def prepare_run_dir(run_dir, overwrite: bool, resume: bool = False) -> Path:
    """Create `run_dir` for a new run; refuse one that holds results unless overwrite. Takes a lock.

    With resume, the run dir's results are kept (the run continues from its checkpoint)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"run dir {run_dir} exists and is not a directory")
    run_dir.mkdir(parents=True, exist_ok=True)
    if not os.access(run_dir, os.W_OK):
        raise UserError(f"run dir {run_dir} is not writable")
    acquire_lock(run_dir)
    if resume:
        return run_dir
    existing = [f for f in RESULT_FILES + (CKPT_STATE, CKPT_WEIGHTS) if (run_dir / f).exists()]
    if existing and not overwrite:
        release_lock(run_dir)
        raise UserError(f"run dir {run_dir} already holds results ({', '.join(existing)}); pass --overwrite to replace them")
    for f in existing:
        (run_dir / f).unlink()
    return run_dir


_LOCKS: set[Path] = set()


def sibling_lock(path) -> Path:
    """The lock file of a dir that is replaced as a whole (`atomic_dir`): `.NAME.lock` next to it,
    so it survives the swap. `is_locked(path)` sees it as well as `path/.lock`."""
    path = Path(path)
    return path.parent / f".{path.name}.lock"


def acquire_lock(run_dir: Path, sibling: bool = False, what: str = "run dir") -> None:
    """Take `run_dir/.lock` (or, with sibling, `sibling_lock(run_dir)`); refuse one a live process holds."""
    run_dir = Path(run_dir)
    lock = sibling_lock(run_dir) if sibling else run_dir / ".lock"
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            pid = lock.read_text().strip()
        except OSError:
            pid = "?"
        if pid.isdigit() and not _alive(int(pid)):
            lock.unlink(missing_ok=True)  # stale lock of a killed run
            return acquire_lock(run_dir, sibling, what)
        raise UserError(f"{what} {run_dir} is in use by another run (pid {pid}, lock file {lock})") from None
    try:
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
    except OSError as e:  # a lock left empty would read as held by a live run forever
        lock.unlink(missing_ok=True)
        _raise_if_full(e, lock)
        raise
    _LOCKS.add(lock)


def is_locked(run_dir: Path) -> bool:
    """True while a live process holds run_dir's lock (a stale lock of a killed run does not count).

    Both kinds count: `run_dir/.lock` (a run) and `sibling_lock(run_dir)` (a dir being rebuilt)."""
    for lock in (Path(run_dir) / ".lock", sibling_lock(run_dir)):
        try:
            pid = lock.read_text().strip()
        except OSError:
            continue
        if lock not in _LOCKS and (not pid.isdigit() or _alive(int(pid))):
            return True
    return False


def release_lock(run_dir: Path, sibling: bool = False) -> None:
    lock = sibling_lock(run_dir) if sibling else Path(run_dir) / ".lock"
    if lock in _LOCKS:
        lock.unlink(missing_ok=True)
        _LOCKS.discard(lock)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@at_exit  # atexit, and before a disk-full exit (common.cli, which skips the atexit handlers)
def _release_all() -> None:
    for lock in list(_LOCKS):
        lock.unlink(missing_ok=True)
