"""The preprocessing sidecar `<model>.json`: written next to every model, read here and only here.

numpy-free and TensorFlow-free: the Raspberry Pi program and the training code (evaluate, export,
teacher cache) read a sidecar through `read_sidecar`, so a sidecar that is not a JSON object, lacks
`input_size` or holds `"threshold": "high"` is refused the same way everywhere, naming the file.

A .tflite's sidecar (export_tflite.py) also records the file's `size_bytes` and `sha256`
(`file_digest`): `check_model_bytes` refuses a copy that differs (truncated, damaged) before a
runtime loads it. Sidecars without them (older exports, .keras models) are not checked.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

FORMAT = "tgs-seg-sidecar/1"
ORIG_SIZE = 101


class SidecarError(ValueError):
    """The sidecar is unusable; the message names the file."""


def sidecar_path(model_path) -> Path:
    p = Path(model_path)
    return p.with_name(p.name + ".json")


def make_spec(input_size: int = 128, resize_mode: str = "pad", threshold: float = 0.5, output: str = "probability") -> dict:
    """The preprocessing contract between training, evaluation, export and the Pi (the sidecar)."""
    if resize_mode not in ("pad", "resize"):
        raise ValueError(f"resize_mode must be 'pad' or 'resize', not {resize_mode!r}")
    return {
        "format": FORMAT,
        "orig_size": ORIG_SIZE,
        "input_size": int(input_size),
        "resize_mode": resize_mode,
        "scale": 1.0 / 255.0,
        "threshold": float(threshold),
        "output": output,
    }


def _number(v) -> bool:
    if isinstance(v, bool):
        return False
    return isinstance(v, int) or (isinstance(v, float) and math.isfinite(v))  # an int too large for a float too


def _count(v, least: int) -> bool:
    """A whole number >= least: an int, or a float such as 128.0 (not a bool)."""
    return _number(v) and (isinstance(v, int) or v.is_integer()) and v >= least


def check_spec(spec, where: str = "sidecar") -> dict:
    """Validate a spec (from a file or built in code); returns it with defaults filled in."""
    if not isinstance(spec, dict):
        raise SidecarError(f"{where} must hold a JSON object, not {type(spec).__name__}")
    if "input_size" not in spec:
        raise SidecarError(f"{where} has no 'input_size'")
    out = {**make_spec(128), **spec}
    for key in ("input_size", "orig_size"):
        v = out[key]
        if not _count(v, 1):
            raise SidecarError(f"{where}: {key} {v!r} must be a positive integer")
        out[key] = int(v)
    if out["resize_mode"] not in ("pad", "resize"):
        raise SidecarError(f"{where}: resize_mode {out['resize_mode']!r} must be 'pad' or 'resize'")
    if out["output"] not in ("probability", "logits"):
        raise SidecarError(f"{where}: output {out['output']!r} must be 'probability' or 'logits'")
    if not (_number(out["threshold"]) and 0 < out["threshold"] < 1):
        raise SidecarError(f"{where}: threshold {out['threshold']!r} must be a number in (0, 1)")
    if not (_number(out["scale"]) and out["scale"] > 0):
        raise SidecarError(f"{where}: scale {out['scale']!r} must be a number > 0")
    if out["resize_mode"] == "pad" and not out["orig_size"] <= out["input_size"] < 2 * out["orig_size"] - 1:
        raise SidecarError(f"{where}: cannot reflect-pad {out['orig_size']} to input_size {out['input_size']}")
    if "size_bytes" in out:
        if not (isinstance(out["size_bytes"], int) and _count(out["size_bytes"], 0)):
            raise SidecarError(f"{where}: size_bytes {out['size_bytes']!r} must be an integer >= 0")
    if "sha256" in out:
        if not (isinstance(out["sha256"], str) and re.fullmatch(r"[0-9a-fA-F]{64}", out["sha256"])):
            raise SidecarError(f"{where}: sha256 {out['sha256']!r} must be 64 hex digits")
        out["sha256"] = out["sha256"].lower()
    return out


def file_digest(data: bytes) -> dict:
    """The sidecar's record of a model file's bytes: {"size_bytes", "sha256"}."""
    return {"size_bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def check_model_bytes(model_path, data: bytes, spec: dict | None) -> None:
    """SidecarError unless `data` (the bytes of model_path) has the size and sha256 its sidecar spec records;
    a spec without them (or no spec) checks nothing."""
    if not spec or ("size_bytes" not in spec and "sha256" not in spec):
        return
    want = {k: spec[k] for k in ("size_bytes", "sha256") if k in spec}
    have = file_digest(data) if "sha256" in want else {"size_bytes": len(data)}
    if any(have[k] != v for k, v in want.items()):
        raise SidecarError(f"{model_path}: size/sha256 does not match its sidecar (truncated or damaged copy?)")


def read_sidecar(model_path) -> dict | None:
    """The checked spec of `<model_path>.json`, or None when there is no sidecar."""
    side = sidecar_path(model_path)
    if not side.exists():
        return None
    try:
        spec = json.loads(side.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        what = "nested too deeply" if isinstance(e, RecursionError) else str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SidecarError(f"sidecar {side} is not readable JSON: {what}") from None
    return check_spec(spec, f"sidecar {side}")
