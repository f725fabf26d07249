"""Coverage-stratified, seeded train/validation split (saved with every run as split.json)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from common.cli import UserError


def coverage_class(masks: np.ndarray) -> np.ndarray:
    """0 for empty masks, else ceil(10 * salt fraction) in 1..10 (the usual TGS stratification)."""
    cov = masks.reshape(len(masks), -1).mean(axis=1)
    return np.where(cov == 0, 0, np.ceil(cov * 10)).astype(int)


def stratified_split(ids, masks, val_fraction: float = 0.1, seed: int = 0) -> dict:
    if not 0 < val_fraction < 1:
        raise UserError(f"val_fraction={val_fraction} must be in (0, 1)")
    rng = np.random.default_rng(seed)
    cls = coverage_class(masks)
    val = []
    for c in np.unique(cls):
        members = np.flatnonzero(cls == c)
        members = members[rng.permutation(len(members))]
        val.extend(members[: int(round(len(members) * val_fraction))].tolist())
    val_set = set(val)
    if not val_set or len(val_set) == len(ids):
        raise UserError(f"{len(ids)} images are too few for a validation fraction of {val_fraction}")
    return {
        "seed": seed,
        "val_fraction": val_fraction,
        "train": [ids[i] for i in range(len(ids)) if i not in val_set],
        "val": [ids[i] for i in sorted(val_set)],
    }


def load_split(path) -> dict:
    """A split.json: {"train": [ids], "val": [ids]} (lists of strings); UserError naming the file otherwise."""
    try:
        split = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read split file {path}: {e}") from None
    if not isinstance(split, dict):
        raise UserError(f"cannot read split file {path}: a JSON object with 'train' and 'val' lists is expected")
    for part in ("train", "val"):
        ids = split.get(part)
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise UserError(f"cannot read split file {path}: {part!r} must be a list of image ids")
    return split


def read_ids_file(path) -> list:
    """A split.json (its val ids) or a text file with one id per line."""
    path = Path(path)
    if path.suffix == ".json":
        return load_split(path)["val"]
    try:
        ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except OSError as e:
        raise UserError(f"cannot read ids file {path}: {e}") from None
    if not ids:
        raise UserError(f"ids file {path} is empty")
    return ids
