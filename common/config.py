"""Frozen dataclass configs: print at start, save as config.json with versions and backend."""

from __future__ import annotations

import dataclasses
import json
import platform
import sys


def environment() -> dict:
    """Library versions and backend, recorded with every run."""
    import keras
    import numpy

    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "numpy": numpy.__version__,
    }
    for name in ("torch", "tensorflow", "jax"):
        mod = sys.modules.get(name)
        if mod is not None:
            env[name] = getattr(mod, "__version__", "?")
    return env


def show(cfg) -> None:
    print(f"{type(cfg).__name__}:")
    for k, v in dataclasses.asdict(cfg).items():
        print(f"  {k:18s} = {json.dumps(v) if not isinstance(v, str) else v}")
    sys.stdout.flush()


def _number_or_word(v: str):
    """A field typed `float | str` takes a number or a keyword (e.g. --temperature 2 or --temperature auto)."""
    try:
        return float(v)
    except ValueError:
        return v


def parse_args(cls, argv=None, doc: str = "", required=("data", "out"), multi=()):
    """argparse from a frozen dataclass: one --flag per field (bools get --x/--no-x), plus --overwrite.

    Fields named in `multi` take one or more values (stored as a tuple). Returns (cfg, opts) with
    opts.overwrite and opts.resume.
    """
    import argparse

    types = {"int": int, "float": float, "str": str, "float | str": _number_or_word}
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        if f.name in multi:
            ap.add_argument(flag, nargs="+", default=f.default)
        elif f.type == "bool":
            ap.add_argument(flag, default=f.default, action=argparse.BooleanOptionalAction)
        elif f.name in required:
            ap.add_argument(flag, required=True, type=types.get(f.type, str))
        else:
            ap.add_argument(flag, type=types.get(f.type, str), default=f.default)
    ap.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run in --out")
    ap.add_argument("--resume", action="store_true", help="continue the interrupted run in --out from its last checkpoint")
    args = vars(ap.parse_args(argv))
    opts = argparse.Namespace(overwrite=args.pop("overwrite"), resume=args.pop("resume"))
    for name in multi:
        args[name] = tuple(args[name] or ())
    return cls(**args), opts
