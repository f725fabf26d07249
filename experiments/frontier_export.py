"""The frontier's exports (experiments.frontier): each student model exported once, fp32 and int8, by export_tflite.py
in a subprocess, from the run its latency and parity stand for; an export newer than its student.keras is reused."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from common.cli import UserError
from experiments.frontier_table import FORMATS, options
from student.latency import call

ROOT = Path(__file__).resolve().parents[1]


def export_run(students: pd.DataFrame, model: str) -> pd.Series | None:
    """The run a model is exported from: kd_unl seed 0 with the fewest options (plain KD + unlabelled before +aug or
    +lovasz runs), else its lowest seed (runs with a student.keras only); chosen by the runs' fields, not their labels."""
    g = students[(students.model == model).to_numpy() & np.array([(Path(p) / "student.keras").is_file() for p in students.path], bool)]
    if g.empty:
        return None
    key = [(not (s == "kd_unl" and seed == 0), len(options(spec)), seed, p) for s, spec, seed, p in zip(g.setting, g.spec, g.seed, g.path)]
    return g.iloc[min(range(len(g)), key=lambda i: key[i])]


def _fresh(out: Path, model: str, keras: Path) -> bool:
    """True when out holds an export of this student.keras made after it (a rerun reuses it)."""
    report = out / "export.json"
    if not report.is_file() or report.stat().st_mtime <= keras.stat().st_mtime:
        return False
    if not all((out / f"{model}_{f}.tflite").is_file() for f in FORMATS):
        return False
    try:
        return Path(json.loads(report.read_text())["model"]).resolve() == keras.resolve()
    except (OSError, ValueError, KeyError):
        return False


def _data_path(run_dir: Path, data: str) -> Path:
    """--data, else the run's config.json "data" (relative to where it was trained: here or the repository)."""
    given = data or json.loads((run_dir / "config.json").read_text()).get("data", "")
    for p in (Path(given), ROOT / given):
        if given and p.exists():
            return p.resolve()
    src = "--data" if data else f'{run_dir / "config.json"} ("data")'
    raise UserError(f"data {given!r} from {src} does not exist; pass --data")


def plan_exports(students: pd.DataFrame, out: Path, data: str) -> list[dict]:
    """Per model: its export folder, the run it comes from and, where it is not fresh, the command that makes it."""
    plans = []
    for model in dict.fromkeys(students.model):
        r = export_run(students, model)
        if r is None:
            print(f"note: no student.keras for {model}; no export or latency", flush=True)
            continue
        keras, dest = (Path(r.path) / "student.keras").resolve(), out / "exports" / model
        cmd = None
        if not _fresh(dest, model, keras):
            d = _data_path(Path(r.path), data)
            cmd = [sys.executable, str(ROOT / "export_tflite.py"), "--model", str(keras), "--data", str(d), "--out", str(dest.resolve())]
            cmd += ["--quant", ",".join(reversed(FORMATS)), "--name", model, "--overwrite"]
        plans.append({"model": model, "run": r.path, "dir": dest, "cmd": cmd})
    return plans


def run_exports(plans: list[dict]) -> dict:
    """{model: {format: parity row of export.json}}, exporting what is not fresh."""
    reports = {}
    for p in plans:
        if p["cmd"]:
            print(f"exporting {p['model']} from {p['run']}", flush=True)
            said = call(p["cmd"], f"export of {p['model']}").rstrip()
            print(said, flush=True) if said else None
        else:
            print(f"reusing {p['dir'] / 'export.json'} ({p['model']})", flush=True)
        rows = json.loads((p["dir"] / "export.json").read_text()).get("rows", [])
        reports[p["model"]] = {r["format"]: r for r in rows}
    return reports
