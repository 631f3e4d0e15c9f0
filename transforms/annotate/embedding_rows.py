"""Rows of embed's Parquet files, checked before they are clustered, and the order that
picks the training sample. Pure, Beam-free."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from transforms.records import EMBEDDING_MODEL, IMAGE_EMBEDDING
from transforms.sinks import open_native

WRONG_DIM = "embedding_wrong_dim"
NOT_FINITE = "embedding_not_finite"
MODEL_MISMATCH = "embedding_model_mismatch"
NO_KEY = "embedding_no_key"
UNREADABLE = "embeddings_unreadable"


@dataclass
class CheckedRows:
    """A file's usable rows in file order (keys, (n, dim) float32 vectors) and the others
    as (key, reason, detail)."""

    keys: list[str] = field(default_factory=list)
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    bad: list[tuple[str, str, str]] = field(default_factory=list)
    rows: int = 0


def read_table(uri: str) -> pa.Table:
    source = open_native(uri)
    try:
        return pq.read_table(source, columns=["key", EMBEDDING_MODEL, IMAGE_EMBEDDING])
    finally:
        if not isinstance(source, str):
            source.close()


def _vectors(column: pa.ChunkedArray, dim: int) -> list[np.ndarray | None]:
    """Each row's vector as float32 (None where the row holds none). A fixed-size list
    column is mapped as one array; any other list type is read row by row."""
    column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if pa.types.is_fixed_size_list(column.type) and pa.types.is_floating(column.type.value_type):
        width = column.type.list_size
        values = column.values.slice(column.offset * width, len(column) * width)
        flat = values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        matrix = flat.reshape(len(column), width) if width else flat.reshape(len(column), 0)
        nulls = column.is_null().to_pylist() if column.null_count else [False] * len(column)
        return [None if null else matrix[i] for i, null in enumerate(nulls)]
    out = []
    for value in column.to_pylist():
        try:
            out.append(None if value is None else np.asarray(value, dtype=np.float32))
        except (TypeError, ValueError):
            out.append(np.zeros(0, np.float32))
    return out


def check_rows(table: pa.Table, model_id: str, dim: int) -> CheckedRows:
    """Split a file's rows into usable ones and dead letters: a row whose vector is not
    `dim` floats, holds NaN or infinity, whose model is not `model_id`, or has no key."""
    checked = CheckedRows(rows=table.num_rows)
    if table.num_rows == 0:
        checked.vectors = np.zeros((0, dim), np.float32)
        return checked
    keys = table.column("key").to_pylist()
    models = table.column(EMBEDDING_MODEL).to_pylist()
    vectors = _vectors(table.column(IMAGE_EMBEDDING), dim)
    kept = []
    for key, model, vector in zip(keys, models, vectors, strict=True):
        name = key if isinstance(key, str) else ""
        if not name:
            checked.bad.append((str(key), NO_KEY, "the row has no sample key"))
        elif model != model_id:
            checked.bad.append((name, MODEL_MISMATCH, f"model {model!r}, the others {model_id!r}"))
        elif vector is None or vector.shape != (dim,):
            size = "none" if vector is None else str(vector.size)
            checked.bad.append((name, WRONG_DIM, f"{size} values, expected {dim}"))
        elif not np.isfinite(vector).all():
            checked.bad.append((name, NOT_FINITE, "the vector holds NaN or infinity"))
        else:
            checked.keys.append(name)
            kept.append(vector)
    checked.vectors = np.stack(kept) if kept else np.zeros((0, dim), np.float32)
    return checked


def sample_rank(key: str, seed: int) -> str:
    """Where a sample stands in the training order: the `--cluster_sample` smallest ranks
    are trained on. A hash of the key alone (and the seed): the same sample is picked from
    the same rows on any runner, whatever the files or bundles."""
    return hashlib.sha256(f"{seed}\x00{key}".encode()).hexdigest()


def row_count(uri: str) -> int | None:
    """Rows of a Parquet file, from its footer (None where it cannot be read)."""
    source = open_native(uri)
    try:
        return pq.ParquetFile(source).metadata.num_rows
    except (OSError, ValueError, pa.ArrowException):
        return None
    finally:
        if not isinstance(source, str):
            source.close()
