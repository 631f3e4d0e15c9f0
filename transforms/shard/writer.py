"""A shard's files, written once: the tar streamed aside as its samples come, hashed on the
way, then its Parquet index. Pure, Beam-free.

A shard may be written by one worker whole, or in pieces by several (each piece a run of
consecutive samples, tar members without the closing blocks) that are then joined: tar
members concatenate, so a shard is its pieces one after the other, then closed.
"""

from __future__ import annotations

import hashlib
import io

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from transforms import storage
from transforms.records import SHARD_INDEX_SCHEMA, ShardRecord
from transforms.shard.webdataset_tar import end_of_archive


def shard_paths(group: str, index: int) -> tuple[str, str]:
    """(tar, Parquet) paths of a shard, relative to the dataset root."""
    name = f"{index:06d}"
    return f"webdataset/{group}/{name}.tar", f"parquet/{group}/{name}.parquet"


class TarStream:
    """Consecutive samples of one shard (or of one piece of it) going into a file.

    Each sample's tar members go to the file as they are added, never held; its index row
    (every field but the image) is kept by reference to the table it came from.
    """

    def __init__(self, uri: str, first_rank: int = 0, hashed: bool = True, held: bool = False):
        """`held`: keep the members in memory and write only at close, if they differ from
        the file in place (a resumed run, where most shards are already there, identical)."""
        self.uri = uri
        self.held: list | None = [] if held else None
        self.file = None if held else storage.AtomicWriter(uri)
        self.digest = hashlib.sha256() if hashed or held else None
        self.first_rank = first_rank
        self.size = 0
        self.pieces = 0
        self._tables: list[pa.Table] = []
        self._meta, self._rows = None, []
        self._offsets: list[int] = []
        self._sizes: list[int] = []

    @classmethod
    def for_shard(cls, output: str, group: str, number: int) -> TarStream:
        """A whole shard's tar; held in memory where a file is in place (a resumed run)."""
        uri = storage.join(output, shard_paths(group, number)[0])
        return cls(uri, held=storage.exists(uri))

    def _write(self, chunk) -> None:
        if self.held is not None:
            self.held.append(chunk)
        else:
            self.file.write(chunk)
        if self.digest is not None:
            self.digest.update(chunk)
        self.size += len(chunk)

    def add(self, meta: pa.Table, row: int, parts: list) -> None:
        """One sample: its members as parts (webdataset_tar.sample_parts), its index row
        `meta[row]`."""
        if meta is not self._meta:
            self._take()
            self._meta = meta
        self._rows.append(row)
        self._offsets.append(self.size)
        for part in parts:
            self._write(part)
        self._sizes.append(self.size - self._offsets[-1])

    def add_piece(self, members: bytes, index: pa.Table) -> None:
        """A piece written apart: its members, and its index with in-piece tar offsets."""
        self._take()
        offsets = pc.add(index.column("tar_offset"), self.size)
        self._tables.append(
            index.set_column(index.schema.get_field_index("tar_offset"), "tar_offset", offsets)
        )
        self._write(members)
        self.pieces += 1

    def _take(self) -> None:
        if not self._rows:
            return
        rows = self._meta.take(pa.array(self._rows, pa.int64()))
        count = len(self._rows)
        rows = rows.append_column("tar_offset", pa.array(self._offsets[-count:], pa.int64()))
        rows = rows.append_column("tar_size", pa.array(self._sizes[-count:], pa.int64()))
        self._tables.append(rows)
        self._rows = []

    def index(self) -> pa.Table:
        self._take()
        return pa.concat_tables(self._tables)

    def close_piece(self) -> pa.Table:
        """Finish the file as a piece (no closing blocks; never `held`); its index rows."""
        self.file.commit()
        return self.index()

    def abort(self) -> None:
        if self.file is not None:
            self.file.abort()
        self.held = None

    def close_shard(self, output: str, group: str, number: int) -> ShardRecord:
        """Close the tar, keep it (or, where an identical one is in place, keep that one: a
        resumed run) and write the shard's Parquet index."""
        self._write(end_of_archive(self.size))
        tar_path, parquet_path = shard_paths(group, number)
        digest = self.digest.hexdigest()
        rewritten = storage.sha256_of(self.uri) != digest  # None where there is none yet
        if self.held is not None:
            if rewritten:
                storage.atomic_write(self.uri, self.held)
            self.held = None
        elif rewritten:
            self.file.commit()
        else:
            self.file.abort()
        index = self.index()
        index = index.append_column(
            "shard", pa.array([tar_path.removeprefix("webdataset/")] * index.num_rows)
        )
        index = index.append_column("sample_offset", pa.array(range(index.num_rows), pa.int64()))
        index = index.select(SHARD_INDEX_SCHEMA.names).cast(SHARD_INDEX_SCHEMA)
        sink = io.BytesIO()
        pq.write_table(index, sink, compression="zstd")
        parquet_sha256 = hashlib.sha256(sink.getvalue()).hexdigest()
        parquet_uri = storage.join(output, parquet_path)
        if storage.sha256_of(parquet_uri) != parquet_sha256:  # None where there is none yet
            storage.atomic_write(parquet_uri, [sink.getvalue()])
            rewritten = True
        return ShardRecord(
            group=group,
            index=number,
            path=tar_path,
            samples=index.num_rows,
            bytes=self.size,
            sha256=digest,
            parquet_path=parquet_path,
            parquet_sha256=parquet_sha256,
            rewritten=rewritten,
            pieces=max(self.pieces, 1),
        )
