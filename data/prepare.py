"""Cache a Kaggle TGS folder as one compact `.npz` (uint8 images, bit-packed masks, ids, depths).

    python -m data.prepare --data ../shared/data/tgs-salt --out cache/tgs.npz
    # prints: cached 3200 labelled + 1000 unlabelled images to cache/tgs.npz (13.9 MB); loads in 0.21 s

Every script that takes --data accepts the folder or the cache; the cache loads in well under a second.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common.cli import UserError, run
from data.tgs import load_image_folder, load_npz, load_tgs_dir, save_npz


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="Kaggle TGS folder (train/images, train/masks or train.csv)")
    ap.add_argument("--out", required=True, help="output .npz path")
    ap.add_argument("--no-test", action="store_true", help="leave out DATA/test/images")
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if out.suffix != ".npz":
        raise UserError(f"--out {out} must end in .npz")
    if out.exists() and not args.overwrite:
        raise UserError(f"{out} exists; pass --overwrite to replace it")
    data = load_tgs_dir(args.data)
    test_dir = Path(args.data) / "test" / "images"
    test = load_image_folder(test_dir) if test_dir.is_dir() and not args.no_test else None
    save_npz(data, out, test)
    t0 = time.perf_counter()
    load_npz(out)
    dt = time.perf_counter() - t0
    n_test = len(test) if test is not None else 0
    print(f"cached {len(data)} labelled + {n_test} unlabelled images to {out} ({out.stat().st_size / 1e6:.1f} MB); loads in {dt:.2f} s")
    return 0


if __name__ == "__main__":
    run(main)
