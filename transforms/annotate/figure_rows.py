"""What annotate reads of extract's figure files: captions by key, and the images of a few
keys (for thumbnails). Pure, Beam-free."""

from __future__ import annotations

import pyarrow.parquet as pq

from transforms.sinks import open_native


def _file(uri: str):
    source = open_native(uri)
    return source, pq.ParquetFile(source)


def captions(uri: str) -> dict[str, str]:
    """key -> caption of every row (the first row of a key that occurs twice)."""
    source, parquet = _file(uri)
    try:
        found: dict[str, str] = {}
        for batch in parquet.iter_batches(columns=["key", "caption"], batch_size=4096):
            for key, caption in zip(
                batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True
            ):
                if isinstance(key, str):
                    found.setdefault(key, caption or "")
        return found
    finally:
        if not isinstance(source, str):
            source.close()


def images(uri: str, keys: frozenset[str]) -> dict[str, bytes]:
    """key -> image bytes of the rows whose key is in `keys`. Only the row groups holding
    one of them have their image column read."""
    source, parquet = _file(uri)
    try:
        found: dict[str, bytes] = {}
        for group in range(parquet.num_row_groups):
            names = parquet.read_row_group(group, columns=["key"]).column(0).to_pylist()
            wanted = [i for i, k in enumerate(names) if k in keys and k not in found]
            if not wanted:
                continue
            column = parquet.read_row_group(group, columns=["image"]).column(0)
            for i in wanted:
                image = column[i].as_py()
                if image:
                    found.setdefault(names[i], image)
        return found
    finally:
        if not isinstance(source, str):
            source.close()
