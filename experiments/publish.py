"""Copy a sweep's summaries into the repo, without models or images, so anyone can compare its runs without training.

    python -m experiments.publish runs/cpu --out docs/results/cpu [--overwrite]
    SWEEP_DIR=docs/results/cpu python -m experiments.notebook notebooks/compare_students.ipynb docs/results/compare_students.ipynb
    # prints: published 5 runs of runs/cpu to docs/results/cpu (258 KB): config.json, metrics.json, history.csv each

Each finished run dir becomes OUT/<run>/ with its config.json (the machine's details kept), metrics.json (scores,
per-image Kaggle scores and pixel counts of the validation images: what experiments.results and the notebook pair)
and history.csv, the repo's own paths made relative in the JSON files; plus OUT/results.csv, summary.csv and
summary.txt (experiments.results) and the frontier table if there is one. No model file, no image, no split (image
ids only name the Kaggle files), so the folder stays small. Runs that cannot be read are refused: publish a sweep
whole.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from common import io
from common.cli import UserError, run
from experiments.results import format_summary, load_runs, summarize, unreadable_runs, write_tables

ROOT = Path(__file__).resolve().parents[1]
FILES = ("config.json", "metrics.json", "history.csv")


def is_published(folder: Path) -> bool:
    """A folder `publish` wrote: its summary.csv and no model file (a sweep's own folder holds its models)."""
    return (folder / "summary.csv").is_file() and not any(folder.rglob("*.keras"))


def publish(sweep: Path, out: Path) -> list[Path]:
    """Write the copy into a temporary folder that replaces `out` when complete; returns the run dirs copied."""
    bad = unreadable_runs(sweep)
    if bad:
        raise UserError(f"{bad[0][1]} ({len(bad)} unreadable runs under {sweep}: mend or remove them first)")
    runs = sorted(Path(p) for p in load_runs(sweep).path)
    if not runs:
        raise UserError(f"no finished runs (metrics.json) under {sweep}")
    with io.atomic_dir(out) as tmp:
        for r in runs:
            dst = tmp / r.relative_to(sweep)
            dst.mkdir(parents=True)
            for name in FILES:
                if (r / name).exists():
                    text = (r / name).read_text()
                    if name.endswith(".json"):  # the repo's own paths relative, as a user's clone would name them
                        text = text.replace(str(ROOT) + "/", "")
                    (dst / name).write_text(text)
        frontier = sweep / "frontier" / "frontier.csv"
        if frontier.exists():
            (tmp / "frontier").mkdir()
            shutil.copy(frontier, tmp / "frontier" / "frontier.csv")
        write_tables(tmp)
    return runs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep_dir", metavar="SWEEP_DIR", help="a sweep's folder of run dirs (e.g. runs/cpu)")
    ap.add_argument("--out", required=True, help="where the copy goes (e.g. docs/results/cpu)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = ap.parse_args(argv)
    sweep, out = Path(args.sweep_dir), Path(args.out)
    if not sweep.is_dir():
        raise UserError(f"{sweep} is not a folder of run dirs")
    if out.exists() and not args.overwrite:
        raise UserError(f"{out} exists; pass --overwrite to replace it")
    if out.resolve() == sweep.resolve() or sweep.resolve() in out.resolve().parents:
        raise UserError(f"--out {out} must not be inside {sweep}")
    if out.resolve() in sweep.resolve().parents:
        raise UserError(f"--out {out} must not hold {sweep}: it is replaced as a whole")
    io.check_replaceable(out, is_published, "published sweep")
    runs = publish(sweep, out)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"published {len(runs)} runs of {sweep} to {out} ({size / 1024:.0f} KB): {', '.join(FILES)} each")
    print(format_summary(summarize(load_runs(out))))
    return 0


if __name__ == "__main__":
    run(main)
