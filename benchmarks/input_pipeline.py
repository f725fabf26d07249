"""Images per second of the training input (data.pipeline.Batches) as training uses it, on one CPU core.

    OMP_NUM_THREADS=1 python -m benchmarks.input_pipeline
    # prints one row per setting and batch size: plain flips, + 16 unlabelled per batch, + cached teacher
    # logits, + both, + 2 replicas, strong augmentation (+ mixup); img/s counts every image a batch carries

Synthetic arrays of the real shapes and dtypes (2879 labelled, 1000 unlabelled, 128x128 uint8 images,
float16 teacher views) stand in for the data: the cost is batch assembly, not reading files. Each setting assembles a whole
epoch twice and keeps the faster pass.
"""

from __future__ import annotations

from common.backend import choose_backend

choose_backend()

import argparse
import time

import numpy as np

from common.cli import run
from common.config import HelpFormatter
from data.pipeline import Batches


def arrays(n: int, n_unl: int, size: int = 128, seed: int = 0):
    rng = np.random.default_rng(seed)
    # as training.runs.batches makes them: padded uint8 images (the graph scales them), 0/1 float32 masks
    x = rng.integers(0, 256, (n, size, size, 1), np.uint8)
    y = (rng.random((n, size, size, 1)) > 0.5).astype(np.float32)
    ux = rng.integers(0, 256, (n_unl, size, size, 1), np.uint8)
    t = rng.normal(size=(n, 2, size, size, 1)).astype(np.float16)
    ut = rng.normal(size=(n_unl, 2, size, size, 1)).astype(np.float16)
    return x, y, ux, t, ut


def img_per_s(batches: Batches) -> float:
    best = 0.0
    for _ in range(2):
        t0, count = time.perf_counter(), 0
        for i in range(len(batches)):
            feed, _ = batches[i]
            count += len(feed["image"])
        best = max(best, count / (time.perf_counter() - t0))
        batches.on_epoch_end()
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--images", type=int, default=2879, help="synthetic labelled images (2879: a full training split)")
    ap.add_argument("--unlabelled", type=int, default=1000, help="synthetic unlabelled images")
    ap.add_argument("--batch-size", type=int, nargs="+", default=[32, 128], help="labelled images per batch: one column each")
    args = ap.parse_args(argv)
    x, y, ux, t, ut = arrays(args.images, args.unlabelled)
    settings = {
        "flips": {},
        "flips + 16 unlabelled": {"unlabelled_x": ux, "n_unlabelled": 16},
        "flips + cached logits": {"t": t},
        "flips + unlabelled + cached logits": {"unlabelled_x": ux, "n_unlabelled": 16, "t": t, "unlabelled_t": ut},
        "all + 2 replicas": {"unlabelled_x": ux, "n_unlabelled": 16, "t": t, "unlabelled_t": ut, "multiple_of": 2},
        # --augment strong (shift, zoom, brightness/contrast: data.augment) and --mixup: the teacher in the graph, no cache
        "strong + 16 unlabelled": {"unlabelled_x": ux, "n_unlabelled": 16, "augment": "strong"},
        "strong + unlabelled + mixup": {"unlabelled_x": ux, "n_unlabelled": 16, "augment": "strong", "mixup": 0.2},
    }
    print(f"{'setting':38s} " + " ".join(f"{'batch ' + str(b):>12s}" for b in args.batch_size) + "   (img/s, one process)")
    for name, kw in settings.items():
        row = [img_per_s(Batches(x, y, b, shuffle=True, flip=True, seed=0, **kw)) for b in args.batch_size]
        print(f"{name:38s} " + " ".join(f"{v:12,.0f}" for v in row), flush=True)
    return 0


if __name__ == "__main__":
    run(main)
