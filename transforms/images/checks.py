"""Figure image checks and normalization: pure, Beam-free.

A valid baseline JPEG in RGB or grayscale, stored upright, is kept byte for byte; everything
else (PNG, GIF, TIFF, CMYK or 16-bit sources, and any image whose EXIF orientation says it is
stored turned or mirrored) is decoded once, turned upright, and re-encoded as JPEG. The decode check
runs in JPEG draft mode (DCT scaling), which reads every entropy-coded byte, so truncated or
corrupt files fail, at a fraction of the cost of a full decode; the perceptual hash comes
from that same reduced image.
"""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

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
_ORIENTATION = 0x0112  # the EXIF tag; values 2-8 say how the stored pixels are turned
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_ADDRESS = re.compile(r" at 0x[0-9A-Fa-f]+")


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
    warnings: list[str] = field(default_factory=list)  # e.g. an EXIF block that was ignored


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


def describe(err: Exception) -> str:
    """An error as stable text: no memory addresses (PIL names its BytesIO by address)."""
    if isinstance(err, UnidentifiedImageError):
        return "UnidentifiedImageError: not an image format Pillow reads"
    return _ADDRESS.sub("", f"{type(err).__name__}: {err}")


def _orientation(image: Image.Image) -> tuple[int, str]:
    """(EXIF orientation, warning): 1 (as stored) where there is none or it cannot be read."""
    try:
        exif = image.getexif()
        value = exif.get(_ORIENTATION, 1)
    except Exception as err:
        return 1, f"exif_unreadable: {describe(err)}; orientation taken as stored"
    if not exif and image.info.get("exif"):  # Pillow drops a garbage block without a word
        return 1, "exif_unreadable: an EXIF block with no readable tag; orientation taken as stored"
    if isinstance(value, int) and (value == 1 or value in _UPRIGHT):
        return int(value), ""
    return 1, f"exif_orientation_invalid: {str(value)[:40]!r}; taken as stored"


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
        raise ImageRejected("image_unreadable", describe(err)) from None
    if width * height > max_pixels:
        raise ImageRejected("image_too_large", f"{width}x{height} > {max_pixels} pixels")
    if min(width, height) < min_side:
        raise ImageRejected("image_too_small", f"{width}x{height}, min side {min_side}")
    keep = source_format == "JPEG" and source_mode in _KEEP_JPEG_MODES
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            orientation, warning = _orientation(image) if keep else (1, "")
            if keep and orientation == 1:
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
                    warnings=[warning] if warning else [],
                )
            if getattr(image, "n_frames", 1) > 1:
                image.seek(0)  # animated GIF/multi-page TIFF: the first frame is the figure
            image.load()
            orientation, warning = _orientation(image)  # after load: a PNG's eXIf may trail
            rgb = _to_8bit_rgb(image)
            if orientation != 1:
                # Readers (PIL, webdataset, browsers of a bare JPEG) show pixels as stored:
                # ship them upright, with the size a reader sees, and no EXIF to apply twice.
                rgb = rgb.transpose(_UPRIGHT[orientation])
            out = io.BytesIO()
            rgb.save(out, "JPEG", quality=JPEG_QUALITY, optimize=False)
    except ImageRejected:
        raise
    except Exception as err:
        raise ImageRejected("image_corrupt", describe(err)) from None
    encoded = out.getvalue()
    return CheckedImage(
        data=encoded,
        width=rgb.width,
        height=rgb.height,
        source_format=source_format,
        source_mode=source_mode,
        converted=True,
        sha256=hashlib.sha256(encoded).hexdigest(),
        phash=phash(rgb),
        warnings=[warning] if warning else [],
    )


def decode_only(data: bytes) -> tuple[int, int]:
    """Full decode and nothing else: the benchmark's limit for a figure's cost."""
    image = Image.open(io.BytesIO(data))
    image.load()
    return image.size
