"""samples.sqlite: the id map, what a hit shows, and the keyword index (SQLite FTS5).
Pure (the standard library's sqlite3 and pyarrow), Beam-free.

One writer builds the file, rows inserted in id order into a fresh database with fixed
settings, so the same dataset gives the same bytes (with the same SQLite version). FTS5
is contentless (`content=''`): the text lives in `samples` (caption, title) or nowhere
(image_context, the in-line references), the full-text index alone is stored.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator

import pyarrow as pa

ENGINE = "sqlite-fts5"
TOKENIZER = "porter unicode61 remove_diacritics 2"
FTS_COLUMNS = ["caption", "image_context", "article_title"]
# The Parquet index's columns the keyword step reads (see transforms.records.SHARD_INDEX_SCHEMA).
PARQUET_COLUMNS = [
    "key",
    "shard",
    "tar_offset",
    "tar_size",
    "caption",
    "image_context",
    "article_title",
    "article_journal",
    "article_year",
    "article_license",
    "article_license_group",
    "article_accession_id",
    "image_primary_label",
    "image_secondary_label",
    "image_cluster_id",
]
SCHEMA = f"""
CREATE TABLE samples (
  id INTEGER PRIMARY KEY,
  key TEXT NOT NULL UNIQUE,
  shard TEXT NOT NULL,
  tar_offset INTEGER NOT NULL, tar_size INTEGER NOT NULL,
  caption TEXT, article_title TEXT, article_journal TEXT, article_year INTEGER,
  article_license TEXT, article_license_group TEXT, article_accession_id TEXT,
  image_primary_label TEXT,
  image_secondary_label TEXT,
  image_cluster_id INTEGER,
  has_image_vector INTEGER NOT NULL, has_caption_vector INTEGER NOT NULL);
CREATE VIRTUAL TABLE samples_fts USING fts5({", ".join(FTS_COLUMNS)},
  content='', tokenize='{TOKENIZER}');
"""
_INSERT = "INSERT INTO samples VALUES (" + ", ".join(["?"] * 17) + ")"
_INSERT_FTS = f"INSERT INTO samples_fts (rowid, {', '.join(FTS_COLUMNS)}) VALUES (?, ?, ?, ?)"
BATCH = 5000


def present_columns(schema: pa.Schema) -> list[str]:
    """The PARQUET_COLUMNS a shard's Parquet has (an older dataset may lack labels)."""
    return [c for c in PARQUET_COLUMNS if c in schema.names]


def _labels(value) -> str:
    return json.dumps(list(value or []), ensure_ascii=False)


def _context(value) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return "\n".join(str(v) for v in value if v)


def row_values(sample_id: int, row: dict, image: bool, caption: bool) -> tuple[tuple, tuple]:
    """(the samples row, the FTS row) of one Parquet row (a dict of PARQUET_COLUMNS)."""
    get = row.get
    year = get("article_year")
    samples = (
        int(sample_id),
        get("key"),
        get("shard"),
        int(get("tar_offset") or 0),
        int(get("tar_size") or 0),
        get("caption"),
        get("article_title"),
        get("article_journal"),
        int(year) if year is not None else None,
        get("article_license"),
        get("article_license_group"),
        get("article_accession_id"),
        _labels(get("image_primary_label")),
        _labels(get("image_secondary_label")),
        get("image_cluster_id"),
        int(bool(image)),
        int(bool(caption)),
    )
    fts = (
        int(sample_id),
        get("caption") or "",
        _context(get("image_context")),
        get("article_title") or "",
    )
    return samples, fts


def build(path: str, rows: Iterable[tuple[tuple, tuple]], on_batch=None) -> int:
    """Write a fresh samples.sqlite at local `path` from (samples row, FTS row) pairs in
    id order (row_values); the rows inserted. `on_batch(n)` is told of each batch."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        # One writer, a file nobody reads until it is complete: no journal, no syncs. A
        # fixed page size: the bytes must not depend on the build machine's default.
        db.execute("PRAGMA page_size = 4096")
        db.execute("PRAGMA journal_mode = OFF")
        db.execute("PRAGMA synchronous = OFF")
        db.execute("PRAGMA locking_mode = EXCLUSIVE")
        db.executescript(SCHEMA)
        db.execute("BEGIN")
        done = 0
        for batch in _batches(rows, BATCH):
            db.executemany(_INSERT, [s for s, _ in batch])
            db.executemany(_INSERT_FTS, [f for _, f in batch])
            done += len(batch)
            if on_batch is not None:
                on_batch(len(batch))
        db.execute("COMMIT")
        # One b-tree per term instead of one per batch: faster queries, a smaller file.
        db.execute("INSERT INTO samples_fts (samples_fts) VALUES ('optimize')")
        db.execute("VACUUM")
        return done
    finally:
        db.close()


def _batches(rows: Iterable, size: int) -> Iterator[list]:
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def open_read_only(path: str) -> sqlite3.Connection:
    """How a reader (the server, tests) opens the file: read-only, immutable."""
    return sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
