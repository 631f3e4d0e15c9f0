"""What one request may ask of the service, and the checks that hold it to that. Beam-free.

Every bound is checked before the work it bounds: `k`, the query and the filter before any
search, an upload's size before its body is read whole (BodyLimit, an ASGI middleware that
refuses a body by its Content-Length or, without one, as soon as the bytes received pass the
bound), and an image's pixels from its header before any pixel is decoded (a decompression
bomb is a few kilobytes claiming gigapixels).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

from server.errors import ApiError, body
from transforms.images.checks import MAX_PIXELS

# Multipart framing around the uploaded file (boundaries, part headers, the other fields):
# the body may exceed max_upload_bytes by this much before the file itself is measured.
MULTIPART_SLACK = 64 * 1024


@dataclass(frozen=True)
class Limits:
    max_k: int = 100
    max_query_chars: int = 512
    max_where_chars: int = 2000
    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = MAX_PIXELS  # Pillow's own bomb bound, checked from the header
    max_subset_samples: int = 100_000
    # Keyword search under a `where`: FTS hits walked (best first) looking for k that pass
    # the filter. A filter that admits almost nothing can then return fewer than k.
    max_keyword_scan: int = 20_000
    # Keyword matches scored (bm25) per query: a word most captions hold would otherwise
    # cost a scoring pass over the whole dataset. A query matching more is ranked among the
    # first this many matches in id order.
    max_keyword_matches: int = 100_000
    max_query_terms: int = 32  # words of a query the keyword index is asked for
    # Queries embedded at once (uploads decoded, texts encoded). An upload within max_pixels
    # still decodes to up to ~0.9 GB (a 10 kB PNG can claim 9000x9000 pixels) and seconds of
    # CPU: unbounded, the server's threads would decode dozens at once and run out of
    # memory. Requests beyond it wait their turn, at most embed_wait_seconds, then 503.
    max_concurrent_embeds: int = 2
    embed_wait_seconds: float = 30.0


def check_k(k: int, limits: Limits) -> int:
    if not 1 <= k <= limits.max_k:
        raise ApiError(400, "k_out_of_range", f"k must be between 1 and {limits.max_k}, not {k}")
    return k


def check_query(q: str | None, limits: Limits) -> str:
    q = (q or "").strip()
    if len(q) > limits.max_query_chars:
        raise ApiError(
            400,
            "query_too_long",
            f"the query has {len(q)} characters; at most {limits.max_query_chars}",
        )
    return q


def check_where(where: str | None, limits: Limits) -> str | None:
    where = (where or "").strip() or None
    if where is not None and len(where) > limits.max_where_chars:
        raise ApiError(
            400,
            "invalid_where",
            f"the filter has {len(where)} characters; at most {limits.max_where_chars}",
        )
    return where


def check_upload(data: bytes, limits: Limits) -> bytes:
    if len(data) > limits.max_upload_bytes:
        raise ApiError(413, "upload_too_large", _too_large(len(data), limits.max_upload_bytes))
    if not data:
        raise ApiError(400, "image_undecodable", "the uploaded file is empty")
    return data


def check_image_header(data: bytes, limits: Limits) -> tuple[int, int]:
    """(width, height) from the image's header; nothing is decoded. image_too_large for more
    than max_pixels, image_undecodable for anything Pillow does not recognise."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Image.DecompressionBombError as err:  # Pillow's own header check, at 2x its bound
        raise ApiError(400, "image_too_large", f"the image is too large: {err}") from None
    except Exception as err:
        raise ApiError(
            400, "image_undecodable", f"not an image Pillow reads ({type(err).__name__})"
        ) from None
    if width * height > limits.max_pixels:
        raise ApiError(
            400,
            "image_too_large",
            f"the image is {width}x{height} pixels; at most {limits.max_pixels} pixels",
        )
    return width, height


def _too_large(size: int, limit: int) -> str:
    return f"the upload is {size} bytes; at most {limit} bytes ({limit // (1024 * 1024)} MiB)"


class BodyLimit:
    """ASGI middleware: a request body larger than `limit` bytes is refused (413
    upload_too_large) before it is read whole. The service's only body is an upload."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or ()).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await _send_json(send, 413, "upload_too_large", _too_large(int(length), self.limit))
            return
        received = 0

        async def bounded():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # Raised inside the route's form parsing: the ApiError handler answers.
                    raise ApiError(413, "upload_too_large", _too_large(received, self.limit))
            return message

        await self.app(scope, bounded, send)


async def _send_json(send, status: int, code: str, message: str) -> None:
    payload = json.dumps(body(status, code, message)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
