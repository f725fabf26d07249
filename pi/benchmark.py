"""Latency of .tflite models on this machine (run it on the Pi to compare models).

    python pi/benchmark.py --models exports/*/*_int8.tflite --threads 1,4 --runs 50 --csv bench.csv --json bench.json
    # prints one row per model and thread count:
    # model                         size_kb    MMACs threads  median_ms   p90_ms  img_per_s  runtime
    # sepunet8_int8.tflite             61.3     20.1       1       4.52     4.70      221.2  tflite-runtime 2.14.0
    # sepunet8_int8.tflite             61.3     20.1       4       1.83     1.95      546.4  tflite-runtime 2.14.0
    # ...
    # bench.csv, one row per (model, threads):
    #   model,path,size_kb,macs,threads,median_ms,p90_ms,img_per_s,runtime,machine
    # bench.json: {"runs", "rounds", "warmup", "machine", "runtime", "results": [the CSV rows as objects, macs null where n/a]}
    #   plus, with a single model, its "model" (path), "size_kb" and "macs" at the top

--model PATH (one file) and --models PATH [PATH ...] (several, e.g. a shell glob) may be combined (their
union, in order). `model` is the file name, `path` the path as given, `runtime` the TFLite interpreter
package and version in use, `machine` platform.machine(). Per image at batch 1, after --warmup runs, on a
fixed random input (set_tensor + invoke + get_tensor). Models are timed interleaved, not one after another:
--rounds passes (default 5) over every (model, threads), each timing about --runs / --rounds calls, so a
background load that comes and goes falls on all of them alike. MACs are counted from the model's CONV_2D,
DEPTHWISE_CONV_2D, TRANSPOSE_CONV and FULLY_CONNECTED ops and tensor shapes (n/a, an empty CSV cell, where
this runtime does not list its ops). --csv refuses an existing file unless --overwrite; files are written
atomically. Bad input (a missing or non-TFLite model, a bad --threads list, an existing --csv): one line
`error: ...`, exit 2. Every model is checked before any is loaded, as by pi/infer.py (pi/runner.py's
check_model_file): a truncated or damaged file (not the size/sha256 its sidecar records, or a flatbuffer whose
offsets point past its end) is refused in one line, not handed to the runtime, which would crash on it.
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
from bench_csv import CSV_COLUMNS, csv_text
from infer import Parser, UserError, check_model_file, cli, load_model, write_atomic
from runner import ModelError, quantize, runtime_name


def count_macs(interp) -> int | None:
    """Multiply-accumulates of CONV_2D, DEPTHWISE_CONV_2D, TRANSPOSE_CONV and FULLY_CONNECTED ops."""
    try:
        ops = interp._get_ops_details()
        shapes = {t["index"]: t["shape"] for t in interp.get_tensor_details()}
    except (AttributeError, RuntimeError, ValueError):
        return None
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


def load_warm(path: Path, threads: int, warmup: int) -> tuple:
    """The model at batch 1 (where its batch is dynamic), its fixed random input and images per call, after --warmup calls."""
    m = load_model(path, threads)
    m._resize(1) if m.dynamic_batch else None
    shape = tuple(int(d) for d in m.inp["shape"])  # (1, S, S, 1); a fixed batch n > 1 is timed per call / n
    q = quantize(np.random.default_rng(0).random(shape, dtype=np.float32), m.inp)
    for _ in range(warmup):
        m.interp.set_tensor(m.inp["index"], q)
        m.interp.invoke()
    return m, q, shape[0]


def time_calls(m, q, n: int) -> list[float]:
    """Seconds of n calls: set_tensor + invoke + get_tensor."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        m.interp.set_tensor(m.inp["index"], q)
        m.interp.invoke()
        m.interp.get_tensor(m.out["index"])
        times.append(time.perf_counter() - t0)
    return times


