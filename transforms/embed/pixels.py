"""`pixels-v1`: a weight-free, deterministic image descriptor that tells figure kinds apart.

No model, no download: numpy and PIL only, a few milliseconds an image. It is the default
embedding, good enough to cluster figures by kind (photographs, micrographs, plots,
heatmaps, blots and gels, diagrams, radiology scans) before a real model is at hand; it
knows nothing of what a figure shows.

The image is decoded small (JPEG draft mode lets libjpeg scale by 1/2..1/8 while it
decodes), squeezed to a fixed square, and described by blocks, each L2-normalised and
weighted, the whole vector L2-normalised:

- layout: a grey 8x8 and a colour 4x4 thumbnail (dark or white background, where ink is);
- tone: brightness and saturation histograms, a hue histogram of the coloured pixels;
- palette: fractions of near-white, near-black and grey pixels, how many distinct colours
  the image holds and how much of it its four commonest colours cover (plots and diagrams:
  few flat colours; photographs and micrographs: thousands);
- edges: gradient magnitude histogram, orientation histogram of the strong edges (plots,
  diagrams, heatmaps and gels draw axis-aligned strokes), the share of flat pixels, and fine
  texture (noise of micrographs, film grain of scans), at two scales.

Changing any of it changes the vectors: bump MODEL_ID with it.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from transforms.images.bounds import MAX_PIXELS, check_pixels

MODEL_ID = "pixels-v1"
SIDE = 64  # the square colour is measured on
FINE = 128  # the square edges and strokes are measured on (thin lines survive)
_DRAFT = (FINE, FINE)  # decode at least this large (draft mode keeps >= this)

# Block weights (squared, they are each block's share of the vector's energy).
WEIGHTS = {
    "gray_thumb": 0.8,
    "color_thumb": 0.3,
    "brightness": 0.7,
    "saturation": 0.4,
    "hue": 1.0,
    "palette": 1.5,
    "magnitude": 0.9,
    "orientation": 1.3,
    "strokes": 1.5,
    "texture": 0.4,
    "coarse_edges": 1.4,
}


def decode(
    data: bytes, draft: tuple[int, int] = _DRAFT, max_pixels: int = MAX_PIXELS
) -> Image.Image:
    """The image as RGB, decoded no larger than needed (JPEG: scaled while decoding).

    Raises ImageTooLarge (transforms.images.bounds) for more than `max_pixels`, from the
    header, before decoding; PIL's UnidentifiedImageError, OSError for truncated data,
    ValueError for no bytes, on anything that is not a whole image."""
    if not data:
        raise ValueError("no image bytes")
    image = Image.open(io.BytesIO(data))
    check_pixels(image, max_pixels)
    if image.format == "JPEG":
        image.draft("RGB", draft)
    image.load()  # a truncated file fails here, not later
    if image.mode != "RGB":
        image = image.convert("RGBA").convert("RGB") if "A" in image.mode else image.convert("RGB")
    return image


def _unit(block: np.ndarray) -> np.ndarray:
    norm = float(np.sqrt(np.dot(block, block)))
    return block / norm if norm > 0 else block


def _binned(index: np.ndarray, bins: int, weights=None, size: int | None = None) -> np.ndarray:
    """Histogram of precomputed bin indices, as a fraction of `size` (default: all)."""
    weights = None if weights is None else weights.ravel()
    counts = np.bincount(index.ravel(), weights=weights, minlength=bins)
    return counts[:bins] / float(size or index.size)


def _uniform(values: np.ndarray, bins: int) -> np.ndarray:
    """Bin index of values in [0, 1] over `bins` equal bins."""
    return np.minimum((values * bins).astype(np.int64), bins - 1)


_MAGNITUDE_EDGES = np.array([0.005, 0.02, 0.05, 0.1, 0.2, 0.4], np.float32)  # 7 bins


def _magnitude_hist(magnitude: np.ndarray) -> np.ndarray:
    return _binned(np.searchsorted(_MAGNITUDE_EDGES, magnitude, side="right"), 7)


def _thumb(array: np.ndarray, side: int) -> np.ndarray:
    """Area-averaged side x side thumbnail of an (n, n, ...) array, n divisible by side."""
    n = array.shape[0] // side
    shape = (side, n, side, n) + array.shape[2:]
    return array.reshape(shape).mean(axis=(1, 3))


def _edges(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Central-difference gradients: magnitude, and the x and y components."""
    gx = np.zeros_like(gray)
    gy = np.zeros_like(gray)
    gx[:, 1:-1] = (gray[:, 2:] - gray[:, :-2]) * 0.5
    gy[1:-1, :] = (gray[2:, :] - gray[:-2, :]) * 0.5
    return np.sqrt(gx * gx + gy * gy), gx, gy


