"""Cache the Kaggle TGS download as one compact `.npz` (uint8 images, bit-packed masks, ids, depths).

    kaggle competitions download -c tgs-salt-identification-challenge -p kaggle
    python -m data.prepare --data kaggle/tgs-salt-identification-challenge.zip --out cache/tgs.npz --max-unlabelled 1000
    # prints: cached 4000 labelled + 1000 of 18000 unlabelled images (the first 1000 by id) to cache/tgs.npz (... MB); loads in ... s

--data takes the download in any of its forms: the competition zip as Kaggle ships it (train.zip, test.zip, train.csv,
depths.csv inside; read with zipfile, nothing to unpack by hand; or the folder it was downloaded to), a folder holding
train.zip/test.zip next to the CSVs (the zip unzipped once), or the unzipped layout (DIR/train/images, DIR/train/masks
or DIR/train.csv, DIR/depths.csv, DIR/test/images). Every labelled image is cached; the test images are the unlabelled
pool: all of them, or with --max-unlabelled N the first N by sorted id (the 1,000 unlabelled images of every table here
are the first 1,000 of Kaggle's 18,000 test ids), or with --seed S a seeded random N (ids sorted,
numpy.random.default_rng(S).choice without replacement, sorted again); the same download, N and seed give the same
images on any machine. The cache
records its source, counts and seed (data.tgs.cache_meta).

Measured (2 busy cores): the 3200 labelled + 1000 unlabelled images of ../shared/data/tgs-salt make a 33.0 MB cache
that loads in 0.3-0.4 s; packed as Kaggle ships them with all 18000 test images (a 139 MB zip), --max-unlabelled 1000
caches them in 9 s (32.9 MB). A full download's 4000 labelled images add about 5 MB.

Every script that takes --data accepts the cache (or an unzipped folder); the cache loads in well under a second.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common.cli import UserError, run
from common.config import HelpFormatter
from data.tgs import KaggleDownload, load_npz, sample_ids, save_npz


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument(
        "--data",
        required=True,
        help="the Kaggle download: tgs-salt-identification-challenge.zip, a folder with train.zip/test.zip and the CSVs, "
        "or the unzipped folder (train/images, train/masks or train.csv, depths.csv, test/images)",
    )
    ap.add_argument("--out", required=True, help="output .npz path")
    ap.add_argument("--no-test", action="store_true", help="leave out the test (unlabelled) images")
    ap.add_argument(
        "--max-unlabelled",
        type=int,
        default=None,
        metavar="N",
        help="keep N of the test images: the first N by sorted id (1000: the tables' unlabelled set), or a seeded random N "
        "with --seed (default: all; the real set has 18000)",
    )
    ap.add_argument("--seed", type=int, default=None, help="with --max-unlabelled: a seeded random N instead of the first N by id")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    if out.suffix != ".npz":
        raise UserError(f"--out {out} must end in .npz")
    if args.max_unlabelled is not None and args.no_test:
        raise UserError(f"--max-unlabelled {args.max_unlabelled} and --no-test contradict each other: --no-test caches no test images")
    if args.max_unlabelled is not None and args.max_unlabelled <= 0:
        raise UserError(
            f"--max-unlabelled {args.max_unlabelled} must be at least 1 (leave it out to keep every test image, --no-test for none)"
        )
    if args.seed is not None and args.seed < 0:
        raise UserError(f"--seed {args.seed} must be >= 0")
    if out.exists() and not args.overwrite:
        raise UserError(f"{out} exists; pass --overwrite to replace it")
    cap = args.max_unlabelled
    with KaggleDownload(args.data) as download:
        all_ids = [] if args.no_test else download.test_ids
        if cap is not None and not all_ids:
            raise UserError(f"--max-unlabelled {cap}: {args.data} holds no test images (test.zip or test/images)")
        data = download.labelled()
        test = download.unlabelled(sample_ids(all_ids, cap, args.seed)) if all_ids else None
        meta = {
            "source": str(args.data),
            "form": download.form,
            "labelled": len(data),
            "unlabelled": len(test) if test is not None else 0,
            "unlabelled_source": download.test_source if test is not None else "",
            "unlabelled_total": len(all_ids),
            "max_unlabelled": cap,
            "seed": args.seed if cap is not None else None,
        }
    save_npz(data, out, test, meta)
    t0 = time.perf_counter()
    load_npz(out)
    dt = time.perf_counter() - t0
    n_test = meta["unlabelled"]
    if cap is None:
        unlabelled = f"{n_test} unlabelled images"
    elif n_test < len(all_ids):
        how = f"the first {n_test} by id" if args.seed is None else f"seed {args.seed}"
        unlabelled = f"{n_test} of {len(all_ids)} unlabelled images ({how})"
    else:
        unlabelled = f"{n_test} unlabelled images (all there are; --max-unlabelled {cap})"
    print(f"cached {len(data)} labelled + {unlabelled} to {out} ({out.stat().st_size / 1e6:.1f} MB); loads in {dt:.2f} s")
    return 0


if __name__ == "__main__":
    run(main)
