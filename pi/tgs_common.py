"""What the Pi and the training code must agree on: RLE, grayscale, pad/resize and crop back.

numpy only: this file is copied to the Raspberry Pi with the rest of pi/, and the training code
imports it too (`from pi.tgs_common import preprocess`), so the two cannot disagree.
"""

from __future__ import annotations

import numpy as np

ORIG_SIZE = 101


def rle_encode(mask) -> str:
    """Kaggle TGS RLE: pixels numbered 1..H*W in column-major order; "start length ..."; "" if empty."""
    m = np.asarray(mask).astype(bool)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {m.shape}")
    flat = np.concatenate([[0], m.flatten(order="F").astype(np.int8), [0]])
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts, ends = edges[::2], edges[1::2]
    return " ".join(f"{s} {e - s}" for s, e in zip(starts, ends))


def rle_decode(rle, shape=(ORIG_SIZE, ORIG_SIZE)) -> np.ndarray:
    """Inverse of rle_encode; malformed strings raise ValueError saying what is wrong."""
    h, w = shape
    out = np.zeros(h * w, bool)
    if rle is None or (isinstance(rle, float) and rle != rle) or not str(rle).strip():
        return out.reshape((h, w), order="F")
    nums = []
    for p in str(rle).split():
        try:
            nums.append(int(p))
        except ValueError:
            raise ValueError(f"RLE holds a non-integer: {p!r}") from None
    big = [n for n in nums if abs(n) > 2 * h * w + 2]  # beyond any pixel; also keeps numpy's int64 from overflowing
    if big:
        raise ValueError(f"RLE value {big[0]} is out of range for a {h}x{w} mask")
    nums = np.array(nums, dtype=np.int64)
    if len(nums) % 2:
        raise ValueError(f"RLE has an odd number of values ({len(nums)})")
    starts, lengths = nums[::2], nums[1::2]
    if (starts < 1).any():
        raise ValueError(f"RLE start {starts[starts < 1][0]} < 1 (starts are 1-indexed)")
    if (lengths < 1).any():
        raise ValueError(f"RLE run length {lengths[lengths < 1][0]} < 1")
    ends = starts + lengths - 1
    if (ends > h * w).any():
        raise ValueError(f"RLE run ends at pixel {ends.max()}, beyond {h}x{w} = {h * w}")
    if (starts[1:] <= ends[:-1]).any():
        raise ValueError("RLE runs overlap or are not in increasing order")
    for s, n in zip(starts, lengths):
        out[s - 1 : s - 1 + n] = True
    return out.reshape((h, w), order="F")


def to_gray(image) -> np.ndarray:
    """(H,W), (H,W,1), (H,W,3) or (H,W,4) uint8 -> (H,W) uint8 (first channel: TGS RGB channels are equal).

    An array helper that checks neither colour nor alpha: image files are read by image_io.read_gray
    (training and the Pi alike), which applies the rules; no program reads files through this.
    """
    a = np.asarray(image)
    if a.dtype != np.uint8:
        if a.dtype == np.uint16:
            raise ValueError("16-bit image: expected 8-bit")
        raise ValueError(f"image dtype {a.dtype}: expected 8-bit")
    if a.ndim == 3 and a.shape[2] in (1, 3, 4):
        return a[..., 0]
    if a.ndim == 2:
        return a
    raise ValueError(f"image shape {a.shape}: expected (H,W) or (H,W,1|3|4)")


def _geometry(spec) -> tuple[int, int, str]:
    """(orig_size, input_size, resize_mode) from a sidecar spec, checked."""
    orig, size, mode = int(spec.get("orig_size", ORIG_SIZE)), int(spec["input_size"]), spec.get("resize_mode", "pad")
    if mode not in ("pad", "resize"):
        raise ValueError(f"resize_mode {mode!r}: expected 'pad' or 'resize'")
    if mode == "pad" and not orig <= size < 2 * orig - 1:
        raise ValueError(f"cannot reflect-pad {orig} to input_size {size}")
    return orig, size, mode


def pad_amounts(orig: int, size: int) -> tuple[int, int]:
    """Reflect-padding (before, after) from orig to size: before = (size - orig) // 2."""
    before = (size - orig) // 2
    return before, size - orig - before


def resize_bilinear(arr, out_hw) -> np.ndarray:
    """(N,H,W) -> (N,h,w) float32, bilinear with half-pixel centres (like skimage order=1), no antialias."""
    a = np.asarray(arr, np.float32)
    n, h, w = a.shape
    oh, ow = out_hw

    def coords(out_len, in_len):
        x = (np.arange(out_len) + 0.5) * in_len / out_len - 0.5
        x = np.clip(x, 0, in_len - 1)
        x0 = np.floor(x).astype(int)
        x1 = np.minimum(x0 + 1, in_len - 1)
        return x0, x1, (x - x0).astype(np.float32)

    y0, y1, fy = coords(oh, h)
    x0, x1, fx = coords(ow, w)
    top = a[:, y0][:, :, x0] * (1 - fx) + a[:, y0][:, :, x1] * fx
    bot = a[:, y1][:, :, x0] * (1 - fx) + a[:, y1][:, :, x1] * fx
    return (top * (1 - fy)[:, None] + bot * fy[:, None]).astype(np.float32)


def preprocess(images, spec) -> np.ndarray:
    """uint8 (N,101,101) or (101,101) -> float32 (N,S,S,1) in [0,1], by the sidecar spec."""
    a = np.asarray(images)
    if a.ndim == 2:
        a = a[None]
    orig, size, mode = _geometry(spec)
    if a.ndim != 3 or a.shape[1:] != (orig, orig):
        raise ValueError(f"image is {'x'.join(map(str, a.shape[1:][::-1]))}, expected {orig}x{orig}")
    x = a.astype(np.float32) * np.float32(spec.get("scale", 1 / 255))
    if mode == "pad":
        b, e = pad_amounts(orig, size)
        x = np.pad(x, ((0, 0), (b, e), (b, e)), mode="reflect")
    else:
        x = resize_bilinear(x, (size, size))
    return x[..., None]


def postprocess(probs, spec) -> np.ndarray:
    """Model output (N,S,S[,1]) -> (N,101,101) float32 on the original pixels (crop or resize back)."""
    p = np.asarray(probs, np.float32)
    if p.ndim == 4:
        p = p[..., 0]
    if p.ndim == 2:
        p = p[None]
    orig, size, mode = _geometry(spec)
    if p.ndim != 3 or p.shape[1:] != (size, size):
        raise ValueError(f"model output is {p.shape}, expected (N, {size}, {size}[, 1])")
    if mode == "pad":
        b, _ = pad_amounts(orig, size)
        return np.ascontiguousarray(p[:, b : b + orig, b : b + orig])
    return resize_bilinear(p, (orig, orig))
