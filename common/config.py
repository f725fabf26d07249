"""Frozen dataclass configs: each field with its --help text (`option`), parsed from the command line
(`parse_args`), printed at start (`show`) and saved as config.json with versions and backend (`environment`)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys

from common.choices import BACKENDS


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
    for name in BACKENDS:
        mod = sys.modules.get(name)
        if mod is not None:
            env[name] = getattr(mod, "__version__", "?")
    return env


def show(cfg) -> None:
    print(f"{type(cfg).__name__}:")
    for k, v in dataclasses.asdict(cfg).items():
        print(f"  {k:18s} = {json.dumps(v) if not isinstance(v, str) else v}")
    sys.stdout.flush()


def option(help: str, default=dataclasses.MISSING, choices=None):
    """A config field with its --help text: the one place the text lives (parse_args shows it, with the default).

    `choices`: the fixed set of values, where there is one, from its registry (a tuple, or a function that returns
    one, e.g. models.registry.arch_names); --help lists it. The config's own validation still checks the value."""
    meta = {"help": help} if choices is None else {"help": help, "choices": choices}
    return dataclasses.field(default=default, metadata=meta)


def choices_of(f: dataclasses.Field) -> tuple:
    """The field's fixed set of values (option(choices=...)), or () where any value goes."""
    c = f.metadata.get("choices", ())
    return tuple(c() if callable(c) else c)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description as written (module docstrings), and each option's default after its help text, unless
    the text already says what the default is (or there is none to show: None, "", an empty list, a plain switch)."""

    def _get_help_string(self, action):
        text = action.help or ""
        d = action.default
        if "default" in text.lower() or d is None or d is argparse.SUPPRESS or isinstance(action, argparse._StoreTrueAction):
            return text
        if isinstance(d, (list, tuple)):
            if not d:
                return text
            d = " ".join(map(str, d))
        if d == "":
            return text
        return f"{text} (default: {str(d).replace('%', '%%')})"


def _metavar(values) -> str:
    return "{" + ",".join(v if v else '""' for v in map(str, values)) + "}"


def _number_or_word(v: str):
    """A field typed `float | str` takes a number or a keyword (e.g. --temperature 2 or --temperature auto)."""
    try:
        return float(v)
    except ValueError:
        return v


def _flag(field: str) -> str:
    """A config field's command-line flag: base_filters -> --base-filters."""
    return "--" + field.replace("_", "-")


def parse_args(cls, argv=None, doc: str = "", required=("data", "out"), multi=()):
    """argparse from a frozen dataclass: one --flag per field (bools get --x/--no-x), plus --overwrite and --resume.

    Each flag's help text is its field's (option(help=...)), followed by the default; a field with a fixed set of
    values lists it in place of the metavar ({T,T2,1}). The values are not checked here (no argparse `choices`):
    the config's validate() does that, with one `error: ...` line that names the flag. Fields named in `multi` take
    one or more values (stored as a tuple). Returns (cfg, opts) with opts.overwrite and opts.resume.
    """
    types = {"int": int, "float": float, "str": str, "float | str": _number_or_word}
    ap = argparse.ArgumentParser(description=doc, formatter_class=HelpFormatter)
    for f in dataclasses.fields(cls):
        flag = _flag(f.name)
        kw = {"help": f.metadata.get("help", "").replace("%", "%%")}
        if choices_of(f):
            kw["metavar"] = _metavar(choices_of(f))
        if f.name in multi:
            ap.add_argument(flag, nargs="+", default=f.default, **kw)
        elif f.type == "bool":
            ap.add_argument(flag, default=f.default, action=argparse.BooleanOptionalAction, **kw)
        elif f.name in required:
            ap.add_argument(flag, required=True, type=types.get(f.type, str), **kw)
        else:
            ap.add_argument(flag, type=types.get(f.type, str), default=f.default, **kw)
    ap.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run in --out")
    ap.add_argument("--resume", action="store_true", help="continue the interrupted run in --out from its last checkpoint")
    args = vars(ap.parse_args(argv))
    opts = argparse.Namespace(overwrite=args.pop("overwrite"), resume=args.pop("resume"))
    for name in multi:
        args[name] = tuple(args[name] or ())
    return cls(**args), opts


