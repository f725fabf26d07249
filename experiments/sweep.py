"""Run a grid of teacher/student experiments; resume by skipping finished runs; tabulate.

    python -m experiments.sweep --config experiments/configs/quick.py
    python -m experiments.sweep --config cpu --data ../shared/data/tgs-salt      # a preset by its name
    # prints the planned runs, a time estimate, a sweep-level progress bar with ETA (each run's full log
    # goes to SWEEP_DIR/logs/<run>.txt), then the summary table of experiments.results; writes SWEEP_DIR/results.csv

    # two streams on one machine (a 2-core CPU runs two 1-thread jobs ~1.3x faster than one 2-thread job):
    OMP_NUM_THREADS=1 python -m experiments.sweep --config experiments/configs/cpu.py --shard 1/2 &
    OMP_NUM_THREADS=1 python -m experiments.sweep --config experiments/configs/cpu.py --shard 2/2; wait

    # or hand the pending jobs to a scheduler (one shell command a line, to run from the repo root,
    # teachers and caches first; a student job needs them finished):
    python -m experiments.sweep --config experiments/configs/gpu.py --list > jobs.txt

A preset (experiments/configs/NAME.py: `PRESET = {...}`, commented, most built on base.py; or a JSON file, and
NAME.json still finds NAME.py) holds {"name", "data": path or "synthetic", "synthetic": {n_train, n_test, seed},
"teacher": {teacher.train flags} or "teacher_path", "ensemble_seeds": [seeds of extra teachers],
"ensemble_presets": [presets whose teachers join the ensemble], "backend": the Keras backend every job runs on
(KERAS_BACKEND for its commands; default: the one common/backend.py picks, or KERAS_BACKEND as set),
"student": {distill_train flags}, "unlabelled_extra": [folders], "grid": GRID or [GRID, ...], "seeds": [...]}, where GRID is
{"lam": [...], "temperature": [...], "scale": [...], "base_filters": [...], "unlabelled": [false, true, "all"],
"ensemble": [false, true], "blackbox": [false, "mirrored", "noflip"], "model": [{"arch": "sepunet",
"base_filters": 8}, {"arch": "unet", "base_filters": 6, "depth": 3}, ...], "options": [{}, {"n_unlabelled":
32}, {"teacher_tta": true}, {"lovasz_epochs": 3}, {"tune_threshold": true}, {"augment": "strong", "mixup": 0.2}, {"precision": "mixed_bfloat16"}]}; a "model" entry sets the
student's architecture (arch, base_filters, depth, upsample; the rest from "student"), an "options" entry
flags that are off by default (each adds to the run's name; "augment": "strong" and "mixup" put the teacher in the graph
even with "teacher_cache", and baselines keep "augment" and "precision" but drop "mixup"; {"feature_loss": "fitnets" | "at" | "cwd",
"feature_weight": w} adds feature distillation, with the teacher in the graph, not for baselines, blackbox or ensembles);
"unlabelled": true adds the data's own test
images, "all" those and the "unlabelled_extra" folders (its runs are named by the count, e.g. _unl_u18k); a list of grids runs the union
of their products (so a costly axis such as the ensemble need not multiply every other one). lam = 0
is the baseline (T, s(T), unlabelled and ensemble do not apply to it). "ensemble": true distils from
the mean logits of the main teacher, the teachers trained with "ensemble_seeds" (same flags and
split, other seeds) and the teachers of the "ensemble_presets" (another kind of teacher: each preset's own
runs/<preset>/teacher, trained there on this preset's split if it is not yet, and refused if its split.json
differs; the runs are named by every member, e.g. unet16_resunet8). Every run is its own run dir under runs/<name>/ (or --out), named by
training.naming.RunSpec; a run whose metrics.json holds scores is finished and skipped, an interrupted one
(checkpoint.json) continues from its last finished epoch (--resume; started again if that fails).
Concurrent sweeps on one dir are safe: a run that another sweep is training (locked) is skipped and
reported; with --shard, a teacher or cache that another shard is making is waited for.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from common.choices import BACKENDS
from common.cli import UserError, run
from common.config import HelpFormatter, from_values, read_config_file, to_argv
from common.io import CKPT_STATE, acquire_lock, is_locked, release_lock
from data.split import load_split
from data.synthetic import generate
from data.tgs import count_unlabelled
from distill.cache import ensemble_label
from experiments.results import format_summary, read_metrics, write_tables
from student.config import DistillConfig, validate
from teacher.config import TeacherConfig
from teacher.config import validate as validate_teacher
from training.naming import RunSpec, model_name

ROOT = Path(__file__).resolve().parents[1]
POLL_S = 3.0  # how often a shard looks again at a teacher or cache that another shard is making
UNLABELLED = (False, True, "all")  # none; the data's own test images; those and the config's "unlabelled_extra" folders
GRID_KEYS = ("lam", "temperature", "scale", "base_filters", "model", "options", "unlabelled", "ensemble", "blackbox")
# what an "options" grid entry may set (distill_train.py flags that are off by default; each names its runs)
OPTION_KEYS = (
    "n_unlabelled",
    "teacher_tta",
    "lovasz_epochs",
    "tune_threshold",
    "augment",
    "mixup",
    "feature_loss",
    "feature_weight",
    "precision",
)
MODEL_KEYS = ("arch", "base_filters", "depth", "upsample")  # what a "model" grid entry may set
BLACKBOX = (False, "mirrored", "noflip")
KINDS = ("teacher", "cache", "probabilities", "student")


@dataclass(frozen=True)
class Job:
    """One command of a sweep: its run dir, the file that says it finished, and the files it needs first."""

    name: str
    run_dir: Path
    done: Path
    cmd: tuple[str, ...]
    needs: tuple[Path, ...] = ()
    kind: str = "student"  # "teacher" | "cache" | "probabilities" | "student"
    env: tuple[tuple[str, str], ...] = ()  # environment variables its command runs with (a preset's "backend")

    def finished(self) -> bool:
        """Its done file is there and, for a run (metrics.json), can be read: a truncated or empty metrics.json (a full
        disk, a copy cut short) is not a finished run, so the sweep trains it again instead of counting it."""
        if not self.done.exists():
            return False
        if self.done.name != "metrics.json":
            return True
        try:
            read_metrics(self.run_dir)
        except UserError:
            return False
        return True

    def argv(self, resume: bool | None = None) -> list[str]:
        """The command as the sweep runs it: --resume after an interrupted run (checkpoint.json), else --overwrite."""
        resume = (self.run_dir / CKPT_STATE).exists() if resume is None else resume
        return [*self.cmd, "--resume" if resume else "--overwrite"]

    def shell(self) -> str:
        """The command as one shell line, its environment first (KERAS_BACKEND=tensorflow python ...): what --list prints."""
        return shell_line(self.argv(), self.env)


def shell_line(cmd: list[str], env: tuple[tuple[str, str], ...] = ()) -> str:
    """A command and the environment it runs with as one shell line: `KERAS_BACKEND=tensorflow python ...`."""
    return " ".join([*(f"{k}={shlex.quote(v)}" for k, v in env), shlex.join(cmd)])


# what a preset may hold (the module docstring says what each is); anything else is a misspelling, refused at once
PRESET_KEYS = (
    "name",
    "description",
    "data",
    "synthetic",
    "teacher",
    "teacher_path",
    "teacher_cache",
    "backend",
    "ensemble_seeds",
    "ensemble_presets",
    "student",
    "unlabelled_extra",
    "unlabelled_all_count",
    "grid",
    "seeds",
)


def load_config(path) -> dict:
    """A preset, checked before anything is planned or trained: a JSON object with "name", "grid" and a non-empty list
    of integer "seeds" and no key outside PRESET_KEYS; one UserError naming the preset and the key otherwise. The runs'
    flags are checked by plan(), with the scripts' own configs."""
    if not Path(path).suffix and not Path(path).exists():  # a preset's name: experiments/configs/NAME.py
        path = ROOT / "experiments" / "configs" / f"{path}.py"
    try:
        cfg = read_config_file(path)
    except ValueError as e:
        raise UserError(str(e)) from None
    if not isinstance(cfg, dict):
        raise UserError(f"sweep config {path} must be a JSON object, not {type(cfg).__name__}")
    for key in ("name", "grid", "seeds"):
        if key not in cfg:
            raise UserError(f"sweep config {path} has no {key!r}")
    unknown = sorted(set(cfg) - set(PRESET_KEYS))
    if unknown:
        raise UserError(f"sweep config {path}: unknown key {unknown[0]!r} (known: {', '.join(PRESET_KEYS)})")
    seeds = cfg["seeds"]
    if not isinstance(seeds, list) or not seeds or not all(isinstance(x, int) and not isinstance(x, bool) for x in seeds):
        raise UserError(f'sweep config {path}: "seeds" must be a non-empty list of integers, not {json.dumps(seeds)}')
    grids = cfg["grid"] if isinstance(cfg["grid"], list) else [cfg["grid"]]
    if not grids or not all(isinstance(g, dict) for g in grids):
        raise UserError(f'sweep config {path}: "grid" must be an object or a non-empty list of objects')
    for part in ("teacher", "student"):
        if part in cfg and not isinstance(cfg[part], dict):
            raise UserError(f"sweep config {path}: {part!r} must be an object of its script's flags")
    return cfg


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument(
        "--config", required=True, help="a preset: experiments/configs/NAME.py (or its NAME alone), or a JSON file of the same keys (above)"
    )
    ap.add_argument("--data", default="", help="override the config's data")
    ap.add_argument("--out", default="", help="sweep dir (default runs/<name>)")
    ap.add_argument(
        "--teacher",
        default="",
        help="reuse this trained teacher .keras instead of training one; its caches go beside it when it is a teacher.train "
        "run dir (shared by every sweep that reuses it), else in SWEEP_DIR/given_teacher",
    )
    ap.add_argument("--seeds", type=int, nargs="+", help="run only these of the config's student seeds (teachers always)")
    ap.add_argument(
        "--shard",
        default="",
        metavar="K/N",
        help="run only the K-th of N slices of the student runs (run i goes to slice i %% N + 1); the teachers and "
        "caches they need are made by whichever shard gets there first, the other shards wait for them",
    )
    ap.add_argument(
        "--list",
        action="store_true",
        help="print the pending jobs, one shell command a line (to run from the repo root), teachers and caches first, and exit",
    )
    ap.add_argument("--dry-run", action="store_true", help="list the runs and exit")
    return ap.parse_args(argv)


