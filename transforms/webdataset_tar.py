"""WebDataset tar shards, byte for byte reproducible: pure, Beam-free.

A sample is `<key>.jpg`, `<key>.json`, `<key>.txt`, consecutive in the tar (what webdataset
groups on). Every member has the same metadata (mtime 0, uid/gid 0, no user names, mode
0644), so the same samples in the same order give the same bytes on any machine.
"""

from __future__ import annotations

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


def sample_members(key: str, jpg: bytes, json_bytes: bytes, txt: bytes) -> bytes:
    """One sample's three tar members (headers, data, padding), as tarfile writes them.

    Pieces of a shard built apart (by different workers) concatenate into the shard.
    """
    parts = []
    for ext, data in zip(EXTENSIONS, (jpg, json_bytes, txt), strict=True):
        parts.append(
            _info(f"{key}.{ext}", len(data)).tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        )
        parts.append(data)
        remainder = len(data) % tarfile.BLOCKSIZE
        if remainder:
            parts.append(b"\0" * (tarfile.BLOCKSIZE - remainder))
    return b"".join(parts)


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


def read_shard(stream) -> dict[str, dict[str, bytes]]:
    """{key: {ext: bytes}} of a shard, read forward only (works on any stream)."""
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, _, ext = member.name.partition(".")
            handle = tar.extractfile(member)
            samples.setdefault(key, {})[ext] = handle.read() if handle else b""
    return samples


def read_images(stream, keys: set[str]) -> dict[str, bytes]:
    """{key: jpg bytes} for the wanted keys of a shard, read forward only."""
    found: dict[str, bytes] = {}
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            key, _, ext = member.name.partition(".")
            if ext == "jpg" and key in keys and member.isfile():
                handle = tar.extractfile(member)
                found[key] = handle.read() if handle else b""
    return found
