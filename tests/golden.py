"""A tiny deterministic training (synthetic data, 2 epochs, 1 thread) whose numbers are pinned.

    python -m tests.golden OUT_DIR     # prints the JSON that tests/test_golden.py pins

Teacher (2 epochs) -> baseline student, KD with the teacher in the graph, KD from the teacher's
cache: each run's per-epoch training loss, hard and soft parts and validation scores. A refactor of
the training loop, the loss layer or the graph must not move them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--epochs", "2", "--batch-size", "16", "--base-filters", "2", "--depth", "3", "--input-size", "104"]
KEYS = ("loss", "hard", "soft", "val_loss", "val_mean_iou", "val_kaggle_map")


def _cli(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "torch"}
    p = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True, env=env, timeout=900)
    if p.returncode:
        raise RuntimeError(f"{args} failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")


def golden(out: Path) -> dict:
    import pandas as pd

    from data.synthetic import generate

    data = out / "data"
    if not data.exists():
        generate(data, n_train=96, n_test=16, seed=5)
    t = out / "teacher"
    _cli("-m", "teacher.train", "--data", data, "--out", t, *TINY, "--base-filters", "4", "--overwrite")
    teacher = t / "teacher.keras"
    _cli("-m", "teacher.cache", "--teacher", teacher, "--data", data, "--unlabelled", data, "--out", out / "cache", "--overwrite")
    runs = {
        "teacher": t,
        "baseline": (out / "baseline", ["--lam", "0"]),
        "kd_graph": (out / "kd_graph", ["--teacher", teacher, "--lam", "0.9", "--temperature", "2"]),
        "kd_cache_unl": (
            out / "kd_cache_unl",
            [
                "--teacher",
                teacher,
                "--teacher-cache",
                out / "cache",
                "--lam",
                "0.9",
                "--temperature",
                "2",
                "--unlabelled",
                data,
                "--n-unlabelled",
                "4",
            ],
        ),
    }
    result = {}
    for name, spec in runs.items():
        if name != "teacher":
            run, extra = spec
            _cli("distill_train.py", "--data", data, "--out", run, *TINY, *extra, "--overwrite")
        else:
            run = spec
        h = pd.read_csv(run / "history.csv")
        m = json.loads((run / "metrics.json").read_text())
        result[name] = {
            "history": {k: [round(float(v), 4) for v in h[k]] for k in KEYS},
            "val": {k: round(m["val"][k], 4) for k in ("mean_iou", "kaggle_map")},
            "params": m["params"],
        }
    return result


if __name__ == "__main__":
    print(json.dumps(golden(Path(sys.argv[1])), indent=1))
