"""Latency of a .tflite model on this machine (run it on the Pi to compare models).

    python pi/benchmark.py --model student_int8.tflite --threads 1,2,4 --runs 50 --json bench.json
    # prints:
    # model                         size_kb    MMACs threads  median_ms   p90_ms  img_per_s
    # student_int8.tflite             151.2     47.6       1       9.81    10.02      101.9
    # student_int8.tflite             151.2     47.6       2       5.40     5.61      185.2
    # ...
    # bench.json: {"model", "size_kb", "macs", "runs", "warmup", "machine",
    #              "results": [{"threads", "median_ms", "p90_ms", "img_per_s", "macs"}, ...]}

Per image at batch 1, after --warmup runs, on a fixed random input (set_tensor + invoke + get_tensor).
MACs are counted from the model's CONV_2D, DEPTHWISE_CONV_2D, TRANSPOSE_CONV and FULLY_CONNECTED ops
and tensor shapes (n/a where this runtime does not list its ops). Bad input: one line `error: ...`, exit 2.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from infer import Parser, UserError, cli, load_model, write_atomic
from runner import quantize


def count_macs(interp) -> int | None:
    """Multiply-accumulates of CONV_2D, DEPTHWISE_CONV_2D, TRANSPOSE_CONV and FULLY_CONNECTED ops."""
    try:
        ops = interp._get_ops_details()
    except (AttributeError, RuntimeError, ValueError):
        return None
    shapes = {t["index"]: t["shape"] for t in interp.get_tensor_details()}
    total = 0
    for op in ops:
        name, ins, outs = op["op_name"], list(op["inputs"]), list(op["outputs"])
        try:
            out = shapes[outs[0]]
            if name == "CONV_2D":
                w = shapes[ins[1]]  # (out_c, kh, kw, in_c)
                total += int(np.prod(out[1:])) * int(w[1] * w[2] * w[3])
            elif name == "DEPTHWISE_CONV_2D":
                w = shapes[ins[1]]  # (1, kh, kw, out_c)
                total += int(np.prod(out[1:])) * int(w[1] * w[2])
            elif name == "TRANSPOSE_CONV":
                w, x = shapes[ins[1]], shapes[ins[2]]  # weights (out_c, kh, kw, in_c), input (n, h, w, in_c)
                total += int(x[1] * x[2] * x[3]) * int(w[0] * w[1] * w[2])
            elif name == "FULLY_CONNECTED":
                w = shapes[ins[1]]
                total += int(np.prod(out[1:-1])) * int(w[0] * w[1])  # weights (units, in); per image
        except (KeyError, IndexError):
            continue
    return total


def bench(path: Path, threads: int, runs: int, warmup: int) -> dict:
    m = load_model(path, threads)
    m._resize(1) if m.dynamic_batch else None
    shape = tuple(int(d) for d in m.inp["shape"])  # (1, S, S, 1); a fixed batch n > 1 is timed per call / n
    q = quantize(np.random.default_rng(0).random(shape, dtype=np.float32), m.inp)
    for _ in range(warmup):
        m.interp.set_tensor(m.inp["index"], q)
        m.interp.invoke()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        m.interp.set_tensor(m.inp["index"], q)
        m.interp.invoke()
        m.interp.get_tensor(m.out["index"])
        times.append(time.perf_counter() - t0)
    ms = np.array(times) * 1000 / shape[0]
    return {
        "threads": threads,
        "median_ms": round(float(np.median(ms)), 3),
        "p90_ms": round(float(np.percentile(ms, 90)), 3),
        "img_per_s": round(1000 / float(np.median(ms)), 1),
        "macs": count_macs(m.interp),
    }


def main(argv=None) -> int:
    ap = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", default="1", help="comma-separated thread counts, e.g. 1,2,4")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--json", default="", help="write the results here")
    args = ap.parse_args(argv)
    try:
        threads = [int(t) for t in args.threads.split(",") if t.strip()]
    except ValueError:
        raise UserError(f"--threads {args.threads!r} must be comma-separated integers") from None
    if not threads or min(threads) < 1 or args.runs < 1 or args.warmup < 0:
        raise UserError("--threads must be >= 1, --runs >= 1, --warmup >= 0")
    path = Path(args.model)
    results = [bench(path, t, args.runs, args.warmup) for t in threads]
    size_kb = round(path.stat().st_size / 1024, 1)
    macs = results[0]["macs"]
    mm = f"{macs / 1e6:.1f}" if macs is not None else "n/a"
    print(f"{'model':28s} {'size_kb':>8s} {'MMACs':>8s} {'threads':>7s} {'median_ms':>10s} {'p90_ms':>8s} {'img_per_s':>10s}")
    for r in results:
        print(f"{path.name:28s} {size_kb:8.1f} {mm:>8s} {r['threads']:7d} {r['median_ms']:10.2f} {r['p90_ms']:8.2f} {r['img_per_s']:10.1f}")
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(
            out,
            json.dumps(
                {
                    "model": str(path),
                    "size_kb": size_kb,
                    "macs": macs,
                    "runs": args.runs,
                    "warmup": args.warmup,
                    "machine": platform.machine(),
                    "results": results,
                },
                indent=2,
            ).encode(),
        )
    return 0


if __name__ == "__main__":
    cli(main)