def parse_shard(text: str) -> tuple[int, int] | None:
    """--shard K/N -> (K, N), 1 <= K <= N; "" -> None."""
    if not text:
        return None
    k, _, n = text.partition("/")
    if not (k.strip().isdigit() and n.strip().isdigit()):
        raise UserError(f"--shard {text!r} must be K/N, e.g. 1/2 (the first of two shards)")
    k, n = int(k), int(n)
    if n < 1 or not 1 <= k <= n:
        raise UserError(f"--shard {text}: K must be between 1 and N, and N at least 1 (e.g. 1/{max(n, 2)} ... {max(n, 2)}/{max(n, 2)})")
    return k, n


@dataclass(frozen=True)
class Layout:
    """Where a sweep's inputs and outputs are: the sweep dir, the data, the teacher(s), and the caches made from them."""

    sweep: Path
    data: str
    teacher: str  # the main teacher's .keras (trained by the sweep, or given)
    home: Path  # teacher_home: where the main teacher's split and caches are
    given_teacher: bool = False  # not trained here: it may come without a split.json
    ensemble: tuple[str, ...] = ()  # every member's .keras, the main teacher first
    extra: tuple[str, ...] = ()  # "unlabelled_extra" folders

    @property
    def split(self) -> Path:
        return self.home / "split.json"

    @property
    def cache(self) -> Path:
        return self.home / "cache"

    @property
    def cache_all(self) -> Path:
        """The cache of "unlabelled": "all" runs (21,200 images on the cpu data): the other runs' cache stays the size they need."""
        return self.home / "cache_all"

    @property
    def ensemble_cache(self) -> Path:
        return self.sweep / f"teacher_ensemble{len(self.ensemble)}" / "cache"

    @property
    def blackbox(self) -> Path:
        return self.sweep / "teacher_blackbox"


