"""A dataset's files as the server reads them: manifest, byte ranges of shards, filter masks.

Local paths, gs:// and s3:// alike. A shard is found by lookup in the manifest, never by a
path built from request text. A byte range is read with a ranged request (S3 GetObject with
Range, GCS ranged media downloads, a seek on a local file), never by reading the object
whole, and is handed out in chunks so no response holds a shard in memory.

Failures are per request: a shard that is gone is ApiError 404 `shard_missing`, one that is
shorter than the manifest says or cannot be read is 502 `shard_unreadable`; the Parquet
index of a shard likewise (502, naming the shard). Nothing here ends the process.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tarfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator

import numpy as np
import pyarrow.parquet as pq

from server.errors import ApiError
from transforms import storage
from transforms.index.ids import ShardIds, shard_ids, total_samples
from transforms.records import SHARD_INDEX_SCHEMA
from transforms.shard.row_filter import FilterError, compile_where, where_fields
from transforms.storage import S3Config

log = logging.getLogger(__name__)

CHUNK = 1 << 20  # what one read hands to the response: bounds a stream's memory
GCS_PIECE = 8 << 20  # one ranged GCS request (each request costs a round trip)
MASK_CACHE_BYTES = 256 << 20  # filter masks kept (one byte a sample each)
MASK_CACHE_ENTRIES = 64
PLACEMENT_CACHE_SHARDS = 256  # shards whose (tar_offset, tar_size) columns are kept
PARQUET_WHOLE_BELOW = 4 << 20  # a remote index file this small is read in one request


def _missing(err: Exception) -> bool:
    if isinstance(err, FileNotFoundError):
        return True
    code = getattr(err, "response", None)
    if isinstance(code, dict):  # botocore ClientError
        return code.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound")
    return type(err).__name__ == "NotFound"  # google.api_core.exceptions.NotFound


def _chunks(stream, size: int, name: str) -> Iterator[bytes]:
    """`size` bytes of an open stream, at most CHUNK at a time; the stream is closed when
    they are read or the reader stops early. OSError if it ends short."""
    try:
        left = size
        while left:
            data = stream.read(min(CHUNK, left))
            if not data:
                raise OSError(f"{name} ended {left} bytes early")
            left -= len(data)
            yield data
    finally:
        stream.close()


class DatasetFiles:
    """One dataset (the output of `biomedica shard` or `subset`), read-only."""

    def __init__(self, uri: str, s3: S3Config = S3Config()):
        self.uri, self.s3 = uri, s3
        raw = storage.read_bytes(storage.join(uri, "manifest.json"), s3)
        self.manifest = json.loads(raw)
        self.manifest_sha256 = hashlib.sha256(raw).hexdigest()  # what an index records
        self.shards: list[ShardIds] = shard_ids(self.manifest)
        self.samples: int = total_samples(self.manifest)
        self.groups: dict = self.manifest.get("groups", {})
        self._entries: dict[str, dict] = {}
        self._by_name: dict[tuple[str, str], str] = {}
        for ids, entry in zip(self.shards, self.manifest.get("shards", []), strict=True):
            parts = entry["path"].split("/")
            if len(parts) != 3 or parts[0] != "webdataset" or {"", ".", ".."} & set(parts):
                raise ValueError(f"manifest shard path {entry['path']!r} is not webdataset/G/N")
            self._entries[ids.shard] = entry
            self._by_name[(parts[1], parts[2])] = ids.shard
        self._ids = {s.shard: s for s in self.shards}
        self._lock = threading.Lock()
        self._masks: OrderedDict[str, np.ndarray] = OrderedDict()
        self._placements: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._gcs_client = None

    # ---- shards by name ------------------------------------------------------------------

    def shard_of(self, group: str, name: str) -> str:
        """The shard ("<group>/<n>.tar") a request names, by lookup; 404 if it is not one."""
        file_name = name if name.endswith(".tar") else f"{name}.tar"
        shard = self._by_name.get((group, file_name))
        if shard is None:
            raise ApiError(404, "shard_not_found", f"no shard {group}/{file_name} in the dataset")
        return shard

    def shard_uri(self, group: str, name: str) -> str:
        return self._uri(self.shard_of(group, name))

    def entry(self, shard: str) -> dict:
        """The manifest's entry of a shard ("commercial/000000.tar"): bytes, sha256, ..."""
        try:
            return self._entries[shard]
        except KeyError:
            raise ApiError(404, "shard_not_found", f"no shard {shard} in the dataset") from None

    def _uri(self, shard: str) -> str:
        return storage.join(self.uri, self.entry(shard)["path"])

    # ---- byte ranges -----------------------------------------------------------------------

    def check(self, shard: str) -> None:
        """That the shard is there with the manifest's size (404 / 502 if not): one stat/HEAD."""
        self.open_range(shard, 0, 0)

    def read_range(self, shard: str, offset: int, size: int) -> bytes:
        return b"".join(self.open_range(shard, offset, size))

    def open_range(self, shard: str, offset: int, size: int) -> Iterator[bytes]:
        """The bytes [offset, offset + size) of a shard, in chunks of at most CHUNK.

        The object is opened (and its size checked against the manifest) now, so a missing
        or cut shard fails here, before a response starts; a read failing later ends the
        iteration with OSError.
        """
        entry = self.entry(shard)
        total = int(entry["bytes"])
        if offset < 0 or size < 0 or offset + size > total:
            raise ApiError(
                416, "range_not_satisfiable", f"bytes {offset}+{size} outside {shard} ({total})"
            )
        uri = self._uri(shard)
        try:
            if storage.is_s3(uri):
                return self._open_s3(uri, offset, size, total)
            if uri.startswith("gs://"):
                return self._open_gcs(uri, offset, size, total)
            return self._open_local(uri, offset, size, total)
        except ApiError:
            raise
        except Exception as err:
            if _missing(err):
                raise ApiError(404, "shard_missing", f"shard {shard} is missing") from None
            log.warning("shard %s unreadable: %s: %s", shard, type(err).__name__, err)
            raise ApiError(
                502, "shard_unreadable", f"shard {shard} cannot be read ({type(err).__name__})"
            ) from None

    @staticmethod
    def _size_mismatch(shard_uri: str, actual: int, total: int) -> None:
        if actual != total:
            raise OSError(f"{shard_uri} holds {actual} bytes, the manifest says {total}")

    def _open_local(self, path: str, offset: int, size: int, total: int) -> Iterator[bytes]:
        if size == 0:
            self._size_mismatch(path, os.stat(path).st_size, total)
            return iter(())
        handle = open(path, "rb")  # noqa: SIM115 - closed by the generator below
        try:
            self._size_mismatch(path, os.fstat(handle.fileno()).st_size, total)
            handle.seek(offset)
        except BaseException:
            handle.close()
            raise

        return _chunks(handle, size, path)

    def _open_s3(self, uri: str, offset: int, size: int, total: int) -> Iterator[bytes]:
        bucket, key = storage.split_s3(uri)
        client = storage._s3_client(self.s3)
        if size == 0:
            self._size_mismatch(
                uri, client.head_object(Bucket=bucket, Key=key)["ContentLength"], total
            )
            return iter(())
        # One ranged GET streams the whole range: S3 sends only those bytes.
        response = client.get_object(
            Bucket=bucket, Key=key, Range=f"bytes={offset}-{offset + size - 1}"
        )
        body = response["Body"]
        whole = response.get("ContentRange", "").rpartition("/")[2]
        try:
            self._size_mismatch(uri, int(whole) if whole.isdigit() else -1, total)
        except BaseException:
            body.close()
            raise

        return _chunks(body, size, uri)

    def _gcs_blob(self, uri: str):
        if self._gcs_client is None:
            storage._gcs(uri)  # an emulator: settle credentials before Beam looks them up
            from apache_beam.io.gcp import gcsio

            self._gcs_client = gcsio.GcsIO().client
        bucket, _, name = uri[len("gs://") :].partition("/")
        return self._gcs_client.bucket(bucket).blob(name)

    def _open_gcs(self, uri: str, offset: int, size: int, total: int) -> Iterator[bytes]:
        blob = self._gcs_blob(uri)
        blob.reload()  # existence and size: one metadata request
        self._size_mismatch(uri, int(blob.size or 0), total)

        def chunks():
            start, end = offset, offset + size
            while start < end:
                stop = min(end, start + GCS_PIECE)
                # Each piece is one ranged download of exactly its bytes (end is inclusive).
                data = blob.download_as_bytes(
                    start=start, end=stop - 1, checksum=None, raw_download=True
                )
                if len(data) != stop - start:
                    raise OSError(f"{uri} gave {len(data)} bytes for {stop - start}")
                for at in range(0, len(data), CHUNK):
                    yield data[at : at + CHUNK]
                start = stop

        return chunks()

    def sample_members(self, shard: str, offset: int, size: int) -> dict[str, bytes]:
        """{"jpg", "json", "txt"} of the sample whose tar members lie at [offset, +size)."""
        data = self.read_range(shard, offset, size)
        members: dict[str, bytes] = {}
        try:
            with tarfile.open(fileobj=io.BytesIO(data + b"\0" * 1024), mode="r:") as tar:
                for member in tar:
                    handle = tar.extractfile(member) if member.isfile() else None
                    if handle is not None:
                        members[member.name.partition(".")[2]] = handle.read()
        except (tarfile.TarError, OSError) as err:
            raise ApiError(
                502, "shard_unreadable", f"shard {shard}: no sample at {offset}+{size} ({err})"
            ) from None
        if not members:
            raise ApiError(502, "shard_unreadable", f"shard {shard}: no sample at {offset}")
        return members

    # ---- the Parquet index ---------------------------------------------------------------

    def _parquet(self, shard: ShardIds, columns: list[str]):
        """Those columns of a shard's Parquet index (the others are not read)."""
        uri = storage.join(self.uri, shard.parquet_path)
        try:
            source = uri if "://" not in uri else _RangedFile(self, uri)
            parquet = pq.ParquetFile(source)
            present = [c for c in columns if c in parquet.schema_arrow.names]
            table = parquet.read(columns=present)
        except Exception as err:
            log.warning("index of %s unreadable: %s: %s", shard.shard, type(err).__name__, err)
            raise ApiError(
                502, "shard_unreadable", f"the Parquet index of shard {shard.shard} cannot be read"
            ) from None
        if table.num_rows != shard.samples:
            raise ApiError(
                502,
                "shard_unreadable",
                f"the Parquet index of shard {shard.shard} has {table.num_rows} rows, "
                f"the manifest says {shard.samples}",
            )
        return table

    def matching(self, where: str | None) -> np.ndarray:
        """A read-only bool mask over sample ids: which samples the filter selects."""
        text = (where or "").strip()
        with self._lock:
            if text in self._masks:
                self._masks.move_to_end(text)
                return self._masks[text]
        if not text:
            mask = np.ones(self.samples, dtype=bool)
        else:
            try:
                predicate = compile_where(text, SHARD_INDEX_SCHEMA)
                fields = where_fields(text)
            except FilterError as err:
                raise ApiError(400, "invalid_where", str(err)) from None
            mask = np.zeros(self.samples, dtype=bool)
            for shard in self.shards:
                rows = self._parquet(shard, fields).to_pylist()
                if not fields:  # a filter on no field at all: the same answer for every row
                    rows = [{}] * shard.samples
                hits = [i for i, row in enumerate(rows) if predicate(row)]
                mask[shard.base + np.asarray(hits, dtype=np.int64)] = True
        mask.flags.writeable = False
        with self._lock:
            self._masks[text] = mask
            keep = max(1, min(MASK_CACHE_ENTRIES, MASK_CACHE_BYTES // max(1, self.samples)))
            while len(self._masks) > keep:
                self._masks.popitem(last=False)
        return mask

    def placements(self, ids) -> list[tuple[str, int, int]]:
        """(shard, tar_offset, tar_size) of each sample id (ascending ids), from the index."""
        ids = np.asarray(ids, dtype=np.int64)
        out: list[tuple[str, int, int]] = []
        bases = np.asarray([s.base for s in self.shards], dtype=np.int64)
        which = np.searchsorted(bases, ids, side="right") - 1
        for position in np.unique(which):
            shard = self.shards[int(position)]
            offsets, sizes = self._placement(shard)
            rows = ids[which == position] - shard.base
            out += [(shard.shard, int(offsets[r]), int(sizes[r])) for r in rows]
        return out

    def _placement(self, shard: ShardIds) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            if shard.shard in self._placements:
                self._placements.move_to_end(shard.shard)
                return self._placements[shard.shard]
        table = self._parquet(shard, ["tar_offset", "tar_size"])
        if table.num_columns != 2:
            raise ApiError(502, "shard_unreadable", f"the index of {shard.shard} has no offsets")
        found = (
            table.column("tar_offset").to_numpy(zero_copy_only=False).astype(np.int64),
            table.column("tar_size").to_numpy(zero_copy_only=False).astype(np.int64),
        )
        with self._lock:
            self._placements[shard.shard] = found
            while len(self._placements) > PLACEMENT_CACHE_SHARDS:
                self._placements.popitem(last=False)
        return found

    def parquet_locator(self) -> Callable[[str], tuple[str, int, int] | None]:
        """`locate(key)` from the Parquet index, for a server without samples.sqlite.

        A shard whose index cannot be read is left out (logged): its samples are not found,
        the others are."""
        where: dict[str, tuple[str, int, int]] = {}
        for shard in self.shards:
            try:
                table = self._parquet(shard, ["key", "tar_offset", "tar_size"])
            except ApiError:
                continue
            for key, offset, size in zip(
                *(table.column(c).to_pylist() for c in ("key", "tar_offset", "tar_size")),
                strict=True,
            ):
                where[key] = (shard.shard, int(offset), int(size))
        return where.get


class _RangedFile(io.RawIOBase):
    """A remote Parquet file that pyarrow seeks in: each read is one ranged request.

    A small file (most shard indexes) is fetched whole in one request instead: pyarrow reads
    its footer, then the column chunks, and each round trip costs more than the bytes.
    """

    def __init__(self, files: DatasetFiles, uri: str):
        self.files, self.uri, self.pos, self.whole = files, uri, 0, None
        if storage.is_s3(uri):
            bucket, key = storage.split_s3(uri)
            head = storage._s3_client(files.s3).head_object(Bucket=bucket, Key=key)
            self.size = int(head["ContentLength"])
        else:
            blob = files._gcs_blob(uri)
            blob.reload()
            self.blob, self.size = blob, int(blob.size or 0)
        if 0 < self.size <= PARQUET_WHOLE_BELOW:
            self.whole = self._fetch(0, self.size)

    def _fetch(self, start: int, end: int) -> bytes:
        if storage.is_s3(self.uri):
            bucket, key = storage.split_s3(self.uri)
            response = storage._s3_client(self.files.s3).get_object(
                Bucket=bucket, Key=key, Range=f"bytes={start}-{end - 1}"
            )
            return response["Body"].read()
        return self.blob.download_as_bytes(
            start=start, end=end - 1, checksum=None, raw_download=True
        )

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buffer) -> int:
        end = min(self.size, self.pos + len(buffer))
        if end <= self.pos:
            return 0
        if self.whole is not None:
            data = self.whole[self.pos : end]
        else:
            data = self._fetch(self.pos, end)
        buffer[: len(data)] = data
        self.pos += len(data)
        return len(data)