def _field_value(f: dataclasses.Field, v):
    """A preset's value for field `f`, typed as parse_args would type the flag's text; ValueError when it cannot be."""
    if f.type == "tuple":
        if not isinstance(v, (list, tuple)):
            raise ValueError("a list")
        return tuple(str(x) for x in v)
    if f.type == "bool":
        if not isinstance(v, bool):
            raise ValueError("true or false")
        return v
    if isinstance(v, bool) or isinstance(v, (list, tuple, dict)) or v is None:
        raise ValueError({"int": "an integer", "float": "a number", "float | str": "a number or a word"}.get(f.type, "a string"))
    if f.type == "int":
        if not isinstance(v, int):
            raise ValueError("an integer")
        return v
    if f.type == "float":
        if not isinstance(v, (int, float)):
            raise ValueError("a number")
        return float(v)
    if f.type == "float | str":
        return float(v) if isinstance(v, (int, float)) else str(v)
    return str(v)


def from_values(cls, values: dict, what: str):
    """The config `cls` from a dict of field values (a preset's section; keys as the fields, e.g. "base_filters"),
    each typed as its flag would be. ValueError naming `what` and the key for an unknown key or a value of the wrong
    type; the values themselves are checked by the config's validate(), as for the command line."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    typed = {}
    for key, v in values.items():
        if key not in fields:
            raise ValueError(f"{what}: unknown key {key!r} (not a field of {cls.__name__}; see --help of its script)")
        try:
            typed[key] = _field_value(fields[key], v)
        except ValueError as e:
            raise ValueError(f"{what}: {key!r} must be {e}, not {json.dumps(v)}") from None
    missing = [n for n, f in fields.items() if f.default is dataclasses.MISSING and n not in typed]
    if missing:
        raise ValueError(f"{what}: {missing[0]!r} is required")
    return cls(**typed)


def to_argv(cfg) -> list[str]:
    """The flags that give `cfg` back through parse_args: each field that differs from its default, in field order
    (bools as --x / --no-x, tuples as one flag and its values). parse_args(type(cfg), to_argv(cfg)) == cfg."""
    out = []
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if f.default is not dataclasses.MISSING and v == f.default:
            continue
        flag = _flag(f.name)
        if f.type == "bool":
            out.append(flag if v else _flag("no_" + f.name))
        elif f.type == "tuple":
            out += [flag, *map(str, v)] if v else []
        else:
            out += [flag, str(v)]
    return out


def read_config_file(path) -> dict:
    """A preset file as a dict: a Python file's `PRESET` (its docstring as "description"), or a JSON object.

    A missing `name.json` whose `name.py` sits beside it reads the .py (presets were JSON files before), so older
    commands keep working. ValueError (one line) for a file that cannot be read or holds no preset."""
    from pathlib import Path

    path = Path(path)
    if not path.exists() and path.suffix == ".json" and path.with_suffix(".py").exists():
        path = path.with_suffix(".py")
    if path.suffix != ".py":
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot read sweep config {path}: {e}") from None
    import runpy

    try:
        ns = runpy.run_path(str(path))
    except OSError as e:
        raise ValueError(f"cannot read sweep config {path}: {e}") from None
    except Exception as e:  # a preset is code: its own error, in one line
        raise ValueError(f"sweep config {path} fails: {type(e).__name__}: {e}") from None
    if not isinstance(ns.get("PRESET"), dict):
        raise ValueError(f"sweep config {path} defines no PRESET dict")
    return {**ns["PRESET"], **({"description": " ".join(ns["__doc__"].split())} if ns.get("__doc__") else {})}
