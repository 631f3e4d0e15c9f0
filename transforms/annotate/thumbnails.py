"""The gallery's thumbnails: where each lies under gallery/ and how it is made. Pure, Beam-free.

annotate writes them beside gallery/index.html, which refers to them by the same rule, so the
page opens from disk or any web server with no server-side code.
"""

from __future__ import annotations

import io
import re

from PIL import Image

from transforms.images.bounds import MAX_PIXELS, check_pixels

THUMBNAIL_SIDE = 160
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def thumbnail_path(key: str) -> str:
    """The thumbnail of sample `key`, relative to gallery/: a name safe on every file system
    and in a URL (keys are already safe; this guards the rest)."""
    return f"thumbs/{_UNSAFE.sub('_', key)}.jpg"


def make_thumbnail(image: bytes, side: int = THUMBNAIL_SIDE, max_pixels: int = MAX_PIXELS) -> bytes:
    """A JPEG whose longer side is at most `side` pixels. JPEG draft mode decodes at a
    fraction of the size, so a 5,000-pixel figure costs little more than a small one.

    An image of more than `max_pixels` raises ImageTooLarge (transforms.images.bounds: a
    ValueError, `.reason` "image_too_large", message "WxH > N pixels") from its header,
    before decoding: a PNG has no draft mode, it would be decoded whole."""
    with Image.open(io.BytesIO(image)) as source:
        check_pixels(source, max_pixels)
        source.draft("RGB", (side, side))
        small = source.convert("RGB")
        small.thumbnail((side, side), Image.Resampling.BILINEAR)
        out = io.BytesIO()
        small.save(out, "JPEG", quality=80)
        return out.getvalue()
