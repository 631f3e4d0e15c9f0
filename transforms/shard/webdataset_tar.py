"""WebDataset tar shards, byte for byte reproducible: pure, Beam-free.

A sample is `<key>.jpg`, `<key>.json`, `<key>.txt`, consecutive in the tar (what webdataset
groups on). Every member has the same metadata (mtime 0, uid/gid 0, no user names, mode
0644), so the same samples in the same order give the same bytes on any machine.
"""

from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass

EXTENSIONS = ("jpg", "json", "txt")


@dataclass(frozen=True)
class MemberSpan:
    key: str
    offset: int  # byte offset of the sample's first member header in the tar
    size: int  # bytes from that header to the end of the sample's last member


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def _header(name: str, size: int) -> bytes:
    """A member header, byte for byte what tarfile writes for our fixed metadata.

    Built from a template (tarfile takes ~30 us a header, a third of a shard's CPU); names
    tarfile would give a pax header (long or non-ASCII) go through tarfile itself.
    """
    encoded = name.encode("ascii", "strict") if name.isascii() else b""
    if not encoded or len(encoded) > 100 or size >= 8**11:
        return _info(name, size).tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    block = bytearray(_TEMPLATE)
    block[0 : len(encoded)] = encoded
    block[124:136] = b"%011o\0" % size
    block[148:156] = b"%06o\0 " % (sum(block[:148]) + 8 * 32 + sum(block[156:]))
    return bytes(block)


# A header of our metadata with an empty name; _header fills in name, size and checksum.
_TEMPLATE = b"\0" * 100 + _info("x", 0).tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")[100:]
_PADDING = [b"\0" * ((tarfile.BLOCKSIZE - r) % tarfile.BLOCKSIZE) for r in range(tarfile.BLOCKSIZE)]


def sample_parts(key: str, jpg: bytes, json_bytes, txt: bytes) -> list[bytes]:
    """One sample's three tar members as byte strings that concatenate to them.

    The image goes as it is (a view into the reader's buffer, copied once: into the file);
    the small rest (headers, JSON, caption, padding) is joined into two strings, so that a
    sample costs three writes and three hash updates, not nine. `json_bytes` may come as a
    tuple of parts (samples.sample_json_parts).
    """
    head = _header(f"{key}.jpg", len(jpg))
    rest = [_PADDING[len(jpg) % tarfile.BLOCKSIZE]]
    for ext, data in (("json", json_bytes), ("txt", txt)):
        parts = data if isinstance(data, tuple) else (data,)
        size = sum(len(part) for part in parts)
        rest += (_header(f"{key}.{ext}", size), *parts, _PADDING[size % tarfile.BLOCKSIZE])
    return [head, jpg, b"".join(rest)]


def sample_members(key: str, jpg: bytes, json_bytes: bytes, txt: bytes) -> bytes:
    """One sample's three tar members (headers, data, padding), as tarfile writes them."""
    return b"".join(sample_parts(key, jpg, json_bytes, txt))


def end_of_archive(size: int) -> bytes:
    """What closes a tar of `size` bytes: two zero blocks, then padding to a whole record."""
    closing = size + 2 * tarfile.BLOCKSIZE
    remainder = closing % tarfile.RECORDSIZE
    return b"\0" * (2 * tarfile.BLOCKSIZE + (tarfile.RECORDSIZE - remainder if remainder else 0))


def build_shard(samples: list[tuple[str, bytes, bytes, bytes]]) -> tuple[bytes, list[MemberSpan]]:
    """A tar of (key, jpg, json, txt) samples, in the given order, and where each one lies."""
    parts, spans, size = [], [], 0
    for key, jpg, json_bytes, txt in samples:
        members = sample_members(key, jpg, json_bytes, txt)
        spans.append(MemberSpan(key, size, len(members)))
        parts.append(members)
        size += len(members)
    parts.append(end_of_archive(size))
    return b"".join(parts), spans


def read_images(stream, keys: set[str]) -> tuple[dict[str, bytes], dict[str, str]]:
    """({key: jpg bytes}, {key: article text of its JSON}) for the wanted keys of a shard,
    read forward only. Samples of one article share one copy of its text."""
    found: dict[str, bytes] = {}
    texts: dict[str, str] = {}
    distinct: dict[str, str] = {}
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            key, _, ext = member.name.partition(".")
            if ext not in ("jpg", "json") or key not in keys or not member.isfile():
                continue
            handle = tar.extractfile(member)
            data = handle.read() if handle else b""
            if ext == "jpg":
                found[key] = data
                continue
            try:
                text = json.loads(data).get("article_text") or ""
            except (ValueError, AttributeError):
                text = ""  # a JSON no reader could take: the sample keeps no text
            texts[key] = distinct.setdefault(text, text) if isinstance(text, str) else ""
    return found, texts
