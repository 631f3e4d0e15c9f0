"""Figure rows made safe for every reader, and their shard JSON: pure, Beam-free.

A key must survive webdataset (which splits names at the first dot and at slashes), a
caption must be text every reader decodes, and an empty caption is not a training sample.
What can be fixed is fixed and said in the JSON (`fixes`); what cannot is refused with a
reason.
"""

from __future__ import annotations

import json
import re

from transforms.errors import Rejected
from transforms.jats import safe_key_part

SCHEMA_VERSION = 1
DEFAULT_MAX_CAPTION_CHARS = 20_000
# Columns that hold the sample's payloads rather than its metadata.
PAYLOAD_COLUMNS = ("image",)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class SampleRejected(Rejected):
    """A row no reader could take, even fixed."""


def _as_text(value) -> tuple[str, bool]:
    if value is None:
        return "", False
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8"), False
        except UnicodeDecodeError:
            return value.decode("utf-8", errors="replace"), True
    return str(value), False


_ELLIPSIS = " …"


def _truncate(text: str, limit: int) -> str:
    """At most `limit` characters, the ellipsis included."""
    room = max(limit - len(_ELLIPSIS), 0)
    cut = text[:room]
    space = cut.rfind(" ")
    return (cut[:space] if space > room * 0.8 else cut).rstrip() + _ELLIPSIS


def check_fields(
    key_value,
    caption_value,
    image_head: bytes | None,
    max_caption_chars: int = DEFAULT_MAX_CAPTION_CHARS,
) -> tuple[str, str, list[str]]:
    """(safe key, clean caption, fixes made) of a sample; SampleRejected if none can be made.

    `image_head` is the first bytes of the image (None or b"" where there is no image), so
    that callers holding images in Arrow never copy them to check them.
    """
    fixes: list[str] = []
    key, _ = _as_text(key_value)
    if not re.search(r"[A-Za-z0-9]", key):
        raise SampleRejected("key_invalid", f"key {key!r} has no usable characters")
    safe = safe_key_part(key)
    if safe != key:
        fixes.append(f"key_rewritten_from:{key}")
    if not image_head:
        raise SampleRejected("image_missing", "the row holds no image bytes")
    if bytes(image_head[:3]) != b"\xff\xd8\xff":
        raise SampleRejected("image_not_jpeg", "image bytes do not start with a JPEG marker")
    caption, replaced = _as_text(caption_value)
    if replaced:
        fixes.append("caption_invalid_utf8_replaced")
    cleaned = _CONTROL.sub(" ", caption)
    if cleaned != caption:
        fixes.append("caption_control_characters_removed")
    cleaned = cleaned.strip()
    if not cleaned:
        raise SampleRejected("caption_empty", "no caption text")
    if len(cleaned) > max_caption_chars:
        cleaned = _truncate(cleaned, max_caption_chars)
        fixes.append(f"caption_truncated_from_chars:{len(caption)}")
    return safe, cleaned, fixes


def sanitize(row: dict, max_caption_chars: int = DEFAULT_MAX_CAPTION_CHARS) -> dict:
    """A copy of a figure row that every reader can take; SampleRejected if none can be made."""
    image = row.get("image")
    key, caption, fixes = check_fields(
        row.get("key"), row.get("caption"), bytes(image[:3]) if image else None, max_caption_chars
    )
    out = dict(row)
    out["key"] = key
    out["caption"] = caption
    out["fixes"] = [*(row.get("fixes") or []), *fixes]
    return out


def _plain(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


def sample_json(row: dict) -> bytes:
    """The `.json` of a sample: BIOMEDICA's field names with ours beside them, no payloads."""
    fields = {k: _plain(v) for k, v in row.items() if k not in PAYLOAD_COLUMNS}
    fields["txt"] = row["caption"]
    return json.dumps(fields, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