@dataclass(frozen=True)
class StudentRun:
    """One planned student run: its config (what distill_train.py is given, checked by its own validate), its RunSpec
    and the grid point it came from (what the sweep needs to plan its teachers and caches)."""

    config: DistillConfig
    spec: RunSpec
    point: dict

    @property
    def name(self) -> str:
        return self.spec.name


def grid_points(cfg: dict) -> list[dict]:
    """Every point of the grid (or of the union of several grids), each axis given or at its default, checked for the
    sweep's own axes and values; seed by seed."""
    student, n_ens = cfg.get("student", {}), 1 + len(cfg.get("ensemble_seeds", [])) + len(cfg.get("ensemble_presets", []))
    points = []
    for g in cfg["grid"] if isinstance(cfg["grid"], list) else [cfg["grid"]]:
        unknown = set(g) - set(GRID_KEYS)
        if unknown:
            raise UserError(f"sweep grid has unknown axis {sorted(unknown)[0]!r} (known: {', '.join(GRID_KEYS)})")
        grid = {**GRID_DEFAULTS, "base_filters": [student.get("base_filters", 4)], **g}
        check_grid(cfg, grid, n_ens)
        for values in itertools.product(*(grid[k] for k in GRID_KEYS), cfg["seeds"]):
            points.append(dict(zip((*GRID_KEYS, "seed"), values)))
    return sorted(points, key=lambda p: p["seed"])  # an interrupted sweep already holds complete paired comparisons


GRID_DEFAULTS = {
    "lam": [0.9],
    "temperature": [2.0],
    "scale": ["T"],
    "model": [{}],
    "options": [{}],
    "unlabelled": [False],
    "ensemble": [False],
    "blackbox": [False],
}


def check_grid(cfg: dict, grid: dict, n_ens: int) -> None:
    """The sweep's own rules on one grid (its axes' values and what they need of the preset); the flags each run ends
    up with are checked by distill_train.py's validate, at plan time (student_config)."""
    if any(grid["ensemble"]) and n_ens < 2:
        raise UserError('sweep grid asks for "ensemble": true but the config has no "ensemble_seeds" or "ensemble_presets"')
    bad = [v for v in grid["blackbox"] if v not in BLACKBOX] + [t for t in grid["temperature"] if isinstance(t, str) and t != "auto"]
    bad += [u for u in grid["unlabelled"] if u not in UNLABELLED]
    if bad:
        raise UserError(
            f'sweep grid value {bad[0]!r} is not allowed (blackbox: false, "mirrored", "noflip"; temperature: a number or "auto"; '
            'unlabelled: false, true, "all")'
        )
    if "all" in grid["unlabelled"] and any(grid["ensemble"]):
        raise UserError('sweep grid combines "unlabelled": "all" with "ensemble": true (not supported: one teacher\'s cache_all)')
    if "all" in grid["unlabelled"] and not cfg.get("unlabelled_extra"):
        raise UserError(
            'sweep grid asks for "unlabelled": "all" but the config has no "unlabelled_extra" (folders of more unlabelled images)'
        )
    for entry in grid["model"]:
        if not isinstance(entry, dict) or set(entry) - set(MODEL_KEYS):
            raise UserError(f'sweep grid "model" entry {entry!r} must be an object with keys among {", ".join(MODEL_KEYS)}')
    for opts in grid["options"]:
        if not isinstance(opts, dict) or set(opts) - set(OPTION_KEYS):
            raise UserError(f'sweep grid "options" entry {opts!r} must be an object with keys among {", ".join(OPTION_KEYS)}')
    if any(bb for bb in grid["blackbox"]) and (any(grid["unlabelled"]) or any(grid["ensemble"])):
        raise UserError(
            'sweep grid combines "blackbox" with unlabelled or ensemble runs (the black-box cache holds the labelled images of one teacher)'
        )


def point_flags(cfg: dict, p: dict) -> dict:
    """A grid point's flags (DistillConfig fields) that do not depend on where files are: the "student" section, the
    width axis, a "model" entry, then an "options" entry. A baseline (lam = 0) has no teacher: no T, s(T), unlabelled
    images, ensemble, black box or tta, and the augmentation of the runs it is compared with; mixup needs unlabelled images."""
    opts = dict(p["options"])
    if p["lam"] == 0:
        p.update(temperature=2.0, scale="T", unlabelled=False, ensemble=False, blackbox=False)
        opts = {k: v for k, v in opts.items() if k in ("lovasz_epochs", "tune_threshold", "augment", "precision")}
    flags = {**cfg.get("student", {}), "base_filters": p["base_filters"], **p["model"], **opts, "seed": p["seed"], "lam": p["lam"]}
    if not p["unlabelled"]:
        flags = {k: v for k, v in flags.items() if k not in ("mixup", "n_unlabelled")}
    if p["lam"] > 0:
        flags.update(temperature=p["temperature"], scale=p["scale"])
    if p["blackbox"] == "noflip":
        flags["flip"] = False
    return flags