def _orientation(magnitude, gx, gy, bins: int = 8) -> np.ndarray:
    """Strong edges' direction, folded to [0, pi), bins centred on 0 and 90 degrees."""
    strong = magnitude > 0.08
    if not strong.any():
        return np.zeros(bins)
    folded = np.mod(np.arctan2(gy[strong], gx[strong]), np.pi)
    index = np.floor((folded + np.pi / (2 * bins)) / (np.pi / bins)).astype(np.int64) % bins
    counts = np.bincount(index, weights=magnitude[strong], minlength=bins)
    return counts / counts.sum()


def _strokes(gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """Long straight strokes (plot axes, table rules, gel lanes): the three rows and three
    columns where most pixels sit on a horizontal (vertical) edge."""
    horizontal = np.sort((np.abs(gy) > 0.1).mean(axis=1))[-3:]
    vertical = np.sort((np.abs(gx) > 0.1).mean(axis=0))[-3:]
    return np.concatenate([horizontal[::-1], vertical[::-1]])


def describe_array(rgb: np.ndarray, fine: np.ndarray) -> np.ndarray:
    """The descriptor of an RGB image given as a (SIDE, SIDE, 3) uint8 array and its grey
    levels as a (FINE, FINE) uint8 array."""
    pixels = rgb.astype(np.float32) * np.float32(1 / 255.0)
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    gray = 0.299 * r + 0.587 * g + 0.114 * b
    # Per-channel ufuncs: a reduction over a last axis of 3 is several times slower.
    high, low = np.maximum(np.maximum(r, g), b), np.minimum(np.minimum(r, g), b)
    chroma = high - low
    saturation = chroma / np.maximum(high, 1e-6)

    # Hue in [0, 1) from the RGB hexagon; only pixels with some colour vote, by chroma.
    safe = np.maximum(chroma, 1e-6)
    hue = np.where(
        high == r,
        np.mod((g - b) / safe, 6),
        np.where(high == g, (b - r) / safe + 2, (r - g) / safe + 4),
    ) * (1 / 6.0)
    coloured = chroma > 0.12
    hue_hist = _binned(_uniform(hue[coloured], 12), 12, chroma[coloured], gray.size)

    quantised = (rgb[..., 0].astype(np.int64) >> 4) << 8
    quantised |= (rgb[..., 1].astype(np.int64) >> 4) << 4
    quantised |= rgb[..., 2].astype(np.int64) >> 4
    colours = np.bincount(quantised.ravel(), minlength=4096)
    top = -np.partition(-colours, 4)[:4]
    palette = np.array(
        [
            np.mean(low >= 0.92),  # near-white background
            np.mean(high <= 0.1),  # near-black background
            np.mean(chroma <= 0.06),  # grey pixels
            np.log1p(np.count_nonzero(colours)) / np.log1p(4096),
            top.sum() / gray.size,
            top.max() / gray.size,
        ]
    )

    detail = fine.astype(np.float32) * np.float32(1 / 255.0)
    magnitude, gx, gy = _edges(detail)
    small = _thumb(detail, FINE // 2)
    coarse_magnitude, coarse_gx, coarse_gy = _edges(small)
    # Fine texture: what a 2x2 average removes (sensor noise, grain, speckle).
    residual = np.abs(detail - np.repeat(np.repeat(small, 2, axis=0), 2, axis=1))
    flat = magnitude < 0.02
    busy = ~flat
    texture = np.array(
        [
            np.mean(flat),
            np.mean(magnitude < 0.005),
            np.mean(residual[busy]) * 4 if busy.any() else 0.0,
            np.mean(residual) * 8,
            np.std(detail),
            np.mean((magnitude > 0.005) & (magnitude < 0.05)),
        ]
    )
    blocks = {
        "gray_thumb": _thumb(gray, 8).ravel(),
        "color_thumb": _thumb(pixels, 4).ravel(),
        "brightness": _binned(_uniform(gray, 8), 8),
        "saturation": _binned(_uniform(saturation, 8), 8),
        "hue": hue_hist,
        "palette": palette,
        "magnitude": _magnitude_hist(magnitude),
        "orientation": _orientation(magnitude, gx, gy),
        "strokes": _strokes(gx, gy),
        "texture": texture,
        "coarse_edges": np.concatenate(
            [
                _magnitude_hist(coarse_magnitude),
                _orientation(coarse_magnitude, coarse_gx, coarse_gy),
            ]
        ),
    }
    vector = np.concatenate(
        [WEIGHTS[name] * _unit(np.asarray(block, np.float64)) for name, block in blocks.items()]
    )
    return _unit(vector).astype(np.float32)


DIM = 64 + 48 + 8 + 8 + 12 + 6 + 7 + 8 + 6 + 6 + 15


def describe_image(image: Image.Image) -> np.ndarray:
    image = image.convert("RGB")
    square = image.resize((SIDE, SIDE), Image.Resampling.BILINEAR, reducing_gap=2.0)
    fine = image.convert("L").resize((FINE, FINE), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return describe_array(np.asarray(square, dtype=np.uint8), np.asarray(fine, dtype=np.uint8))


def describe(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """The pixels-v1 vector (DIM float32, unit norm) of encoded image bytes."""
    return describe_image(decode(data, max_pixels=max_pixels))
