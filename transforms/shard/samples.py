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
from transforms.jats.parse import safe_key_part

SCHEMA_VERSION = 1
DEFAULT_MAX_CAPTION_CHARS = 20_000
# Columns that hold the sample's payloads rather than its metadata.
PAYLOAD_COLUMNS = ("image",)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class SampleRejected(Rejected):
    """A row no reader could take, even fixed."""


def as_text(value) -> tuple[str, bool]:
    """(text, whether invalid UTF-8 was replaced) of a str, bytes or None value."""
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


def check_text(
    key_value, caption_value, max_caption_chars: int = DEFAULT_MAX_CAPTION_CHARS
) -> tuple[str, str, list[str]]:
    """(safe key, clean caption, fixes made) of a sample; SampleRejected if none can be made."""
    fixes: list[str] = []
    key, _ = as_text(key_value)
    if not re.search(r"[A-Za-z0-9]", key):
        raise SampleRejected("key_invalid", f"key {key!r} has no usable characters")
    safe = safe_key_part(key)
    if safe != key:
        fixes.append(f"key_rewritten_from:{key}")
    caption, replaced = as_text(caption_value)
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


def check_image_head(image_head: bytes | None) -> None:
    """SampleRejected unless `image_head` (the first bytes of the image, None or b"" where
    there is none) starts a JPEG; callers holding images in Arrow pass a slice, never a copy."""
    if not image_head:
        raise SampleRejected("image_missing", "the row holds no image bytes")
    if bytes(image_head[:3]) != b"\xff\xd8\xff":
        raise SampleRejected("image_not_jpeg", "image bytes do not start with a JPEG marker")


def check_fields(
    key_value,
    caption_value,
    image_head: bytes | None,
    max_caption_chars: int = DEFAULT_MAX_CAPTION_CHARS,
) -> tuple[str, str, list[str]]:
    """check_text and check_image_head of one sample (the image checked after the key)."""
    key, _ = as_text(key_value)
    if re.search(r"[A-Za-z0-9]", key):
        check_image_head(image_head)
    return check_text(key_value, caption_value, max_caption_chars)


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
    return _dumps(fields)


_ARTICLE = "article_"


def sample_jsons(columns: dict[str, list]) -> list[bytes]:
    """sample_json of every row of a batch given column by column, byte for byte the same."""
    return [b"".join(parts) for parts in sample_json_parts(columns)]


def sample_json_parts(columns: dict[str, list]) -> list[tuple[bytes, ...]]:
    """sample_jsons, each as parts that concatenate to it; rows of one article share the
    same first part (not a copy of it: an article's text can be megabytes).

    A figure row repeats its article's fields (the full text among them), and consecutive
    rows mostly share an article: the article's part of the JSON is serialized once per run
    of rows that share it, not once per row. Sorted keys put every `article_` field before
    the others, so that part is a prefix of the object.
    """
    names = sorted(n for n in columns if n not in PAYLOAD_COLUMNS)
    article = [n for n in names if n.startswith(_ARTICLE)]
    rest = [n for n in names if not n.startswith(_ARTICLE)]
    if not article or any(n < _ARTICLE for n in rest) or "txt" in columns:
        rows = zip(*(columns[n] for n in names), strict=True)
        return [(sample_json(dict(zip(names, values, strict=True))),) for values in rows]
    article_values = [_plain_column(columns[n]) for n in article]
    rest_values = [_plain_column(columns[n]) for n in rest]
    captions = columns["caption"]
    out, previous, prefix = [], None, b"{"
    for i in range(len(captions)):
        values = tuple(column[i] for column in article_values)
        if values != previous:
            previous = values
            block = _dumps(dict(zip(article, values, strict=True)))
            prefix = block[:-1] + b","  # '{"article_...":...,' : the rest follows
        fields = {name: column[i] for name, column in zip(rest, rest_values, strict=True)}
        fields["txt"] = captions[i]
        out.append((prefix, _dumps(fields)[1:]))
    return out


def _plain_column(values: list) -> list:
    # Most columns hold no bytes at all: look once (at C speed) before converting.
    return [_plain(v) for v in values] if bytes in set(map(type, values)) else values


def _dumps(fields: dict) -> bytes:
    return json.dumps(fields, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