def in_graph(flags: dict) -> bool:
    """The teacher runs in the graph even with "teacher_cache": a cache cannot see strong augmentation or mixup, and
    holds no features for feature distillation."""
    return flags.get("augment", "flip") == "strong" or bool(flags.get("mixup")) or bool(flags.get("feature_loss"))


def teacher_flags(cfg: dict, p: dict, flags: dict, layout: Layout) -> dict:
    """Where a grid point's soft targets come from: the black box's cache, or the teacher file(s) and, with
    "teacher_cache", their cache; the unlabelled images it adds; the split of a run with no teacher file to read it from."""
    out = {}
    if p["lam"] == 0 or p["blackbox"]:
        if layout.split.exists() or not layout.given_teacher:
            out["split_file"] = str(layout.split)
    if p["blackbox"]:
        out["teacher_cache"] = str(layout.blackbox / "cache")
    elif p["lam"] > 0:
        out["teacher"] = tuple(layout.ensemble) if p["ensemble"] else (layout.teacher,)
        if cfg.get("teacher_cache") and not in_graph(flags):
            out["teacher_cache"] = str(
                layout.ensemble_cache if p["ensemble"] else layout.cache_all if p["unlabelled"] == "all" else layout.cache
            )
    if p["unlabelled"]:
        out["unlabelled"] = (layout.data, *(layout.extra if p["unlabelled"] == "all" else ()))
    return out


def student_config(cfg: dict, p: dict, layout: Layout, names: tuple[str, ...], n_all: int, where: str) -> StudentRun:
    """One grid point as the DistillConfig distill_train.py will parse from the job's command, checked by its own
    validate(): a preset that a run would refuse is refused here, before anything trains. `names`: the ensemble's
    members' model names, the main teacher first (ensemble_names)."""
    p = dict(p)
    flags = point_flags(cfg, p)
    flags = {**flags, **teacher_flags(cfg, p, flags, layout), "data": layout.data}
    source = "blackbox" if p["blackbox"] else ensemble_label(names if p["ensemble"] else names[:1])
    try:
        config = from_values(DistillConfig, flags, where)
    except ValueError as e:
        raise UserError(f'{e} (in the "student" section or a grid entry)') from None
    try:
        validate(config)
    except UserError as e:
        raise UserError(f"{where}: run {run_name(config, source)}: {e}") from None
    spec = RunSpec.from_config(config, source, unlabelled_count=n_all if p["unlabelled"] == "all" else 0)
    return StudentRun(dataclasses.replace(config, out=str(layout.sweep / spec.name)), spec, p)


def run_name(config: DistillConfig, source: str) -> str:
    """A refused run's name for its error line, or its flags where the values are too odd to name it."""
    try:
        return RunSpec.from_config(config, source).name
    except (ValueError, TypeError):
        return " ".join(to_argv(config))


def student_runs(cfg: dict, teacher: str, n_all: int = 0, layout: Layout | None = None, where: str = "sweep config") -> list[StudentRun]:
    """The grid's student runs, each named and configured once (a point that repeats another is left out).

    `teacher` is the teacher's model name (e.g. unet8); `n_all` how many images "unlabelled": "all" gives (in those runs'
    names); `layout` where the files are (default: a sweep dir runs/<name> with its own teacher)."""
    if layout is None:
        home = teacher_home(ROOT / "runs" / cfg.get("name", "sweep"))
        ensemble = ensemble_paths(cfg, str(home / "teacher.keras"), home)
        layout = Layout(home.parent, "DATA", ensemble[0], home, ensemble=ensemble)
    runs, seen, names = [], {}, ensemble_names(cfg, teacher)
    for p in grid_points(cfg):
        run = student_config(cfg, p, layout, names, n_all, where)
        if run.name in seen:  # e.g. the baseline, which every T and s(T) of the grid gives once more
            if seen[run.name] != run.config:
                raise UserError(f"{where}: two grid points are both named {run.name} but differ: {_differ(seen[run.name], run.config)}")
            continue
        seen[run.name] = run.config
        runs.append(run)
    return runs


def _differ(a, b) -> str:
    return ", ".join(f.name for f in dataclasses.fields(a) if getattr(a, f.name) != getattr(b, f.name))


def sweep_dir(cfg: dict, args) -> Path:
    return Path(args.out or ROOT / "runs" / cfg["name"])


def data_dir(cfg: dict, args) -> str:
    data = args.data or cfg.get("data", "synthetic")
    return str(sweep_dir(cfg, args) / "data") if data == "synthetic" else data


def require_data(cfg: dict, args) -> None:
    """The data a sweep reads (--data, else the config's "data") must exist before anything is planned or trained: one line
    that says how to make it. A preset's cache (cache/tgs.npz) is not in a fresh clone: data.prepare makes it."""
    data = args.data or cfg.get("data", "synthetic")
    if data == "synthetic" or Path(data).exists():
        return
    if args.data:
        raise UserError(f"--data {data} does not exist")
    if Path(data).suffix == ".npz":
        how = (
            f"make it with python -m data.prepare --data KAGGLE_ZIP_OR_DIR --out {data} --max-unlabelled 1000 "
            '(README, "Get the data"), or pass --data'
        )
    else:
        how = "pass --data (a cache made by python -m data.prepare, or the Kaggle folder)"
    raise UserError(f"{args.config} reads {data}, which does not exist: {how}")


def teacher_model(cfg: dict, teacher_path: str) -> str:
    """The teacher's model name in run names: a given teacher's sidecar says it (e.g. "unet8"), else the config's arch and width."""
    t = cfg.get("teacher", {})
    name = model_name(t.get("arch", "unet"), t.get("base_filters", 16), t.get("depth", 4), t.get("upsample", ""))
    if teacher_path:  # not trained here: run names say the given teacher's real model
        try:
            given = json.loads(Path(teacher_path + ".json").read_text()).get("model_name", "")
        except (OSError, ValueError, AttributeError):  # no or unreadable sidecar: the config's
            given = ""
        name = given if isinstance(given, str) and given else name
    return name


