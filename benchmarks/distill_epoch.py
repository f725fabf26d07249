r"""Seconds per training epoch: baseline vs KD with the teacher in the graph vs KD from the cache, and the
teacher-in-graph signals: feature KD (FitNets, attention transfer, CWD on dec1_out) and strong augmentation.

    python -m benchmarks.distill_epoch --data cache/tgs.npz --teacher runs/cpu/teacher/teacher.keras \
        --cache runs/cpu/teacher/cache --images 640 [--modes baseline kd_cache kd_fitnets ...]
    # prints one row per mode: mode, img/s, s/epoch (scaled to the full training split), ratio to baseline
    # and writes benchmarks/results/distill_epoch_<backend>.json

Each mode trains the same unet4 student for one warm-up pass and one timed pass over --images
training images (batch 32, flips on), on whatever backend KERAS_BACKEND selects. Modes: baseline, kd_in_graph,
kd_cache, kd_fitnets, kd_at, kd_cwd (teacher in the graph + that feature loss), kd_strong (teacher in the graph,
--augment strong). Also printed: what a cache of the teacher's dec1_out features would take instead (float16, both views).
"""

from __future__ import annotations

from common.backend import choose_backend

choose_backend()

import argparse
import time
from pathlib import Path

import keras

from common import io
from common.cli import run
from common.config import HelpFormatter
from data.split import load_split
from data.tgs import load_data
from distill.graph import build_training_graph
from distill.losses import IdentityLoss
from distill.teachers import TeacherLogits
from models.registry import build_model, stage_layer
from pi.sidecar import make_spec
from training.runs import batches

FEATURE_MODES = {"kd_fitnets": "fitnets", "kd_at": "at", "kd_cwd": "cwd"}
MODES = ("baseline", "kd_in_graph", "kd_cache", *FEATURE_MODES, "kd_strong")


def time_mode(mode, train, val, spec, sources, batch_size):
    keras.utils.set_random_seed(0)
    source = sources.get(mode)
    source = sources["kd_in_graph"] if mode in FEATURE_MODES or mode == "kd_strong" else source
    augment = "strong" if mode == "kd_strong" else "flip"
    tb = batches(train, val, spec, batch_size, 0, True, cache=source.cache if source is not None else None, augment=augment).train
    depth = sum(isinstance(layer, keras.layers.MaxPooling2D) for layer in sources["kd_in_graph"].models[0].layers)  # the teacher's depth
    student = build_model("unet", (spec["input_size"],) * 2 + (1,), 4, depth, name="unet4")
    feature = {"feature_loss": FEATURE_MODES[mode], "feature_layers": [("dec1_out", "dec1_out")]} if mode in FEATURE_MODES else {}
    graph = build_training_graph(
        student, source, temperature=2.0, lam=0.0 if mode == "baseline" else 0.9, input_scale=spec["scale"], **feature
    )
    graph.compile(optimizer=keras.optimizers.AdamW(1e-3), loss=IdentityLoss())
    graph.fit(tb, epochs=1, verbose=0, steps_per_epoch=3)  # warm-up (first-call compilation, allocators)
    t0 = time.perf_counter()
    graph.fit(tb, epochs=1, verbose=0)
    dt = time.perf_counter() - t0
    return len(train) / dt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--data", required=True, help="Kaggle TGS folder or .npz cache (data.prepare)")
    ap.add_argument("--teacher", required=True, help="trained teacher .keras; its run dir's split.json picks the training images")
    ap.add_argument("--cache", required=True, help="that teacher's logit cache (python -m teacher.cache), for kd_cache")
    ap.add_argument("--images", type=int, default=640, help="training images per timed pass")
    ap.add_argument("--batch-size", type=int, default=32, help="labelled images per step")
    ap.add_argument("--out", default="", help="JSON file of the rows (default: benchmarks/results/distill_epoch_<backend>.json)")
    ap.add_argument(
        "--modes",
        nargs="+",
        default=list(MODES),
        choices=MODES,
        metavar="MODE",
        help=f"what to time, of {', '.join(MODES)} (baseline always, first: the ratios) (default: all)",
    )
    args = ap.parse_args(argv)
    in_graph = TeacherLogits.from_models([args.teacher])
    teacher = in_graph.models[0]
    spec = make_spec(int(teacher.inputs[0].shape[1]))
    sources = {"kd_in_graph": in_graph, "kd_cache": TeacherLogits.from_cache(args.cache, spec, [args.teacher])}
    split = load_split(Path(args.teacher).parent / "split.json")
    data = load_data(args.data)
    full = len(split["train"])
    train, val = data.subset(split["train"][: args.images]), data.subset(split["val"][:64])
    rows = []
    modes = ["baseline", *(m for m in args.modes if m != "baseline")]
    for mode in modes:
        ips = time_mode(mode, train, val, spec, sources, args.batch_size)
        rows.append({"mode": mode, "img_per_s": round(ips, 1), "s_per_epoch": round(full / ips, 1)})
    for r in rows:
        r["ratio_to_baseline"] = round(rows[0]["img_per_s"] / r["img_per_s"], 2)
    backend = keras.backend.backend()
    feat = stage_layer(teacher, "dec1_out").output.shape  # (None, S, S, C)
    feature_cache_mb = {n: round(n * 2 * feat[1] * feat[2] * feat[3] * 2 / 2**20, 1) for n in (full + len(split["val"]), 21200)}
    out = Path(args.out or f"benchmarks/results/distill_epoch_{backend}.json")
    io.write_json(
        out,
        {
            "backend": backend,
            "teacher": args.teacher,
            "teacher_params": teacher.count_params(),
            "images": len(train),
            "full_train": full,
            "batch_size": args.batch_size,
            "rows": rows,
            "dec1_out_feature_cache_mb": feature_cache_mb,
        },
    )
    print(f"{'mode':12s} {'img/s':>8s} {'s/epoch':>8s} {'x baseline':>10s}   ({backend}, {full} training images an epoch)")
    for r in rows:
        print(f"{r['mode']:12s} {r['img_per_s']:8.1f} {r['s_per_epoch']:8.1f} {r['ratio_to_baseline']:10.2f}")
    print(
        f"a cache of the teacher's dec1_out {tuple(feat[1:])} features instead (float16, 2 views): "
        + ", ".join(f"{n:,} images {mb:,.0f} MB" for n, mb in feature_cache_mb.items())
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    run(main)
