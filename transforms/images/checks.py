"""Figure image checks and normalization: pure, Beam-free.

A valid baseline JPEG in RGB or grayscale is kept byte for byte; everything else (PNG,
GIF, TIFF, CMYK or 16-bit sources) is decoded once and re-encoded as JPEG. The decode check
runs in JPEG draft mode (DCT scaling), which reads every entropy-coded byte, so truncated or
corrupt files fail, at a fraction of the cost of a full decode; the perceptual hash comes
from that same reduced image.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile

from transforms.errors import Rejected

MIN_SIDE = 20
MAX_PIXELS = 89_478_485  # Pillow's own decompression-bomb bound
MAX_BYTES = 64 * 1024 * 1024
JPEG_QUALITY = 95

# Decompression bombs are refused by our own bound before decoding; never let Pillow
# half-load a truncated file either.
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False

_KEEP_JPEG_MODES = ("RGB", "L")


class ImageRejected(Rejected):
    """An image that cannot become a sample."""


@dataclass
class CheckedImage:
    data: bytes  # JPEG bytes to ship
    width: int
    height: int
    source_format: str
    source_mode: str
    converted: bool
    sha256: str
    phash: str


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    matrix = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    matrix[0] /= np.sqrt(2.0)
    return matrix


_DCT32 = _dct_matrix(32)


def phash(image: Image.Image) -> str:
    """64-bit DCT perceptual hash (as 16 hex digits) of an image of any mode and size."""
    gray = image.convert("L").resize((32, 32), Image.Resampling.BILINEAR)
    pixels = np.asarray(gray, dtype=np.float64)
    coefficients = _DCT32 @ pixels @ _DCT32.T
    low = coefficients[:8, :8].flatten()
    median = np.median(low[1:])
    bits = low > median
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return f"{value:016x}"


def hamming(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def _to_8bit_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = array.max() if array.size else 0
        scale = 255.0 / top if top > 255 else 1.0
        return Image.fromarray(np.clip(array * scale, 0, 255).astype(np.uint8), "L")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    if mode in ("RGB", "L"):
        return image
    if mode == "1":
        return image.convert("L")
    return image.convert("RGB")


def check_image(
    data: bytes,
    min_side: int = MIN_SIDE,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_BYTES,
) -> CheckedImage:
    """Validate and normalize one image; ImageRejected (with a reason code) if unusable."""
    if not data:
        raise ImageRejected("image_empty", "0 bytes")
    if len(data) > max_bytes:
        raise ImageRejected("image_too_large", f"{len(data)} bytes > {max_bytes}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            source_format = image.format or ""
            source_mode = image.mode
    except Exception as err:
        raise ImageRejected("image_unreadable", f"{type(err).__name__}: {err}") from None
    if width * height > max_pixels:
        raise ImageRejected("image_too_large", f"{width}x{height} > {max_pixels} pixels")
    if min(width, height) < min_side:
        raise ImageRejected("image_too_small", f"{width}x{height}, min side {min_side}")
    keep = source_format == "JPEG" and source_mode in _KEEP_JPEG_MODES
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if keep:
                # Full entropy decode at 1/8 scale: catches truncation and corrupt scans.
                image.draft(source_mode, (max(1, width // 8), max(1, height // 8)))
                image.load()
                return CheckedImage(
                    data=data,
                    width=width,
                    height=height,
                    source_format=source_format,
                    source_mode=source_mode,
                    converted=False,
                    sha256=hashlib.sha256(data).hexdigest(),
                    phash=phash(image),
                )
            if getattr(image, "n_frames", 1) > 1:
                image.seek(0)  # animated GIF/multi-page TIFF: the first frame is the figure
            image.load()
            rgb = _to_8bit_rgb(image)
            out = io.BytesIO()
            rgb.save(out, "JPEG", quality=JPEG_QUALITY, optimize=False)
    except ImageRejected:
        raise
    except Exception as err:
        raise ImageRejected("image_corrupt", f"{type(err).__name__}: {err}") from None
    encoded = out.getvalue()
    return CheckedImage(
        data=encoded,
        width=width,
        height=height,
        source_format=source_format,
        source_mode=source_mode,
        converted=True,
        sha256=hashlib.sha256(encoded).hexdigest(),
        phash=phash(rgb),
    )


def decode_only(data: bytes) -> tuple[int, int]:
    """Full decode and nothing else: the benchmark's limit for a figure's cost."""
    image = Image.open(io.BytesIO(data))
    image.load()
    return image.size