def select_seeds(cfg: dict, seeds) -> dict:
    if not seeds:
        return cfg
    bad = sorted(set(seeds) - set(cfg["seeds"]))
    if bad:
        raise UserError(f"--seeds {bad[0]} is not among the config's seeds {cfg['seeds']}")
    return {**cfg, "seeds": [s for s in cfg["seeds"] if s in seeds]}


def all_count(cfg: dict, data: str, extra: list[str]) -> int:
    """How many images "unlabelled": "all" gives: counted when the folders are here, else the config's "unlabelled_all_count".

    The count names the runs (_unl_u18k), so a config may state it, for planning where the data is not (a dry run, CI);
    where both exist they must agree."""
    stated = cfg.get("unlabelled_all_count")
    if all(Path(p).exists() for p in [data, *extra]):
        n = count_unlabelled([data, *extra])
        if stated is not None and stated != n:
            raise UserError(f'"unlabelled_all_count" is {stated} but {data} and "unlabelled_extra" hold {n} unlabelled images')
        return n
    if stated is None:
        missing = next(p for p in [data, *extra] if not Path(p).exists())
        raise UserError(f'{missing} does not exist: cannot count the "unlabelled": "all" images (or state "unlabelled_all_count")')
    return int(stated)


def teacher_home(sweep: Path, teacher: str = "") -> Path:
    """Where the main teacher's split and caches are, and (beside it) the ensemble's other members.

    The teacher's own run dir when the sweep trains it (sweep/teacher) or when the given teacher is a teacher.train run
    dir (split.json or config.json beside it, or not made yet: a preset that reuses runs/cpu/teacher before that is
    trained), so every preset that reuses a teacher shares its caches and ensemble. A bare teacher file (./teacher.keras,
    a download) gets sweep/given_teacher instead: nothing is planned in the folder it happens to lie in (the project
    root holds cache/, a parent folder is outside the project)."""
    if not teacher:
        return sweep / "teacher"
    folder = Path(teacher).parent
    if not Path(teacher).exists() or any((folder / f).exists() for f in ("split.json", "config.json")):
        return folder
    return sweep / "given_teacher"


def ensemble_paths(cfg: dict, main: str, home: Path) -> tuple[str, ...]:
    """The teachers' .keras files: the main one, then one per "ensemble_seeds" (same flags and split, another seed),
    each in a run dir teacher_s<seed> beside the main teacher's `home` (teacher_home), as its cache is in its own:
    presets that share a teacher (runs/cpu/teacher) share its ensemble too; then the teacher of each "ensemble_presets"."""
    seeds = (str(home.parent / f"teacher_s{s}" / "teacher.keras") for s in cfg.get("ensemble_seeds", []))
    return (main, *seeds, *(member_teacher(m) for m in member_presets(cfg)))


def member_presets(cfg: dict) -> list[dict]:
    """The presets named by "ensemble_presets", each read as --config NAME would read it."""
    names = cfg.get("ensemble_presets", [])
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise UserError(f'"ensemble_presets" must be a list of preset names, not {json.dumps(names)}')
    return [load_config(n) for n in names]


def member_teacher(member: dict) -> str:
    """A member preset's teacher file: its "teacher_path", else the teacher its own sweep trains (runs/<name>/teacher)."""
    return member.get("teacher_path") or str(ROOT / "runs" / member["name"] / "teacher" / "teacher.keras")


def ensemble_names(cfg: dict, main: str) -> tuple[str, ...]:
    """The ensemble's members' model names in ensemble_paths' order (the run names' soft-target part): the main
    teacher's `main` once per teacher of its kind, then each member preset's (its sidecar's, else its "teacher" flags')."""
    kind = (main,) * (1 + len(cfg.get("ensemble_seeds", [])))
    return (*kind, *(teacher_model(m, m.get("teacher_path", "")) for m in member_presets(cfg)))


def check_member_splits(layout: Layout, n_seeds: int) -> None:
    """Every member preset's teacher that exists learnt from this preset's training images: a split.json beside it, with
    the same train and val ids as the main teacher's (else the students' validation images were some member's training
    images). A member not trained yet is trained on this split."""
    for path in layout.ensemble[1 + n_seeds :]:
        if not Path(path).exists():
            continue
        split = Path(path).parent / "split.json"
        if not split.exists():
            raise UserError(f'"ensemble_presets" teacher {path} has no split.json beside it: its training images are not known')
        if layout.split.exists():
            ours, theirs = load_split(layout.split), load_split(split)
            if any(sorted(ours[k]) != sorted(theirs[k]) for k in ("train", "val")):
                raise UserError(f'"ensemble_presets" teacher {path} was trained on another split than {layout.split}')


def make_layout(cfg: dict, args) -> Layout:
    sweep, teacher = sweep_dir(cfg, args), args.teacher or cfg.get("teacher_path", "")
    home = teacher_home(sweep, teacher)
    ensemble = ensemble_paths(cfg, teacher or str(home / "teacher.keras"), home)
    extra = tuple(str(u) for u in cfg.get("unlabelled_extra", []))
    if teacher and cfg.get("ensemble_seeds") and Path(teacher).exists() and not (home / "split.json").exists():
        raise UserError(
            f"\"ensemble_seeds\" trains the ensemble's other members on the given teacher's split, but {teacher} has no "
            "split.json beside it (give a teacher.train run dir's teacher.keras, or leave out the ensemble)"
        )
    layout = Layout(sweep, data_dir(cfg, args), ensemble[0], home, bool(teacher), ensemble, extra)
    check_member_splits(layout, len(cfg.get("ensemble_seeds", [])))
    return layout


