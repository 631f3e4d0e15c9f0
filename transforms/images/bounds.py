"""How large an image may be to decode: its header's width x height against a bound, checked
before any pixel is read. Pure, Beam-free.

extract refuses such images (`--max_pixels`, transforms.images.checks); the stages that decode
figures again (embed, annotate's thumbnails) use the same bound, since a figure file need
not come from an extract run with the default.
"""

from __future__ import annotations

from PIL import Image

from transforms.images.checks import MAX_PIXELS

IMAGE_TOO_LARGE = "image_too_large"

__all__ = ["IMAGE_TOO_LARGE", "MAX_PIXELS", "ImageTooLarge", "check_pixels"]


class ImageTooLarge(ValueError):
    """An image whose header says more pixels than the bound (its dead-letter reason is
    IMAGE_TOO_LARGE; the message holds the size)."""

    reason = IMAGE_TOO_LARGE


def check_pixels(image: Image.Image, max_pixels: int = MAX_PIXELS) -> None:
    """ImageTooLarge for an opened (not yet loaded) image of more than `max_pixels`."""
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLarge(f"{width}x{height} > {max_pixels} pixels")
