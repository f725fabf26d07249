"""Command-line plumbing shared by every entry point.

Bad input must end in one line on stderr and a non-zero exit, never a traceback:
raise `UserError("what is wrong, naming the file or value")` anywhere, and wrap `main` in `run`.
"""

from __future__ import annotations

import os
import sys


class UserError(Exception):
    """An error caused by the user's input; printed as one line, exit code 2."""


def run(main, argv=None) -> None:
    """Call `main(argv)`; turn UserError/OSError/anything unexpected into `error: ...` + exit 2."""
    debug = os.environ.get("KDSEG_DEBUG") == "1"
    try:
        code = main(argv)
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