def teacher_jobs(cfg: dict, layout: Layout, where: str) -> list[Job]:
    """The teacher (unless given) and the ensemble's other members, each a TeacherConfig checked by teacher.train's validate."""
    jobs, seeds, members = [], cfg.get("ensemble_seeds", []), member_presets(cfg)
    for i, path in enumerate(layout.ensemble):
        member = members[i - 1 - len(seeds)] if i > len(seeds) else None
        if (i == 0 and layout.given_teacher) or (member and member.get("teacher_path")):
            continue
        flags = member.get("teacher", {}) if member else cfg.get("teacher", {})
        seed = {"seed": seeds[i - 1]} if 0 < i <= len(seeds) else {}
        seed |= {"split_file": str(layout.split)} if i else {}
        values = {**flags, **seed, "data": layout.data, "out": str(Path(path).parent)}
        try:
            config = from_values(TeacherConfig, values, f'{where} "teacher"')
            validate_teacher(config)
        except (ValueError, UserError) as e:
            raise UserError(str(e) if str(e).startswith(where) else f'{where} "teacher": {e}') from None
        run_dir = Path(path).parent
        cmd = (sys.executable, "-m", "teacher.train", *to_argv(config))
        name = f"teacher_{member['name']}" if member else run_dir.name if i else "teacher"
        jobs.append(Job(name, run_dir, run_dir / "metrics.json", cmd, (layout.split,) if i else (), "teacher"))
    return jobs


def cache_jobs(runs: list[StudentRun], layout: Layout) -> list[Job]:
    """One teacher.cache job per cache some run reads (its config's teacher_cache), with the unlabelled images those runs add."""
    jobs, py = [], sys.executable
    names = {layout.cache: "teacher_cache", layout.ensemble_cache: "ensemble_cache", layout.cache_all: "teacher_cache_all"}
    for cdir, name in names.items():
        readers = [r.config for r in runs if r.config.teacher_cache == str(cdir)]
        if not readers:
            continue
        members = readers[0].teacher
        unl = sorted({u for c in readers for u in c.unlabelled}, key=[layout.data, *layout.extra].index)
        cmd = [py, "-m", "teacher.cache", *(a for t in members for a in ("--teacher", t)), "--data", layout.data, "--out", str(cdir)]
        cmd += ["--unlabelled", *unl] if unl else []
        jobs.append(Job(name, cdir, cdir / "meta.json", tuple(cmd), tuple(Path(t) for t in members), "cache"))
    return jobs


def blackbox_jobs(runs: list[StudentRun], layout: Layout) -> list[Job]:
    """The teacher as a black box: its 16-bit probability maps (evaluate.py), then a cache made from them alone."""
    readers = [r.config for r in runs if r.point["blackbox"]]
    if not readers:
        return []
    bb, py = layout.blackbox, sys.executable
    probs = bb / "probabilities"
    cmd = (py, "evaluate.py", "--model", layout.teacher, "--data", layout.data, "--split", "all", "--save-probabilities", str(probs))
    cmd += ("--out", str(bb / "teacher_scores.json"))
    size = str(readers[0].input_size)  # the cache's images at the size its students train on
    cache = (py, "-m", "teacher.cache", "--from-probabilities", str(probs), "--data", layout.data, "--out", str(bb / "cache"))
    return [
        Job("blackbox_probabilities", bb, probs, cmd, (Path(layout.teacher),), "probabilities"),
        Job("blackbox_cache", bb / "cache", bb / "cache" / "meta.json", (*cache, "--input-size", size), (probs,), "cache"),
    ]


def student_job(run: StudentRun) -> Job:
    """distill_train.py with the run's config as flags; it needs its teacher files, cache and (without a teacher file) split."""
    c = run.config
    needs = [Path(t) for t in c.teacher] + ([Path(c.teacher_cache) / "meta.json"] if c.teacher_cache else [])
    needs += [Path(c.split_file)] if c.split_file else []
    cmd = (sys.executable, "distill_train.py", *to_argv(c))
    return Job(run.name, Path(c.out), Path(c.out) / "metrics.json", cmd, tuple(needs), "student")


def plan(cfg: dict, args) -> list[Job]:
    """The sweep's jobs in dependency order: teachers, caches and black-box maps, then the student runs seed by seed.

    Pure: reads the config (and a given teacher's sidecar), writes nothing. Every run is built as the config its script
    parses and checked by that script's validate, so a preset a run would refuse is refused here. Applies --seeds and --shard."""
    shard = parse_shard(getattr(args, "shard", ""))
    cfg = select_seeds(cfg, args.seeds)
    layout, where = make_layout(cfg, args), f"sweep config {getattr(args, 'config', '') or cfg.get('name', '')}"
    grids = cfg["grid"] if isinstance(cfg["grid"], list) else [cfg["grid"]]
    extra = list(layout.extra)
    n_all = all_count(cfg, layout.data, extra) if extra and any("all" in g.get("unlabelled", []) for g in grids) else 0
    runs = student_runs(cfg, teacher_model(cfg, layout.teacher if layout.given_teacher else ""), n_all, layout, where)
    jobs = teacher_jobs(cfg, layout, where) + cache_jobs(runs, layout) + blackbox_jobs(runs, layout)
    jobs += [student_job(r) for r in runs]
    env = backend_env(cfg)
    jobs = [dataclasses.replace(j, env=env) for j in jobs] if env else jobs
    return shard_jobs(jobs, *shard) if shard else jobs


def backend_env(cfg: dict) -> tuple[tuple[str, str], ...]:
    """A preset's "backend" as its jobs' environment (KERAS_BACKEND); () without one. UserError for an unknown backend,
    or one that KERAS_BACKEND, set otherwise, contradicts (the runs would be trained on another backend than the preset says)."""
    backend = cfg.get("backend")
    if backend is None:
        return ()
    if backend not in BACKENDS:
        raise UserError(f'sweep config {cfg.get("name", "")}: "backend" must be one of {", ".join(BACKENDS)}, not {json.dumps(backend)}')
    if os.environ.get("KERAS_BACKEND", backend) != backend:
        raise UserError(
            f'sweep config {cfg["name"]} trains on {backend} ("backend"), but KERAS_BACKEND={os.environ["KERAS_BACKEND"]}: unset it'
        )
    return (("KERAS_BACKEND", backend),)


