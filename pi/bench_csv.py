"""The latency table's format: the columns pi/benchmark.py --csv writes and student/latency.py reads back.

numpy-free, like sidecar.py: the Pi program imports it as a sibling (`from bench_csv import ...`), the project as
`pi.bench_csv`, so writer and reader name one set of columns.
"""

from __future__ import annotations

import csv
import io

CSV_COLUMNS = ("model", "path", "size_kb", "macs", "threads", "median_ms", "p90_ms", "img_per_s", "runtime", "machine")


def csv_text(rows: list[dict]) -> str:
    """The rows (dicts with every column) as CSV text, header first; `macs` None (a runtime that lists no ops) is empty."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows({**r, "macs": "" if r["macs"] is None else r["macs"]} for r in rows)
    return buf.getvalue()