def round_sizes(runs: int, rounds: int) -> list[int]:
    """runs calls split into at most `rounds` passes, as evenly as possible: (7, 3) -> [3, 2, 2]."""
    rounds = min(rounds, runs)
    return [runs // rounds + (i < runs % rounds) for i in range(rounds)]


def parse_args(argv) -> argparse.Namespace:
    ap = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a .tflite model")
    ap.add_argument("--models", nargs="+", default=[], metavar="PATH", help="several .tflite models (e.g. DIR/*.tflite)")
    ap.add_argument("--threads", default="1", help="comma-separated thread counts, e.g. 1,2,4")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved passes over all models that share --runs")
    ap.add_argument("--json", default="", help="write the results here")
    ap.add_argument("--csv", default="", help="write one row per (model, threads) here")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --csv file")
    args = ap.parse_args(argv)
    try:
        args.threads = [int(t) for t in args.threads.split(",") if t.strip()]
    except ValueError:
        raise UserError(f"--threads {args.threads!r} must be comma-separated integers") from None
    if not args.threads or min(args.threads) < 1 or args.runs < 1 or args.warmup < 0 or args.rounds < 1:
        raise UserError("--threads must be >= 1, --runs >= 1, --warmup >= 0, --rounds >= 1")
    args.paths = list(dict.fromkeys(Path(p) for p in ([args.model] if args.model else []) + args.models))
    if not args.paths:
        raise UserError("give --model PATH or --models PATH [PATH ...] (see --help)")
    for path in args.paths:  # every model checked before any is timed
        check_model_file(path)
    if args.csv and Path(args.csv).exists() and (Path(args.csv).is_dir() or not args.overwrite):
        raise UserError(
            f"--csv {args.csv} is a directory" if Path(args.csv).is_dir() else f"{args.csv} exists; pass --overwrite to replace it"
        )
    return args


def bench_models(paths: list[Path], threads: list[int], runs: int, warmup: int, rounds: int = 5) -> list[dict]:
    """One row (CSV_COLUMNS) per (model, threads), timed interleaved: every (model, threads) is loaded and warmed
    up, then `rounds` passes over all of them each time about runs / rounds calls of every one, so a load that
    comes and goes on the machine falls on every model alike, not on whichever was being timed at that moment."""
    keys = [(path, t) for path in paths for t in threads]
    loaded = {k: load_warm(*k, warmup) for k in keys}  # loads every model: a missing runtime is reported here
    times = {k: [] for k in keys}
    for n in round_sizes(runs, rounds):
        for k in keys:
            times[k] += time_calls(*loaded[k][:2], n)
    macs = {path: count_macs(loaded[(path, threads[0])][0].interp) for path in paths}
    rows = []
    for path, t in keys:
        ms = np.array(times[(path, t)]) * 1000 / loaded[(path, t)][2]
        median = float(np.median(ms))
        rows.append(
            {
                "model": path.name,
                "path": str(path),
                "size_kb": round(path.stat().st_size / 1024, 1),
                "threads": t,
                "median_ms": round(median, 3),
                "p90_ms": round(float(np.percentile(ms, 90)), 3),
                "img_per_s": round(1000 / median, 1),
                "macs": macs[path],
            }
        )
    try:
        runtime = runtime_name()
    except ModelError as e:
        raise UserError(str(e)) from None
    extra = {"runtime": runtime, "machine": platform.machine()}
    return [{c: {**r, **extra}[c] for c in CSV_COLUMNS} for r in rows]


def print_table(rows: list[dict]) -> None:
    w = max(28, *(len(r["model"]) for r in rows))
    print(f"{'model':{w}s} {'size_kb':>8s} {'MMACs':>8s} {'threads':>7s} {'median_ms':>10s} {'p90_ms':>8s} {'img_per_s':>10s}  runtime")
    for r in rows:
        mm = f"{r['macs'] / 1e6:.1f}" if r["macs"] is not None else "n/a"
        print(
            f"{r['model']:{w}s} {r['size_kb']:8.1f} {mm:>8s} {r['threads']:7d} {r['median_ms']:10.2f} {r['p90_ms']:8.2f} "
            f"{r['img_per_s']:10.1f}  {r['runtime']}"
        )


def write_csv(out: Path, rows: list[dict]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, csv_text(rows).encode())


def write_json(out: Path, rows: list[dict], args) -> None:
    report = {"runs": args.runs, "rounds": args.rounds, "warmup": args.warmup, "machine": platform.machine(), "runtime": rows[0]["runtime"]}
    if len(args.paths) == 1:  # the single-model keys of earlier versions
        report.update(model=str(args.paths[0]), size_kb=rows[0]["size_kb"], macs=rows[0]["macs"])
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, json.dumps({**report, "results": rows}, indent=2).encode())


def main(argv=None) -> int:
    args = parse_args(argv)
    rows = bench_models(args.paths, args.threads, args.runs, args.warmup, args.rounds)
    print_table(rows)
    if args.csv:
        write_csv(Path(args.csv), rows)
    if args.json:
        write_json(Path(args.json), rows, args)
    return 0


if __name__ == "__main__":
    cli(main)