def _needed(prereqs: list[Job], jobs: list[Job]) -> set[str]:
    """Names of the prerequisite jobs that `jobs` need, directly or through each other (a need inside a job's run dir)."""
    names, todo = set(), list(jobs)
    while todo:
        job = todo.pop()
        for p in prereqs:
            if p.name not in names and any(n == p.run_dir or p.run_dir in n.parents for n in job.needs):
                names.add(p.name)
                todo.append(p)
    return names


def shard_jobs(jobs: list[Job], k: int, n: int) -> list[Job]:
    """Student job i goes to shard i % n + 1; every shard keeps the prerequisites its students need (and any no student needs)."""
    students = [j for j in jobs if j.kind == "student"]
    mine = [j for i, j in enumerate(students) if i % n == k - 1]
    prereqs = [j for j in jobs if j.kind != "student"]
    need_any, need_mine = _needed(prereqs, students), _needed(prereqs, mine)
    return [j for j in prereqs if j.name in need_mine or j.name not in need_any] + mine


def prepare_inputs(cfg: dict, args, say=print) -> None:
    """Check that the data and a given teacher exist; make the synthetic data set if the config asks for it (once per sweep dir)."""
    teacher = args.teacher or cfg.get("teacher_path", "")
    if teacher and not Path(teacher).exists():
        raise UserError(f"teacher {teacher} does not exist")
    for m in member_presets(cfg):
        if m.get("teacher_path") and not Path(m["teacher_path"]).exists():
            raise UserError(f'teacher {m["teacher_path"]} of "ensemble_presets" {m["name"]} does not exist')
    data = Path(data_dir(cfg, args))
    if (args.data or cfg.get("data", "synthetic")) != "synthetic":
        require_data(cfg, args)
        return
    if (data / "train").exists():
        return
    syn = {"n_train": 600, "n_test": 150, "seed": 0, **cfg.get("synthetic", {})}
    tmp = data.with_name(f".{data.name}.{os.getpid()}")  # made aside and renamed: a shard never reads a half-written set
    shutil.rmtree(tmp, ignore_errors=True)
    generate(tmp, **syn)
    try:
        os.rename(tmp, data)
    except OSError:  # another shard made it first (same seed, same images)
        shutil.rmtree(tmp, ignore_errors=True)
        if not (data / "train").exists():
            raise
        return
    say(f"synthetic data: {syn['n_train']} labelled + {syn['n_test']} unlabelled images in {data}")


def describe(cfg: dict, args, jobs: list[Job]) -> str:
    students = [j.name for j in jobs if j.kind == "student"]
    ens = [*cfg.get("ensemble_seeds", []), *cfg.get("ensemble_presets", [])]
    shard = f" (shard {args.shard})" if args.shard else ""
    return (
        f"sweep {cfg['name']}{shard}: {len(students)} student runs + {'given' if args.teacher or cfg.get('teacher_path') else 'one'} teacher"
        + (f" + {len(ens)} more for the ensemble" if ens else "")
        + f" -> {sweep_dir(cfg, args)}\n"
        + "\n".join(f"  {n}" for n in students)
    )


def _duration(s: float) -> str:
    if s >= 3600:
        h, m = divmod(round(s / 60), 60)
        return f"{h} h {m} min" if m else f"{h} h"
    return f"{max(1, round(s / 60))} min" if s >= 90 else f"{s:.0f} s"


def estimate(jobs: list[Job], sweep: Path) -> str:
    """How many runs are left, and how long they take at the speed of the runs already finished in the sweep dir (an
    interrupted run counts only the part of its epochs still to train)."""
    todo = [j for j in jobs if j.kind in ("teacher", "student") and not j.finished()]
    if not todo:
        return "0 runs to go"
    measured = {"teacher": [], "student": []}
    for m in sorted(Path(sweep).glob("*/metrics.json")):
        try:
            met = json.loads(m.read_text())
            wall, ips = float(met["wall_s"]), float(met.get("train_img_per_s") or "nan")
        except (OSError, ValueError, KeyError, TypeError):
            continue
        measured["teacher" if (m.parent / "teacher.keras").exists() else "student"].append((wall, ips))
    head = f"{len(todo)} run{'s' if len(todo) > 1 else ''} to go"
    if not measured["student"]:
        return f"{head}; time estimate: unknown before the first run"
    mean_wall = {k: sum(w for w, _ in v) / len(v) for k, v in measured.items() if v}
    unmeasured = [j for j in todo if j.kind not in mean_wall]
    left = {j.name: _fraction_left(j) for j in todo}
    total = sum(mean_wall[j.kind] * left[j.name] for j in todo if j.kind in mean_wall)
    speeds = [i for _, i in measured["student"] if i == i]
    speed = f" at the measured {sum(speeds) / len(speeds):.0f} img/s" if speeds else ""
    resumed = sum(f < 1 for f in left.values())
    return f"{head}{f' ({resumed} resumed)' if resumed else ''}; ~{_duration(total)}{speed}" + (
        f" (plus {len(unmeasured)} teacher run(s), not measured yet)" if unmeasured else ""
    )


def _fraction_left(job: Job) -> float:
    """The part of an interrupted run still to train: 1 - its last finished epoch (checkpoint.json) / its epochs
    (config.json); 1 for a run not started or whose files cannot be read."""
    try:
        done = int(json.loads((job.run_dir / CKPT_STATE).read_text())["epoch"])
        epochs = int(json.loads((job.run_dir / "config.json").read_text())["epochs"])
    except (OSError, ValueError, KeyError, TypeError):
        return 1.0
    return min(1.0, max(0.0, 1 - done / epochs)) if epochs > 0 else 1.0


