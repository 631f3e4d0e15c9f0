"""WebDataset tar shards, byte for byte reproducible: pure, Beam-free.

A sample is `<key>.jpg`, `<key>.json`, `<key>.txt`, consecutive in the tar (what webdataset
groups on). Every member has the same metadata (mtime 0, uid/gid 0, no user names, mode
0644), so the same samples in the same order give the same bytes on any machine.
"""

from __future__ import annotations

import io
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


def build_shard(samples: list[tuple[str, bytes, bytes, bytes]]) -> tuple[bytes, list[MemberSpan]]:
    """A tar of (key, jpg, json, txt) samples, in the given order, and where each one lies."""
    buffer = io.BytesIO()
    spans = []
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for key, jpg, json_bytes, txt in samples:
            start = buffer.tell()
            for ext, data in zip(EXTENSIONS, (jpg, json_bytes, txt), strict=True):
                tar.addfile(_info(f"{key}.{ext}", len(data)), io.BytesIO(data))
            spans.append(MemberSpan(key, start, buffer.tell() - start))
    return buffer.getvalue(), spans


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
