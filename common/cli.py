"""Command-line plumbing shared by every entry point.

Bad input must end in one line on stderr and a non-zero exit, never a traceback:
raise `UserError("what is wrong, naming the file or value")` anywhere, and wrap `main` in `run`.

A full disk (ENOSPC, EDQUOT) ends the same way, in one line: `error: no space left writing PATH`
(common.io's atomic writers raise `DiskFull(PATH)` naming the file they were writing, after removing
its temp file), exit 2. A library that was writing when the disk filled may hold half-closed objects
(h5py: its files' deallocators report the failed flush over and over, and the interpreter's teardown
can crash in them), so a disk-full exit prints its line, runs the `at_exit` cleanups (the run-dir
locks) and leaves with os._exit, skipping teardown; while a writer runs, the follow-on reports of
the same full disk are not printed (`quiet_disk_full`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import sys


class UserError(Exception):
    """An error caused by the user's input; printed as one line, exit code 2."""


class DiskFull(UserError):
    """The disk (or quota) filled while writing `path`: `no space left writing PATH`."""

    def __init__(self, path):
        self.path = path
        super().__init__(f"no space left writing {path}")


_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# how a full disk reads in the text of an error that lost its errno (h5py: "errno = 28, error message = 'No
# space left on device'", sometimes as a RuntimeError or an OSError whose errno is None; a wrapper's message)
_FULL_TEXT = re.compile(r"No space left on device|Disk quota exceeded|errno\s*=\s*(?:28|122)\b|\[Errno (?:28|122)\]")
_H5_FILENAME = re.compile(r"filename = '([^']+)'")


def _chain(exc):
    """`exc` and the exceptions it was raised from or while handling (__cause__, __context__), each once."""
    seen, todo = set(), [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__]


def _full(e: BaseException) -> bool:
    if isinstance(e, DiskFull) or (isinstance(e, OSError) and e.errno in _FULL_ERRNOS):
        return True
    try:
        return bool(_FULL_TEXT.search(str(e)))
    except Exception:  # noqa: BLE001 - a broken __str__ is no full disk
        return False


def is_disk_full(exc: BaseException | None) -> bool:
    """True when `exc`, or an exception in its __cause__/__context__ chain, says the disk (or quota) is full."""
    return exc is not None and any(_full(e) for e in _chain(exc))


def disk_full_message(exc: BaseException) -> str:
    """The one line of a disk-full `exc`: `no space left writing PATH` (the path of a DiskFull in its chain, else
    an OSError's filename, else a filename in h5py's text), else `no space left on device (MESSAGE)`."""
    chain = list(_chain(exc))
    for e in chain:
        if isinstance(e, DiskFull):
            return str(e)
    for e in chain:
        if isinstance(e, OSError) and e.filename and _full(e):
            return f"no space left writing {e.filename}"
    for e in chain:
        m = _H5_FILENAME.search(str(e)) if _full(e) else None
        if m:
            return f"no space left writing {m.group(1)}"
    first = next((e for e in chain if _full(e)), exc)
    text = str(first).strip()
    return f"no space left on device ({text.splitlines()[0] if text else type(first).__name__})"


@contextlib.contextmanager
def quiet_disk_full():
    """While the body runs, reports of a full disk that Python would print and go on (sys.unraisablehook: an
    exception in a deallocator; sys.excepthook, which Cython code such as h5py's calls before it) are dropped;
    every other report goes to the hook that was there. The exception the writer raises is not affected."""
    old_unraisable, old_except = sys.unraisablehook, sys.excepthook

    def unraisable(u):
        if not is_disk_full(u.exc_value):
            old_unraisable(u)

    def excepthook(typ, value, tb):
        if not is_disk_full(value):
            old_except(typ, value, tb)

    sys.unraisablehook, sys.excepthook = unraisable, excepthook
    try:
        yield
    finally:
        if sys.unraisablehook is unraisable:
            sys.unraisablehook = old_unraisable
        if sys.excepthook is excepthook:
            sys.excepthook = old_except


_CLEANUPS: list = []


def at_exit(fn):
    """Register `fn` with atexit, and to run before a disk-full exit (which skips the atexit handlers); a decorator."""
    import atexit

    atexit.register(fn)
    _CLEANUPS.append(fn)
    return fn


def _exit_disk_full(exc: BaseException, debug: bool, code: int = 2):
    """Print the disk-full line, run the `at_exit` cleanups and leave at once (see the module doc)."""
    if debug:
        import traceback

        traceback.print_exception(exc)
    try:
        print(f"error: {' '.join(disk_full_message(exc).split())}", file=sys.stderr, flush=True)
    finally:
        for fn in _CLEANUPS:
            try:
                fn()
            except Exception:  # noqa: BLE001, S110 - a cleanup that fails must not stop the exit
                pass
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001, S110
                pass
        os._exit(code)


def run(main, argv=None) -> None:
    """Call `main(argv)`; turn UserError/OSError/anything unexpected into `error: ...` + exit 2.

    A full disk ends the process at once, with os._exit(2) after its line (the module doc says why): a caller
    that runs `run` in-process cannot catch it."""
    debug = os.environ.get("KDSEG_DEBUG") == "1"
    try:
        try:
            with quiet_disk_full():
                code = main(argv)
        except Exception as e:
            if is_disk_full(e):
                _exit_disk_full(e, debug)  # does not return
            raise
    except UserError as e:
        _die(str(e))
    except KeyboardInterrupt:
        _die("interrupted", code=130)
    except (OSError, MemoryError) as e:
        if debug:
            raise
        _die(f"{type(e).__name__}: {e}")
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001 - the promise is "never a traceback"
        if debug:
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        _die(f"unexpected {type(e).__name__}: {msg} (set KDSEG_DEBUG=1 for a traceback)")
    sys.exit(code or 0)


def _die(msg: str, code: int = 2) -> None:
    one_line = " ".join(msg.split())
    print(f"error: {one_line}", file=sys.stderr, flush=True)
    sys.exit(code)


def check_range(name: str, value: float, lo: float, hi: float, lo_open=False, hi_open=False) -> None:
    """Raise UserError unless lo <=/< value <=/< hi."""
    ok_lo = value > lo if lo_open else value >= lo
    ok_hi = value < hi if hi_open else value <= hi
    if not (ok_lo and ok_hi) or value != value:
        lb, rb = ("(" if lo_open else "["), (")" if hi_open else "]")
        raise UserError(f"{name}={value} is outside {lb}{lo}, {hi}{rb}")
