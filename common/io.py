"""Atomic writes and run directories.

Every model, JSON and CSV is written to a temporary file in the same directory and renamed, so a
kill at any moment leaves the old file or the new one, never a truncated one. A run dir that
already holds results is refused unless the user passes --overwrite, and a lock file stops two
runs from writing the same dir at once.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from common.cli import UserError

RESULT_FILES = ("metrics.json", "history.csv", "teacher.keras", "student.keras")


@contextmanager
def atomic_path(path, suffix=None):
    """Yield a temp path next to `path`; on success rename it onto `path`, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix or path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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
    existing = [f for f in RESULT_FILES + ("checkpoint.json", "checkpoint.weights.h5") if (run_dir / f).exists()]
    if existing and not overwrite:
        release_lock(run_dir)
        raise UserError(f"run dir {run_dir} already holds results ({', '.join(existing)}); pass --overwrite to replace them")
    for f in existing:
        (run_dir / f).unlink()
    return run_dir


_LOCKS: set[Path] = set()


def acquire_lock(run_dir: Path) -> None:
    lock = run_dir / ".lock"
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        pid = lock.read_text().strip() if lock.exists() else "?"
        if pid.isdigit() and not _alive(int(pid)):
            lock.unlink(missing_ok=True)  # stale lock of a killed run
            return acquire_lock(run_dir)
        raise UserError(f"run dir {run_dir} is in use by another run (pid {pid}, lock file {lock})") from None
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
    _LOCKS.add(lock)


def is_locked(run_dir: Path) -> bool:
    """True while a live process holds run_dir's lock (a stale lock of a killed run does not count)."""
    lock = Path(run_dir) / ".lock"
    try:
        pid = lock.read_text().strip()
    except OSError:
        return False
    return lock not in _LOCKS and (not pid.isdigit() or _alive(int(pid)))


def release_lock(run_dir: Path) -> None:
    lock = Path(run_dir) / ".lock"
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


@atexit.register
def _release_all() -> None:
    for lock in list(_LOCKS):
        lock.unlink(missing_ok=True)
