"""The one image reader: a 101x101 8-bit grayscale PNG -> (101, 101) uint8, or an `ImageError` naming the file.

numpy + pillow only. The Pi program (pi/infer.py, which puts this folder on sys.path and imports
`image_io`) and the training code (data/tgs.py: `from pi.image_io import read_gray`) both read
images through `read_gray`, so a file gives the same pixels, or the same refusal, on both sides.
(Not named `imageio`: that is a PyPI package, installed with scikit-image, which it would shadow.)

One decision per PIL mode (checked in this order: readable PNG, size, bit depth, mode):

    PIL mode            decision
    ------------------  ---------------------------------------------------------------------------
    "L"  8-bit gray     accepted as is ("L;2"/"L;4" 2/4-bit gray too: Pillow scales them to 0..255)
    "RGB"               equal channels: accepted (channel 0); unequal: refused, "colour image"
    "P"  palette        converted through its palette to RGB, then the RGB rule (a gray palette is
                        accepted, a colour one refused); never read as palette indices
    "LA" gray + alpha   accepted only if alpha is 255 everywhere (else "has transparent pixels"),
                        then as "L"
    "RGBA"              the alpha rule, then the RGB rule
    "PA"                through its palette to RGBA, then the alpha rule and the RGB rule
    "1"  bilevel        accepted as 0/255 (PNG scales a 1-bit sample to the full range, as it
                        does 2- and 4-bit gray, which Pillow already reads as 0..255)
    16-bit              refused, "16-bit image: expected 8-bit": any PNG of bit depth 16 (Pillow
                        reads 16-bit gray as "I;16"/"I;16B"/"I", but 16-bit RGB, RGBA and gray+alpha
                        as 8-bit "RGB"/"RGBA", so the PNG header's bit depth decides, not the mode)
    anything else       refused, naming the mode (e.g. "I", "F", "CMYK")

A tRNS chunk (one transparent gray value, RGB colour or palette entries in an "L", "RGB", "P" or
"1" PNG) counts as alpha: the image is refused if any pixel is transparent. Files that are not
PNG, or are corrupt or truncated: "cannot read image PATH: ...". Another size than 101x101:
"image PATH is WxH, expected 101x101". Every other refusal: "image PATH: <reason>".
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

try:
    from .tgs_common import ORIG_SIZE
except ImportError:  # imported as plain `image_io` from this folder (the Pi)
    from tgs_common import ORIG_SIZE

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ImageError(ValueError):
    """An image file that is unreadable or not an accepted grayscale image; the message names the file."""


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__


def png_bit_depth(data: bytes) -> int | None:
    """Bit depth from a PNG's IHDR chunk (the first chunk, bytes 8..33), or None if it is not there."""
    if data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR" and len(data) >= 26:
        return data[24]
    return None


def _check_opaque(a: np.ndarray) -> np.ndarray:
    """(H, W, C+1) with alpha last -> (H, W, C); ValueError unless alpha is 255 everywhere."""
    alpha = a[..., -1]
    if (alpha != 255).any():
        raise ValueError(f"has transparent pixels ({int((alpha != 255).sum())} with alpha < 255): expected an opaque image")
    return a[..., :-1]


def _check_gray(rgb: np.ndarray, mode: str) -> np.ndarray:
    """(H, W, 3) -> channel 0; ValueError unless the three channels are equal."""
    if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
        what = f"mode {mode}" + (", colour palette" if mode in ("P", "PA") else "")
        raise ValueError(f"colour image ({what}), expected grayscale (equal R, G and B)")
    return np.ascontiguousarray(rgb[..., 0])


