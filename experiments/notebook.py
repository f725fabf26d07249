"""Execute a notebook top to bottom and save it with its outputs (nbclient).

SWEEP_DIR=runs/quick python -m experiments.notebook notebooks/compare_students.ipynb runs/quick/compare_students.ipynb
# prints: executed notebooks/compare_students.ipynb -> runs/quick/compare_students.ipynb (6 figures)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import io
from common.cli import UserError, run
from common.config import HelpFormatter


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.notebook", description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("src", metavar="IN.ipynb", help="the notebook to execute (its cells run in its own folder)")
    ap.add_argument("dst", metavar="OUT.ipynb", help="where the executed notebook, outputs included, is written")
    args = ap.parse_args(argv)

    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    src, dst = Path(args.src), Path(args.dst)
    nb = nbformat.read(src, as_version=4)
    try:
        NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(src.parent)}}).execute()
    except CellExecutionError as e:
        raise UserError(f"{src}: a cell failed: {str(e).strip().splitlines()[-1]}") from None
    io.write_text(dst, nbformat.writes(nb))
    figs = sum(1 for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {}))
    print(f"executed {src} -> {dst} ({figs} figures)")
    return 0


if __name__ == "__main__":
    run(main)
