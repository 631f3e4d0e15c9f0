"""What annotate reads of extract's figure files: their keys, captions by key, and the
images of a few keys (for thumbnails). Pure, Beam-free."""

from __future__ import annotations

import pyarrow as pa

from transforms.sinks import parquet_file, read_parquet

BATCH_ROWS = 4096


def keys(uri: str) -> set[str]:
    """The keys of a figure file's rows (the key column alone). A row group that cannot be
    read is passed over: embed could not have read its rows either."""
    found: set[str] = set()
    with parquet_file(uri) as parquet:
        for group in range(parquet.num_row_groups):
            try:
                column = parquet.read_row_group(group, columns=["key"]).column(0)
            except (OSError, ValueError, pa.ArrowException):
                continue
            found.update(k for k in column.to_pylist() if isinstance(k, str))
    return found


def captions(uri: str) -> dict[str, str]:
    """key -> caption of every row (the first row of a key that occurs twice)."""
    found: dict[str, str] = {}
    for batch in read_parquet(uri, columns=["key", "caption"], batch_rows=BATCH_ROWS):
        for key, caption in zip(
            batch.column("key").to_pylist(), batch.column("caption").to_pylist(), strict=True
        ):
            if isinstance(key, str):
                found.setdefault(key, caption or "")
    return found


def images(uri: str, wanted: frozenset[str]) -> dict[str, bytes]:
    """key -> image bytes of the rows whose key is in `wanted`. Row group by row group (not
    sinks.read_parquet, which reads a column of every row): only the groups holding one of
    them have their image column read, and images are most of a figure file's bytes."""
    found: dict[str, bytes] = {}
    with parquet_file(uri) as parquet:
        for group in range(parquet.num_row_groups):
            names = parquet.read_row_group(group, columns=["key"]).column(0).to_pylist()
            at = [i for i, k in enumerate(names) if k in wanted and k not in found]
            if not at:
                continue
            column = parquet.read_row_group(group, columns=["image"]).column(0)
            for i in at:
                image = column[i].as_py()
                if image:
                    found.setdefault(names[i], image)
    return found
