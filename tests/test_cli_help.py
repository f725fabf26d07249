"""Every entry point answers --help (exit 0, a usage line), and every flag of distill_train.py explains itself:
help text, its default, and the fixed set of values where there is one (taken from the registries)."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP_DIRS = {"tests", "runs", "cache", "notebooks", "docs", "shared", "__pycache__"}


def entry_points() -> list[str]:
    """Every .py of the repo (tests and hidden folders aside) with an `if __name__ == "__main__":` block, as a command:
    `-m package.module` for package modules, the script path for top-level scripts and pi/ (the Pi runs them as files)."""
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if any(part.startswith(".") or part in SKIP_DIRS for part in rel.parts[:-1]):
            continue
        if not re.search(r"""^if __name__ == ["']__main__["']:""", path.read_text(encoding="utf-8"), re.M):
            continue
        in_package = len(rel.parts) > 1 and (path.parent / "__init__.py").exists() and rel.parts[0] != "pi"
        found.append("-m " + ".".join(rel.with_suffix("").parts) if in_package else str(rel))
    return found


ENTRY_POINTS = entry_points()


def run_help(command: str) -> subprocess.CompletedProcess:
    """`python COMMAND --help`. Keras' numpy backend imports in a third of torch's time, and --help builds nothing, so
    every command but distill_train.py (the one whose options are read below: the default backend) runs on it."""
    backend = {} if command == "distill_train.py" else {"KERAS_BACKEND": "numpy"}
    return subprocess.run(
        [sys.executable, *command.split(), "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "OMP_NUM_THREADS": "1", "COLUMNS": "100", **backend},
    )


@pytest.fixture(scope="module")
def helps() -> dict:
    """{command: CompletedProcess of `python COMMAND --help`}, a few at a time (most import Keras: seconds each)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(ENTRY_POINTS, pool.map(run_help, ENTRY_POINTS)))


def test_the_entry_points_are_found():
    for expected in ("distill_train.py", "evaluate.py", "export_tflite.py", "-m teacher.train", "-m experiments.plots", "pi/infer.py"):
        assert expected in ENTRY_POINTS, ENTRY_POINTS


@pytest.mark.parametrize("command", ENTRY_POINTS)
def test_help_exits_0(helps, command):
    p = helps[command]
    assert p.returncode == 0, f"python {command} --help exited {p.returncode}:\n{p.stderr[-2000:]}"
    assert p.stdout.startswith("usage:"), p.stdout[:500]
    assert "Traceback" not in p.stderr, p.stderr[-2000:]


def option_blocks(help_text: str) -> dict:
    """{"--flag": the option's lines in --help (invocation, then its wrapped help)} for every option."""
    lines = help_text.split("options:", 1)[1].splitlines()
    blocks, current = {}, None
    for line in lines:
        if re.match(r"^  -", line):
            current = []
            for flag in re.findall(r"(?:^|, )(--?[\w-]+)", line.strip()):
                blocks[flag] = current
            current.append(line)
        elif current is not None and re.match(r"^ {3,}\S", line):
            current.append(line)
        elif line.strip():
            current = None  # another section
    return {flag: "\n".join(block) for flag, block in blocks.items()}


def help_of(block: str) -> str:
    """An option's help text: what follows the invocation (after 2+ spaces on its line), and the continuation lines."""
    first, *rest = block.splitlines()
    same_line = re.split(r"\s{2,}", first.strip(), maxsplit=1)
    return " ".join([same_line[1] if len(same_line) == 2 else "", *(r.strip() for r in rest)]).strip()


@pytest.fixture(scope="module")
def distill_help(helps) -> str:
    p = helps["distill_train.py"]
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_every_distill_flag_has_help_text(distill_help):
    blocks = option_blocks(distill_help)
    from student.config import DistillConfig

    flags = ["--" + f.name.replace("_", "-") for f in dataclasses.fields(DistillConfig)] + ["--overwrite", "--resume"]
    assert len(flags) >= 40
    missing = [flag for flag in flags if flag not in blocks]
    assert not missing, f"not in --help: {missing}"
    silent = [flag for flag in flags if not help_of(blocks[flag])]
    assert not silent, f"flags without help text: {silent}"
    every = [flag for flag, block in blocks.items() if not help_of(block)]  # options that are not config fields too
    assert not every, f"options without help text: {every}"


def test_every_distill_default_is_shown(distill_help):
    """A field with a default worth showing (not "", () or None) says it: "(default: ...)" or its own words."""
    from student.config import DistillConfig

    blocks = option_blocks(distill_help)
    for f in dataclasses.fields(DistillConfig):
        if f.default in (None, "", ()) or f.default is dataclasses.MISSING:
            continue
        block = " ".join(blocks["--" + f.name.replace("_", "-")].split())
        shown = " ".join(f.default) if isinstance(f.default, tuple) else str(f.default)
        assert f"(default: {shown})" in block or "default" in help_of(block).replace(f"(default: {shown})", ""), (f.name, block)


def test_fixed_sets_of_values_are_listed(distill_help):
    """--scale, --augment, --feature-loss, --arch, --precision, --accelerator, ... list their values, from common.choices."""
    from common.choices import ACCELERATORS, AUGMENTS, FEATURE_LOSSES, MONITORS, PRECISIONS, RESIZE_MODES, SCALE_RULES, arch_names

    expected = {
        "--scale": SCALE_RULES,
        "--augment": AUGMENTS,
        "--feature-loss": ('""', *FEATURE_LOSSES),
        "--arch": arch_names(),
        "--precision": PRECISIONS,
        "--accelerator": ACCELERATORS,
        "--monitor": MONITORS,
        "--resize-mode": RESIZE_MODES,
    }
    for flag, values in expected.items():
        assert f"{flag} {{{','.join(values)}}}" in distill_help, (flag, values)
    assert "--scale {T,T2,1}" in distill_help


def test_teacher_help_lists_its_losses(helps):
    from common.choices import TEACHER_LOSSES as LOSSES

    p = helps["-m teacher.train"]
    assert f"--loss {{{','.join(LOSSES)}}}" in p.stdout, p.stdout[-2000:]
    assert help_of(option_blocks(p.stdout)["--loss"])


def test_parse_args_from_a_config_with_help_choices_and_a_number_or_word(capsys):
    """common.config.parse_args in process: help text, default and choices from the field; values are not checked
    by argparse (the config's validate() gives the one-line error), and a `float | str` field takes either."""
    from common.config import option, parse_args

    @dataclasses.dataclass(frozen=True)
    class Cfg:
        data: str = option("the data")
        mode: str = option("how 100% of it runs", "fast", choices=("fast", "slow"))
        t: float | str = option("a number or auto", 2.0)
        names: tuple = option("one or more names", ("a", "b"))

    cfg, opts = parse_args(Cfg, ["--data", "d", "--t", "auto", "--mode", "other"], required=("data",), multi=("names",))
    assert cfg == Cfg(data="d", mode="other", t="auto", names=("a", "b")) and not opts.overwrite and not opts.resume
    assert parse_args(Cfg, ["--data", "d", "--t", "0.5", "--names", "x"], required=("data",), multi=("names",))[0].t == 0.5
    with pytest.raises(SystemExit) as e:
        parse_args(Cfg, ["--help"], doc="A doc\n\n    kept as written", required=("data",), multi=("names",))
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--mode {fast,slow} how 100% of it runs (default: fast)" in out, out
    assert "(default: 2.0)" in out and "(default: a b)" in out and "--data DATA the data" in out


def test_a_config_goes_to_flags_and_back():
    """common.config.to_argv writes the flags that parse_args reads back into the same config (the sweep runs its
    checked configs this way); from_values refuses an unknown key or a value of the wrong type, naming it."""
    from common.config import from_values, parse_args, to_argv
    from student.config import DistillConfig
    from teacher.config import TeacherConfig

    multi = ("unlabelled", "teacher", "teacher_weights", "feature_layers")
    values = {"data": "d", "out": "o", "arch": "sepunet", "base_filters": 8, "lam": 0.5, "temperature": "auto", "flip": False}
    values |= {"teacher": ["a.keras", "b.keras"], "unlabelled": ["d"], "lr": 0.0012345678, "feature_layers": ["dec2_out:dec1_out"]}
    cfg = from_values(DistillConfig, values, "here")
    assert parse_args(DistillConfig, to_argv(cfg), multi=multi)[0] == cfg
    assert "--no-flip" in to_argv(cfg) and "--epochs" not in to_argv(cfg)  # defaults are left out
    t = from_values(TeacherConfig, {"data": "d", "out": "o", "loss": "bce_dice"}, "t")
    assert parse_args(TeacherConfig, to_argv(t))[0] == t
    with pytest.raises(ValueError, match="here: unknown key 'epochz'"):
        from_values(DistillConfig, {"data": "d", "epochz": 3}, "here")
    with pytest.raises(ValueError, match="here: 'epochs' must be an integer, not \"15\""):
        from_values(DistillConfig, {"data": "d", "epochs": "15"}, "here")
    with pytest.raises(ValueError, match="here: 'data' is required"):
        from_values(DistillConfig, {}, "here")
