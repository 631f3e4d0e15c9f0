"""Rows of embed's Parquet files, checked before they are clustered, and the order that
picks the training sample. Pure, Beam-free."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from transforms.embed.files import vector_rows
from transforms.records import EMBEDDING_MODEL, IMAGE_EMBEDDING
from transforms.sinks import read_parquet

WRONG_DIM = "embedding_wrong_dim"
NOT_FINITE = "embedding_not_finite"
MODEL_MISMATCH = "embedding_model_mismatch"
NO_KEY = "embedding_no_key"
UNREADABLE = "embeddings_unreadable"
NOT_UNIT = "embedding_not_unit"
DUPLICATE_KEY = "embedding_duplicate_key"
# embed writes L2-normalised vectors; a norm this far from 1 (an all-zero vector, a raw
# model output) is not one of them. Loose enough for vectors normalised in float16 on a GPU.
UNIT_TOLERANCE = 1e-2


@dataclass
class CheckedRows:
    """A file's usable rows in file order (keys, (n, dim) float32 vectors) and the others
    as (key, reason, detail)."""

    keys: list[str] = field(default_factory=list)
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    bad: list[tuple[str, str, str]] = field(default_factory=list)
    rows: int = 0


COLUMNS = ["key", EMBEDDING_MODEL, IMAGE_EMBEDDING]


def read_table(uri: str) -> pa.Table:
    """The columns annotate checks of an embeddings file (sinks.read_parquet: one reader)."""
    return next(read_parquet(uri, columns=COLUMNS))


def _vectors(column: pa.ChunkedArray) -> list[np.ndarray | None]:
    """Each row's vector as float32 (None where the row holds none); a value that is no
    list of numbers becomes an empty vector (a wrong dimension)."""
    out = []
    for value in vector_rows(column):
        if value is None or isinstance(value, np.ndarray):
            out.append(value)
            continue
        try:
            out.append(np.asarray(value, dtype=np.float32))
        except (TypeError, ValueError):
            out.append(np.zeros(0, np.float32))
    return out


def check_rows(table: pa.Table, model_id: str, dim: int) -> CheckedRows:
    """Split a file's rows into usable ones and dead letters: a row whose vector is not
    `dim` floats, holds NaN or infinity, is not of unit length, whose model is not
    `model_id`, that has no key, or repeats a key of an earlier row of the file."""
    checked = CheckedRows(rows=table.num_rows)
    if table.num_rows == 0:
        checked.vectors = np.zeros((0, dim), np.float32)
        return checked
    keys = table.column("key").to_pylist()
    models = table.column(EMBEDDING_MODEL).to_pylist()
    vectors = _vectors(table.column(IMAGE_EMBEDDING))
    kept = []
    seen: set[str] = set()
    for key, model, vector in zip(keys, models, vectors, strict=True):
        name = key if isinstance(key, str) else ""
        repeated = name in seen
        seen.add(name)
        if not name:
            checked.bad.append((str(key), NO_KEY, "the row has no sample key"))
        elif repeated:
            checked.bad.append((name, DUPLICATE_KEY, "an earlier row of the file has this key"))
        elif model != model_id:
            checked.bad.append((name, MODEL_MISMATCH, f"model {model!r}, the others {model_id!r}"))
        elif vector is None or vector.shape != (dim,):
            size = "none" if vector is None else str(vector.size)
            checked.bad.append((name, WRONG_DIM, f"{size} values, expected {dim}"))
        elif not np.isfinite(vector).all():
            checked.bad.append((name, NOT_FINITE, "the vector holds NaN or infinity"))
        elif abs(float(np.linalg.norm(vector)) - 1) > UNIT_TOLERANCE:
            norm = float(np.linalg.norm(vector))
            checked.bad.append((name, NOT_UNIT, f"norm {norm:.4g}, embed writes unit vectors"))
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
