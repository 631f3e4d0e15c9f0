"""An index folder (`biomedica index` output), opened read-only for the server. Beam-free.

    IDX/manifest.json     what was indexed, with which model and parameters
    IDX/image.faiss       image vectors, faiss ids = sample ids
    IDX/caption.faiss     caption vectors (models with a text tower only)
    IDX/samples.sqlite    `samples` (id -> key, shard, byte range, what a hit shows) and
                          `samples_fts` (FTS5 over caption, image_context, article_title)

Everything is read once, at startup. faiss indexes are searched from many threads at once
(search does not mutate them). SQLite connections are not shared across threads: each
thread of the server's pool opens its own, read-only and `immutable` (SQLite then takes no
locks and never looks for a journal: the file cannot change under a running server). An
index on gs:// or s3:// is copied to a temporary folder first: faiss and SQLite read local
files only.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import tempfile
import threading
from dataclasses import dataclass

import numpy as np

from transforms import storage
from transforms.index import keyword

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SAMPLES_DB = "samples.sqlite"
KINDS = ("image", "caption")
# What a hit shows, from the samples table (one query per search, by id): every column
# the index job writes there but the in-line references, which only the FTS index needs.
HIT_COLUMNS = ("id", *(c for c in keyword.PARQUET_COLUMNS if c != "image_context"))
# bm25 weights of the FTS columns (caption, image_context, article_title): a word of the
# caption says most about the figure; the title is shared by all of an article's figures.
BM25_WEIGHTS = (1.0, 0.5, 0.5)
SQL_BATCH = 500  # ids per `IN (...)` (SQLite allows 32766 variables; small keeps plans cheap)


class IndexUnusable(ValueError):
    """The index folder cannot be served: missing file, wrong format (message: one line)."""


@dataclass
class Vectors:
    kind: str  # image | caption
    index: object  # the faiss index
    info: dict  # the manifest's vectors entry
    ivf: object | None  # the IVF part, where there is one (its nprobe is per search)
    # IVF-PQ with re-ranking (`...,Refine(SQ8)`): the IndexRefine between the id map and the
    # IVF, and the sample id of each vector in the order they were added (the ids the IVF
    # itself holds are those positions, not sample ids).
    refine: object | None = None
    id_map: np.ndarray | None = None

    @property
    def nprobe(self) -> int | None:
        value = self.info.get("nprobe")
        return int(value) if value else None


def vectors_of(kind: str, index, info: dict) -> Vectors:
    """A faiss index `biomedica index` wrote (IDMap2 over Flat, IVF-PQ or Refine(IVF-PQ)),
    with the parts a search needs found once."""
    import faiss

    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:  # flat (or HNSW): no inverted lists
        ivf = None
    refine = id_map = None
    outer = faiss.downcast_index(index)
    if isinstance(outer, (faiss.IndexIDMap2, faiss.IndexIDMap)):
        inner = faiss.downcast_index(outer.index)
        if isinstance(inner, faiss.IndexRefine):
            refine, id_map = inner, faiss.vector_to_array(outer.id_map).astype(np.int64)
    return Vectors(kind, index, info, ivf, refine, id_map)


def _is_local(uri: str) -> bool:
    return "://" not in uri


class IndexFiles:
    """IDX opened for searching. `locate(key)`, `hit_rows(ids)`, `keyword(...)`; `.vectors`
    maps image/caption to Vectors."""

    def __init__(self, uri: str, s3: storage.S3Config = storage.S3Config()):
        self.uri, self.s3 = uri, s3
        self._copy: str | None = None
        try:
            raw = storage.read_bytes(storage.join(uri, MANIFEST), s3)
        except Exception as err:
            raise IndexUnusable(f"{uri} is not an index: no readable {MANIFEST} ({err})") from None
        try:
            self.manifest = json.loads(raw)
        except ValueError:
            raise IndexUnusable(f"{storage.join(uri, MANIFEST)} is not JSON") from None
        if self.manifest.get("version") != 1:
            raise IndexUnusable(
                f"{uri}: index version {self.manifest.get('version')!r}; serve reads 1"
            )
        self.samples = int(self.manifest.get("samples", 0))
        self.db_path = self._local(self.manifest.get("keyword", {}).get("file", SAMPLES_DB))
        self._local_conn = threading.local()
        self.vectors: dict[str, Vectors] = {}
        for kind, info in (self.manifest.get("vectors") or {}).items():
            if kind in KINDS and info:
                self.vectors[kind] = self._open_vectors(kind, info)
        rows = self.conn().execute("SELECT count(*) FROM samples").fetchone()[0]
        if rows != self.samples:
            raise IndexUnusable(f"{self.db_path}: {rows} samples, the manifest says {self.samples}")

    # ---- files ------------------------------------------------------------------------

    def _local(self, name: str) -> str:
        """A local path of the index's file `name` (copied from gs:// or s3:// once)."""
        if os.path.basename(name) != name or name in ("", ".", ".."):
            raise IndexUnusable(f"{self.uri}: the manifest names {name!r}, not a file of the index")
        uri = storage.join(self.uri, name)
        if _is_local(self.uri):
            if not os.path.isfile(uri):
                raise IndexUnusable(f"{uri} is missing")
            return uri
        if self._copy is None:
            self._copy = tempfile.mkdtemp(prefix="biomedica-index-")
        local = os.path.join(self._copy, name)
        try:
            with storage.open_stream(uri, self.s3) as source, open(local, "wb") as sink:
                shutil.copyfileobj(source, sink, 1 << 24)
        except Exception as err:
            raise IndexUnusable(f"{uri} cannot be read: {type(err).__name__}: {err}") from None
        return local

    def _open_vectors(self, kind: str, info: dict) -> Vectors:
        import faiss

        path = self._local(info.get("file") or f"{kind}.faiss")
        try:
            index = faiss.read_index(path)
        except Exception as err:
            raise IndexUnusable(f"{path} is not a faiss index: {err}") from None
        if "dim" in info and index.d != int(info["dim"]):
            raise IndexUnusable(f"{path}: {index.d} dimensions, the manifest says {info['dim']}")
        return vectors_of(kind, index, info)

    def close(self) -> None:
        if self._copy:
            shutil.rmtree(self._copy, ignore_errors=True)
            self._copy = None

    # ---- SQLite -----------------------------------------------------------------------

    def conn(self) -> sqlite3.Connection:
        """This thread's read-only connection."""
        conn = getattr(self._local_conn, "conn", None)
        if conn is None:
            path = os.path.abspath(self.db_path)
            try:
                conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
                conn.execute("SELECT 1 FROM samples_fts LIMIT 0")
            except sqlite3.Error as err:
                raise IndexUnusable(f"{path} is not the index's SQLite file: {err}") from None
            self._local_conn.conn = conn
        return conn

    def locate(self, key: str) -> tuple[str, int, int] | None:
        """(shard, tar_offset, tar_size) of the sample `key`, or None."""
        row = (
            self.conn()
            .execute("SELECT shard, tar_offset, tar_size FROM samples WHERE key = ?", (key,))
            .fetchone()
        )
        return (row[0], int(row[1]), int(row[2])) if row else None

    def hit_rows(self, ids) -> dict[int, dict]:
        """The samples rows of `ids` (HIT_COLUMNS), by id; ids not in the index are left out."""
        ids = [int(i) for i in ids]
        out: dict[int, dict] = {}
        columns = ", ".join(HIT_COLUMNS)
        for start in range(0, len(ids), SQL_BATCH):
            part = ids[start : start + SQL_BATCH]
            marks = ",".join("?" * len(part))
            for row in self.conn().execute(
                f"SELECT {columns} FROM samples WHERE id IN ({marks})", part
            ):
                record = dict(zip(HIT_COLUMNS, row, strict=True))
                out[record["id"]] = record
        return out

    def first_ids(self, k: int, mask: np.ndarray | None) -> list[int]:
        """The first k sample ids (in id order) that `mask` admits."""
        if mask is None:
            return list(range(min(k, self.samples)))
        return [int(i) for i in np.flatnonzero(mask)[:k]]

    def keyword(
        self, expression: str, k: int, mask: np.ndarray | None, scan: int, matches: int
    ) -> list[int]:
        """Sample ids matching the FTS5 `expression`, best bm25 first, at most k of those the
        mask admits. Bounded work: bm25 is computed for at most `matches` matching samples
        (the first in id order: FTS5 has no early exit for a ranked query, and a common word
        matches most of a dataset), and under a mask at most `scan` hits are walked."""
        weights = ", ".join(str(w) for w in BM25_WEIGHTS)
        sql = (
            f"SELECT id FROM (SELECT rowid AS id, bm25(samples_fts, {weights}) AS score "
            f"FROM samples_fts WHERE samples_fts MATCH ? LIMIT ?) ORDER BY score, id LIMIT ?"
        )
        if mask is None:
            limits = [k]
        else:
            # Ask first for about twice the hits k admitted ones take at the mask's share (a
            # small top-N sort), and walk up to `scan` only when that falls short.
            share = max(np.count_nonzero(mask) / max(len(mask), 1), 1e-9)
            first = min(scan, max(k, int(2 * k / share) + k))
            limits = [first] if first >= scan else [first, scan]
        out: list[int] = []
        for limit in limits:
            out, walked = [], 0
            cursor = self.conn().execute(sql, (expression, matches, limit))
            while len(out) < k and (page := cursor.fetchmany(256)):
                walked += len(page)
                for (sample,) in page:
                    if mask is None or (0 <= sample < len(mask) and mask[sample]):
                        out.append(int(sample))
                        if len(out) == k:
                            break
            cursor.close()
            if len(out) >= k or walked < limit:  # enough, or every match was walked
                break
        return out

    def column_counts(self, column: str) -> dict:
        """value -> samples, for a column of the samples table (None values left out)."""
        if column not in HIT_COLUMNS:
            raise ValueError(f"no column {column!r}")
        rows = self.conn().execute(
            f"SELECT {column}, count(*) FROM samples WHERE {column} IS NOT NULL GROUP BY {column}"
        )
        return {value: count for value, count in rows}

    def label_counts(self, column: str = "image_primary_label") -> dict[str, int]:
        counts: dict[str, int] = {}
        for text, count in self.column_counts(column).items():
            try:
                labels = json.loads(text) if text else []
            except ValueError:
                continue
            for label in labels if isinstance(labels, list) else []:
                counts[str(label)] = counts.get(str(label), 0) + count
        return counts


def check_dataset(index: IndexFiles, files) -> None:
    """IndexUnusable when the index was built for another dataset (or another version of
    it): the sha256 of the dataset's manifest.json bytes (`files`, a
    server.dataset.DatasetFiles) against what IDX/manifest.json records."""
    want, have = index.manifest.get("dataset_manifest_sha256"), files.manifest_sha256
    if want != have:
        built = index.manifest.get("dataset") or "another dataset"
        raise IndexUnusable(
            f"index {index.uri} was built for another dataset ({built}, manifest sha256 "
            f"{str(want)[:12]}...), not {files.uri} ({have[:12]}...)"
        )
    if files.samples != index.samples:
        raise IndexUnusable(
            f"{files.uri} holds {files.samples} samples, index {index.uri} {index.samples}"
        )
