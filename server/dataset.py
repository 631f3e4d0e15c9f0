"""A dataset (`biomedica shard` / `subset` output) as the server reads it. Beam-free.

Minimal stand-in written by the search helper so `create_app` runs; the streaming helper's
DatasetFiles (same name, same signatures: see the issue 11 contract) replaces it.
"""

from __future__ import annotations

import ast
import io
import json
import tarfile
import threading
from collections import OrderedDict

import numpy as np
import pyarrow.parquet as pq

from server.errors import ApiError
from transforms import storage
from transforms.index.ids import shard_ids, total_samples
from transforms.records import SHARD_INDEX_SCHEMA
from transforms.shard.row_filter import FilterError, compile_where

MASKS_KEPT = 32  # where texts whose masks stay cached


class DatasetFiles:
    def __init__(self, uri: str, s3: storage.S3Config = storage.S3Config()):
        self.uri, self.s3 = uri, s3
        self.manifest = json.loads(storage.read_bytes(storage.join(uri, "manifest.json"), s3))
        self.shards = shard_ids(self.manifest)
        self.samples = total_samples(self.manifest)
        self.groups = self.manifest.get("groups", {})
        self._paths = {e["path"].split("/", 1)[1]: e["path"] for e in self.manifest["shards"]}
        self._masks: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def shard_uri(self, group: str, name: str) -> str:
        path = self._paths.get(f"{group}/{name}")
        if path is None:
            raise ApiError(404, "shard_not_found", f"no shard {group}/{name} in this dataset")
        return storage.join(self.uri, path)

    def read_range(self, shard: str, offset: int, size: int) -> bytes:
        group, _, name = shard.partition("/")
        uri = self.shard_uri(group, name)
        try:
            if "://" not in uri:
                with open(uri, "rb") as source:
                    source.seek(offset)
                    data = source.read(size)
            else:
                with storage.open_stream(uri, self.s3) as source:
                    source.seek(offset)
                    data = source.read(size)
        except FileNotFoundError:
            raise ApiError(404, "shard_missing", f"shard {shard} is missing") from None
        except OSError as err:
            raise ApiError(502, "shard_unreadable", f"shard {shard}: {err}") from None
        if len(data) != size:
            raise ApiError(502, "shard_unreadable", f"shard {shard} is shorter than its index")
        return data

    def sample_members(self, shard: str, offset: int, size: int) -> dict[str, bytes]:
        data = self.read_range(shard, offset, size) + b"\0" * 1024
        members = {}
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
                for member in tar:
                    extension = member.name.rsplit(".", 1)[-1]
                    members[extension] = tar.extractfile(member).read()
        except tarfile.TarError as err:
            raise ApiError(502, "shard_unreadable", f"shard {shard}: {err}") from None
        return members

    def matching(self, where: str | None) -> np.ndarray:
        if where is None:
            return np.ones(self.samples, dtype=bool)
        with self._lock:
            if where in self._masks:
                self._masks.move_to_end(where)
                return self._masks[where]
        try:
            predicate = compile_where(where, SHARD_INDEX_SCHEMA)
        except FilterError as err:
            raise ApiError(400, "invalid_where", str(err)) from None
        names = {
            n.id for n in ast.walk(ast.parse(where.strip(), mode="eval")) if isinstance(n, ast.Name)
        }
        columns = [c for c in SHARD_INDEX_SCHEMA.names if c in names]
        mask = np.zeros(self.samples, dtype=bool)
        for shard in self.shards:
            with storage.open_stream(storage.join(self.uri, shard.parquet_path), self.s3) as f:
                rows = pq.read_table(f, columns=columns).to_pylist()
            for i, row in enumerate(rows):
                mask[shard.base + i] = predicate(row)
        with self._lock:
            self._masks[where] = mask
            while len(self._masks) > MASKS_KEPT:
                self._masks.popitem(last=False)
        return mask