def run_logged(cmd: list[str], log: Path, env: tuple[tuple[str, str], ...] = ()) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        f.write("$ " + shell_line(cmd, env) + "\n")
        f.flush()
        return subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1", **dict(env)})


def _take(job: Job, claims: Path) -> bool:
    """Claim a job: a lock (common.io) on claims/<job>, taken before its command starts, so two sweeps on one dir never
    start the same job (the run dir's own lock is taken only later, by the command). False while another sweep holds the
    claim or a process outside any sweep holds the run dir."""
    (claims / job.name).mkdir(parents=True, exist_ok=True)
    try:
        acquire_lock(claims / job.name)
    except UserError:
        return False
    if is_locked(job.run_dir):
        release_lock(claims / job.name)
        return False
    return True


def _claim(job: Job, claims: Path, wait: bool, say) -> str:
    """ "done", "busy" (another process runs it, or what it needs is missing) or "mine" (claimed: run it).

    With wait, a job another process runs is looked at every POLL_S seconds until it is done or its lock is gone."""
    waiting = False
    if job.done.exists() and not job.finished():
        say(f"{job.name}: {job.done} cannot be read; training it again")
    while not job.finished():
        missing = [str(n) for n in job.needs if not Path(n).exists()]
        if missing:  # another sweep (or a person) is making what it needs right now
            say(f"{job.name}: skipped, waiting for {missing[0]}")
            return "busy"
        if _take(job, claims):
            if not job.finished():
                return "mine"
            release_lock(claims / job.name)  # finished between the first look and the claim
            break
        if not wait:
            say(f"{job.name}: skipped, another process is running it")
            return "busy"
        if not waiting:
            say(f"{job.name}: another process is making it; waiting for it")
            waiting = True
        time.sleep(POLL_S)
    if waiting:
        say(f"{job.name}: made by another process")
    return "done"


def _run_one(job: Job, log: Path, say) -> int:
    t0 = time.perf_counter()
    resumed = (job.run_dir / CKPT_STATE).exists()  # interrupted mid-run: go on from the last finished epoch
    code = run_logged(job.argv(resumed), log, job.env)
    if code and resumed:  # e.g. the config changed since, or the checkpoint is damaged: start this run again
        failed_log = log.with_suffix(".resume-failed.txt")
        os.replace(log, failed_log)
        say(f"{job.name}: could not resume (see {failed_log}); starting it again")
        code = run_logged(job.argv(False), log, job.env)
    status = ("ok" + (" (resumed)" if resumed else "")) if code == 0 else f"FAILED (exit {code}, see {log})"
    say(f"{job.name}: {status} in {time.perf_counter() - t0:.0f} s")
    return code


def run_jobs(jobs: list[Job], sweep: Path, desc: str = "sweep", wait: bool = False) -> tuple[list[str], list[str]]:
    """Run the jobs in order; returns (failed, busy) job names.

    A finished job (its done file) is skipped, an interrupted one resumed, one that another process runs (or that needs
    what another process is making) skipped as busy; with wait, a teacher, cache or probability job that another process
    is making is waited for instead. A failed prerequisite stops the sweep (UserError): the jobs after it need it."""
    failed, busy = [], []
    bar = tqdm(jobs, desc=desc, unit="run", file=sys.stdout, dynamic_ncols=True)
    for job in bar:
        bar.set_postfix_str(job.name)
        state = _claim(job, Path(sweep) / ".claims", wait and job.kind != "student", tqdm.write)
        if state != "mine":
            busy += [job.name] if state == "busy" else []
            continue
        try:
            code = _run_one(job, Path(sweep) / "logs" / f"{job.name}.txt", tqdm.write)
        finally:
            release_lock(Path(sweep) / ".claims" / job.name)
        if code:
            failed.append(job.name)
            if job.kind != "student":
                raise UserError(f"{job.name} failed; see {Path(sweep) / 'logs' / (job.name + '.txt')}")
    return failed, busy


def report(sweep: Path, failed: list[str], busy: list[str]) -> int:
    df, s = write_tables(sweep)
    if not df.empty:
        print(format_summary(s))
        print(f"wrote {sweep / 'results.csv'} ({len(df)} runs) and {sweep / 'summary.csv'}")
    if busy:
        print(f"{len(busy)} run(s) are running elsewhere or wait for one that is; run the sweep again later: {', '.join(busy)}")
    if failed:
        raise UserError(f"{len(failed)} run(s) failed: {', '.join(failed)}")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config)
    if not args.dry_run:  # a dry run plans from the config alone, data or not
        require_data(cfg, args)
    jobs = plan(cfg, args)
    sweep = sweep_dir(cfg, args)
    if args.list:  # the jobs still to do, as commands for GNU parallel or a job array; notes go to stderr
        prepare_inputs(cfg, args, say=lambda m: print(m, file=sys.stderr))
        pending = [j for j in jobs if not j.finished()]
        mine = [j for j in pending if not (is_locked(j.run_dir) or is_locked(sweep / ".claims" / j.name))]
        for job in mine:
            print(job.shell())
        if len(mine) < len(pending):
            print(f"left out {len(pending) - len(mine)} job(s) another process is running", file=sys.stderr)
        return 0
    print(describe(cfg, args, jobs), flush=True)
    if args.dry_run:
        return 0
    prepare_inputs(cfg, args)
    print(estimate(jobs, sweep), flush=True)
    failed, busy = run_jobs(jobs, sweep, f"sweep {cfg['name']}" + (f" {args.shard}" if args.shard else ""), wait=bool(args.shard))
    return report(sweep, failed, busy)


if __name__ == "__main__":
    run(main)