def _gray(im: Image.Image) -> np.ndarray:
    """A loaded 8-bit PIL image -> (H, W) uint8 by the table in the module docstring; ValueError if refused."""
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":  # "I": how older Pillow reads a 16-bit gray PNG
        raise ValueError("16-bit image: expected 8-bit")
    if mode == "1":
        im = im.convert("L")  # 0/255; keeps a tRNS value (0 or 255) in im.info
    if "transparency" in im.info and im.mode in ("L", "RGB", "P"):
        im = im.convert("LA" if im.mode == "L" else "RGBA")  # Pillow applies the tRNS chunk as alpha
    elif im.mode == "P":
        im = im.convert("RGB")
    elif im.mode == "PA":
        im = im.convert("RGBA")
    if im.mode not in ("L", "LA", "RGB", "RGBA"):
        raise ValueError(f"image mode {mode!r} is not supported: expected 8-bit grayscale")
    a = np.array(im)
    if a.dtype != np.uint8:  # pragma: no cover - the four modes above are 8-bit
        raise ValueError(f"image dtype {a.dtype}: expected 8-bit")
    if im.mode in ("LA", "RGBA"):
        a = _check_opaque(a)
    if a.ndim == 3 and a.shape[2] == 1:
        return np.ascontiguousarray(a[..., 0])
    if a.ndim == 3:
        return _check_gray(a, mode)
    return a


SUPPORTED_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA")  # the modes _gray may accept, depending on the pixels


def _open(path, head: bytes, source) -> Image.Image:
    """PIL's lazy open of `source` (the file's bytes or an open file; `head`: its first bytes), as an ImageError."""
    try:
        return Image.open(source)
    except UnidentifiedImageError:
        what = "corrupt PNG" if head[:8] == PNG_SIGNATURE else "not a PNG file"
        raise ImageError(f"cannot read image {path}: {what} (Pillow cannot identify it)") from None
    except Exception as e:  # noqa: BLE001 - PIL raises many kinds on a corrupt file
        raise ImageError(f"cannot read image {path}: {_first_line(e)}") from None


def _check_opened(path, im: Image.Image, head: bytes, size: int) -> None:
    """The refusals the header decides (format, size, bit depth), in read_gray's order and words."""
    if im.format != "PNG":
        raise ImageError(f"cannot read image {path}: not a PNG file ({im.format or 'unknown'} data)")
    w, h = im.size
    if (w, h) != (size, size):
        raise ImageError(f"image {path} is {w}x{h}, expected {size}x{size}")
    if png_bit_depth(head) == 16 or im.mode.startswith("I;16"):
        raise ImageError(f"image {path}: 16-bit image: expected 8-bit (PNG bit depth 16, mode {im.mode})")


def check_header(path, size: int = ORIG_SIZE) -> None:
    """What read_gray refuses from a PNG's header alone, with the same message, without decoding the pixels:
    unreadable, not PNG, another size, 16-bit, a mode outside the table. A file that passes can still be refused
    by read_gray for its pixels (colour, transparency) or for corrupt or truncated image data."""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise ImageError(f"cannot read image {path}: {e.strerror or _first_line(e)}") from None
    with f:
        try:
            head = f.read(64)
            f.seek(0)
        except OSError as e:
            raise ImageError(f"cannot read image {path}: {e.strerror or _first_line(e)}") from None
        with _open(path, head, f) as im:
            _check_opened(path, im, head, size)
            if im.mode not in SUPPORTED_MODES:
                try:
                    _gray(im)  # refuses by mode before it looks at a pixel: the same message as read_gray
                except ValueError as e:
                    raise ImageError(f"image {path}: {e}") from None


def read_gray(path, size: int = ORIG_SIZE) -> np.ndarray:
    """A size x size 8-bit grayscale PNG -> (size, size) uint8; anything else raises ImageError naming the file."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ImageError(f"cannot read image {path}: {e.strerror or _first_line(e)}") from None
    with _open(path, data, io.BytesIO(data)) as im:
        _check_opened(path, im, data, size)
        try:
            im.load()
        except Exception as e:  # noqa: BLE001 - truncated data, bad CRC, zlib errors, ...
            raise ImageError(f"cannot read image {path}: {_first_line(e)}") from None
        try:
            return _gray(im)
        except ValueError as e:
            raise ImageError(f"image {path}: {e}") from None
