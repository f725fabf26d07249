"""Strong augmentation and mixup for the training batches (numpy, vectorised over a batch).

Beyer et al., "Knowledge distillation: a good teacher is patient and consistent" (CVPR 2022): the
student learns most when teacher and student see the *same*, aggressively augmented view, and when
it keeps training on fresh views for long; targets precomputed on a few fixed views overfit. So
these augmentations run on the batch the training graph receives, and an in-graph teacher scores
exactly the augmented image the student sees (distill.graph: one `image` input for both). A teacher
cache holds only the image and its flip, so it cannot follow them (student.config refuses the pair).

What suits seismic sections (TGS Salt: 101x101 crops reflect-padded to 128x128), and what does not:
- no vertical flips and no rotations: a section has an up and a down (depth) and near-horizontal
  layering; turning it would show the network geology that does not occur;
- horizontal flips (Batches, as before): a section looked at from the other side is still a section;
- shifts and small zooms (`warp`): the same structures at another place in the crop and at slightly
  another scale (the crops come from larger surveys at one sampling, so only +-10 %);
- brightness and contrast (`jitter`): amplitudes differ between surveys and processing gains, so a
  global gain and offset of the grey levels is a plausible other image; masks are not touched.

Geometry: a shift by d pixels is reflect padding then cropping of the padded 128x128 input, so the
frame stays filled with plausible rock, as the reflect-padded border already is. The mask's padded
border is the same reflection of the 101x101 mask (data.pipeline.prep_masks), and the loss layer
counts all 128x128 pixels, so image and mask go through the same warp (masks thresholded back to
0/1) and every pixel's label still describes its image pixel.
"""

from __future__ import annotations

import numpy as np

MAX_SHIFT = 12  # pixels, each axis (about 12 % of the 101 original pixels)
ZOOM = (0.9, 1.1)  # scale factor around the crop's centre (> 1 magnifies)
CONTRAST = (0.8, 1.2)  # factor on the deviation from each image's mean grey level
BRIGHTNESS = 0.1  # offset, as a share of the grey range (+-25 grey levels of 255)
RANGE = 255.0  # the batches' images are unscaled grey levels (the graph scales them by the sidecar's scale)


def reflect(i: np.ndarray, n: int) -> np.ndarray:
    """Integer indices -> indices in [0, n) by mirror reflection without repeating the edge (numpy's "reflect" padding)."""
    if n == 1:
        return np.zeros_like(i)
    period = 2 * (n - 1)
    i = np.mod(i, period)
    return np.where(i >= n, period - i, i)


def source_coords(n_out: int, zoom: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """(B,) zoom and shift -> (B, n_out) source coordinates: the output pixel k shows the source at c + (k - c) / zoom + shift."""
    c = (n_out - 1) / 2
    k = np.arange(n_out, dtype=np.float64)
    return c + (k[None, :] - c) / zoom[:, None] + shift[:, None]


def _axis_weights(coords: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear taps along one axis: (lower index, upper index, weight of the upper), indices reflected into [0, n)."""
    lo = np.floor(coords)
    frac = (coords - lo).astype(np.float32)
    lo = lo.astype(np.int64)
    return reflect(lo, n), reflect(lo + 1, n), frac


def warp(a: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Resample a batch (B, H, W) at source coordinates rows (B, H) x cols (B, W), bilinear, reflecting outside the frame.

    An axis-aligned warp (shift + zoom) is separable: rows are interpolated first (whole rows
    gathered), then columns. Integer coordinates (a pure shift) copy pixels exactly, which is reflect
    padding followed by a crop. Returns float32.
    """
    r0, r1, fr = _axis_weights(rows, a.shape[1])
    c0, c1, fc = _axis_weights(cols, a.shape[2])
    out = np.empty(a.shape, np.float32)
    for k in range(len(a)):  # a loop over images gathers whole rows and columns: 5x faster than one 3-D fancy index
        ak = a[k].astype(np.float32, copy=False)
        top = ak[r0[k]]
        t = top + (ak[r1[k]] - top) * fr[k][:, None]
        left = t[:, c0[k]]
        out[k] = left + (t[:, c1[k]] - left) * fc[k]
    return out


def jitter(x: np.ndarray, contrast: np.ndarray, brightness: np.ndarray) -> np.ndarray:
    """Grey levels (B, H, W) -> (x - mean) * contrast + mean + brightness * RANGE, clipped to [0, RANGE]: a survey's other gain."""
    mean = x.mean(axis=(1, 2), keepdims=True, dtype=np.float32)
    out = np.subtract(x, mean, dtype=np.float32)  # one new array, the rest in place
    out *= contrast[:, None, None]
    out += mean + (brightness * RANGE)[:, None, None]
    return np.clip(out, 0.0, RANGE, out=out)


def strong(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, n_labelled: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One batch, strongly augmented: every image shifted (+-MAX_SHIFT px), zoomed (ZOOM) and jittered (CONTRAST, BRIGHTNESS).

    x: (B, S, S, 1) grey levels (uint8 or float32, unscaled); y: (B, S, S, 1) masks, int8 0/1 (or float
    fractions after --resize-mode resize), -1 in the unlabelled rows from n_labelled on. Each labelled
    mask gets its image's warp (bilinear, then >= 0.5 for 0/1 masks, so it stays binary); unlabelled rows
    keep -1. Returns (float32 images, masks of y's dtype); the draws come from `rng` (seeded per batch).
    """
    b, s = x.shape[0], x.shape[1]
    nl = b if n_labelled is None else n_labelled
    zoom = rng.uniform(*ZOOM, b)
    dy = rng.integers(-MAX_SHIFT, MAX_SHIFT + 1, b).astype(np.float64)
    dx = rng.integers(-MAX_SHIFT, MAX_SHIFT + 1, b).astype(np.float64)
    contrast = rng.uniform(*CONTRAST, b).astype(np.float32)
    brightness = rng.uniform(-BRIGHTNESS, BRIGHTNESS, b).astype(np.float32)
    rows, cols = source_coords(s, zoom, dy), source_coords(x.shape[2], zoom, dx)
    xo = jitter(warp(x[..., 0], rows, cols), contrast, brightness)[..., None]
    yo = y.copy()  # unlabelled rows keep -1
    m = warp(y[:nl, ..., 0], rows[:nl], cols[:nl])  # each mask with its image's warp
    yo[:nl, ..., 0] = (m >= 0.5) if np.issubdtype(y.dtype, np.integer) else m
    return xo, yo


def mixup(x: np.ndarray, start: int, alpha: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mix each unlabelled row (from `start` on) with another unlabelled row: w * x_k + (1 - w) * x_partner, w ~ Beta(alpha, alpha).

    Unlabelled images have no mask, so only the soft term sees them, and an in-graph teacher scores
    the mixed image itself (Beyer et al.'s consistent mixup); labelled rows are left untouched.
    Returns (float32 images, the weights w, the partners' row numbers); fewer than two unlabelled rows:
    nothing to mix, the images come back as float32.
    """
    x = np.array(x, np.float32)  # a copy: the caller's batch is not changed
    nu = len(x) - start
    if nu < 2 or not alpha > 0:
        return x, np.ones(max(nu, 0), np.float32), np.arange(start, len(x))
    w = rng.beta(alpha, alpha, nu).astype(np.float32)
    partner = start + (np.arange(nu) + rng.integers(1, nu, nu)) % nu  # another unlabelled row, never the row itself
    w4 = w[:, None, None, None]
    x[start:] = w4 * x[start:] + (1 - w4) * x[partner]  # the right side is computed in full before the rows are written
    return x, w, partner
