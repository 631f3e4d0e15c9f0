"""Figure files in, embeddings files out: the embed stage's file handling, Beam-free.

A figure file (extract/figures/part-*.parquet) is read a row group at a time, only the
columns the models need (key, image, caption). A row group that cannot be read is one
Unreadable per row (keyed where its key column alone still reads), so every figure counts.
Its embeddings file has the same name, its rows in the figure file's row order (less the
dead-lettered ones), schema `transforms.records.embedding_schema`.
"""

from __future__ import annotations

import json
import posixpath
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from transforms import sinks, storage
from transforms.records import embedding_schema
from transforms.sinks import open_native

STAGE = "embed"  # the stage's name in dead letters and the run report
COLUMNS = ("key", "image", "caption")
EMBEDDINGS_DIR = "embeddings"
MODEL_FILE = "embed_model.json"
READ_TRIES = 3  # a read that fails this often counts as damage, not as a glitch


@dataclass(frozen=True)
class FigureRow:
    file: str  # the figure file's URI
    index: int  # the row's position in it
    key: str
    image: bytes | None
    caption: str | None


@dataclass(frozen=True)
class Unreadable:
    """A figure file that could not be read (row_group None: the whole file, one input), or
    one row of a row group that could not (index set; key where the key column read)."""

    file: str
    detail: str
    row_group: int | None = None
    index: int | None = None
    key: str | None = None


def embeddings_name(figure_file: str) -> str:
    return posixpath.basename(figure_file.rstrip("/"))


def _tried(action, tries: int = READ_TRIES, pause: float = 0.2):
    for attempt in range(tries):
        try:
            return action()
        except (OSError, ValueError, pa.ArrowException):
            if attempt == tries - 1:
                raise
            time.sleep(pause * (attempt + 1))
    return None


def read_rows(uri: str) -> Iterator[FigureRow | Unreadable]:
    """Rows of a figure file in order, a row group at a time; a row group that cannot be
    read (after READ_TRIES attempts) comes as one Unreadable per row in its place. A file
    that does not open yields only one Unreadable (and no row)."""
    try:
        source = _tried(lambda: open_native(uri))
        reader = _tried(lambda: pq.ParquetFile(source, pre_buffer=False))
    except Exception as err:
        yield Unreadable(uri, f"{type(err).__name__}: {err}")
        return
    try:
        names = set(reader.schema_arrow.names)
        if "key" not in names or "image" not in names:
            yield Unreadable(uri, "not a figure file: it has no key or image column")
            return
        columns = [c for c in COLUMNS if c in names]
        start = 0
        for group in range(reader.num_row_groups):
            rows = reader.metadata.row_group(group).num_rows
            try:
                table = _tried(lambda g=group: reader.read_row_group(g, columns=columns))
            except Exception as err:
                last = start + rows - 1
                detail = f"row group {group} (rows {start}-{last}): {type(err).__name__}: {err}"
                keys = _group_keys(reader, group, rows)
                for i in range(rows):
                    yield Unreadable(uri, detail, group, start + i, keys[i])
                start += rows
                continue
            data = table.to_pydict()
            captions = data.get("caption") or [None] * table.num_rows
            for i in range(table.num_rows):
                yield FigureRow(uri, start + i, data["key"][i], data["image"][i], captions[i])
            start += rows
    finally:
        if not isinstance(source, str):
            source.close()


def _group_keys(reader: pq.ParquetFile, group: int, rows: int) -> list[str | None]:
    """The keys of a row group that did not read whole: its key column alone, if that
    reads (the damage is elsewhere), else None for each row."""
    try:
        keys = _tried(lambda: reader.read_row_group(group, columns=["key"]))
        keys = keys.column("key").to_pylist()
    except Exception:
        return [None] * rows
    return keys if len(keys) == rows else [None] * rows


def embeddings_table(
    rows: list[tuple[int, str, np.ndarray, np.ndarray | None]],
    model_id: str,
    dim: int,
    caption: bool,
) -> pa.Table:
    """(row index, key, image vector, caption vector) rows, in row-index order."""
    rows = sorted(rows, key=lambda r: r[0])
    schema = embedding_schema(dim, caption)
    vector = pa.list_(pa.float32(), dim)

    def column(vectors) -> pa.Array:
        flat = np.concatenate(vectors).astype(np.float32) if vectors else np.zeros(0, np.float32)
        return pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), dim).cast(vector)

    arrays = [
        pa.array([r[1] for r in rows], pa.string()),
        pa.array([model_id] * len(rows), pa.string()),
        column([r[2] for r in rows]),
    ]
    if caption:
        arrays.append(column([r[3] for r in rows]))
    return pa.Table.from_arrays(arrays, schema=schema)


def write_table(table: pa.Table, directory: str, name: str, guard=None) -> None:
    sinks.write_parquet(storage.join(directory, name), table, guard)


def vector_rows(column: pa.ChunkedArray | pa.Array) -> list:
    """Each row of an embeddings file's vector column: a float32 numpy row (None where
    null) for the fixed-size float list embed writes, mapped as one array; any other column
    type as its Python values, left for the reader to check."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    kind = column.type
    if not (pa.types.is_fixed_size_list(kind) and pa.types.is_floating(kind.value_type)):
        return column.to_pylist()
    width = kind.list_size
    flat = column.values.slice(column.offset * width, len(column) * width)
    matrix = flat.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    matrix = matrix.reshape(len(column), width)
    if not column.null_count:
        return list(matrix)
    nulls = column.is_null().to_numpy(zero_copy_only=False)
    return [None if nulls[i] else matrix[i] for i in range(len(column))]


def model_record(
    model: str, weights: str, info: dict, source: str, extra: dict | None = None
) -> dict:
    """The content of embed_model.json (see the formats brief)."""
    return {
        "version": 1,
        "model": model,
        "model_id": info["model_id"],
        "weights": weights,
        "random_weights": bool(info["random_weights"]),
        "dim": int(info["dim"]),
        "caption": bool(info["caption"]),
        "input": source,
        **(extra or {}),
    }


def model_json(record: dict) -> bytes:
    return (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()
