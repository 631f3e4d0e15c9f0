"""HTTP byte ranges (RFC 7233), one range a request: parsed against a resource's size. Pure.

    bytes=0-99     the first 100 bytes      bytes=100-   from byte 100 to the end
    bytes=-100     the last 100 bytes       bytes=5-2    not a range: ignored (200, whole)

A header in another unit, with several ranges, or malformed is ignored, as RFC 7233 lets a
server do: the whole resource is sent. A range that starts at or past the end (or a suffix of
zero bytes) cannot be satisfied: 416.
"""

from __future__ import annotations

import re

_ONE = re.compile(r"bytes=\s*(\d*)\s*-\s*(\d*)\s*")


class Unsatisfiable(ValueError):
    pass


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first byte, bytes) the header asks for, None for the whole resource; Unsatisfiable."""
    if not header:
        return None
    match = _ONE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first:
        if not last:
            return None
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise Unsatisfiable(f"bytes=-{suffix}")
        start = max(0, size - suffix)
        return start, size - start
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        raise Unsatisfiable(f"bytes={start}-")
    end = min(end, size - 1)
    return start, end - start + 1


def content_range(start: int, length: int, size: int) -> str:
    return f"bytes {start}-{start + length - 1}/{size}"
