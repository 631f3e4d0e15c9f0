"""Which samples of an earlier dataset the new article versions of an incremental run replace.
Pure, Beam-free.

An article taken again (a new version, or the same version changed since) replaces every
sample the earlier dataset holds of that article: its figures may have changed, gone or been
added, so a sample is matched by article, never by key.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from transforms import storage
from transforms.sinks import read_parquet

SCHEMA = pa.schema(
    [
        pa.field("key", pa.string()),  # the earlier sample's key
        pa.field("shard", pa.string()),  # where it lies in the earlier dataset
        pa.field("article_accession_id", pa.string()),
        pa.field("old_version", pa.int64()),
        pa.field("new_version", pa.int64()),
    ]
)
_BATCH = 1 << 16


def empty() -> pa.Table:
    return SCHEMA.empty_table()


def new_versions(articles: str) -> dict[str, int | None]:
    """PMCID -> version of every article in an extract's articles folder."""
    found: dict[str, int | None] = {}
    for info in storage.glob(storage.join(articles, "*.parquet")):
        columns = ["article_accession_id", "article_version"]
        for table in read_parquet(info.uri, columns, batch_rows=_BATCH):
            values = (table.column(c).to_pylist() for c in columns)
            for accession, version in zip(*values, strict=True):
                if accession:
                    found[accession] = version
    return found


def replaced_samples(dataset: str, articles: str) -> pa.Table:
    """The samples of `dataset` (a shard output) whose article `articles` holds again,
    sorted by key."""
    new = new_versions(articles)
    if not new:
        return empty()
    wanted = pa.array(sorted(new), pa.string())
    parts = []
    columns = ["key", "shard", "article_accession_id", "article_version"]
    for info in storage.glob(storage.join(dataset, "parquet", "*", "*.parquet")):
        for table in read_parquet(info.uri, columns, batch_rows=_BATCH):
            hit = table.filter(pc.is_in(table.column("article_accession_id"), value_set=wanted))
            if hit.num_rows:
                parts.append(hit)
    if not parts:
        return empty()
    hits = pa.concat_tables(parts)
    accessions = hits.column("article_accession_id").to_pylist()
    table = pa.table(
        {
            "key": hits.column("key").cast(pa.string()),
            "shard": hits.column("shard").cast(pa.string()),
            "article_accession_id": accessions,
            "old_version": hits.column("article_version").cast(pa.int64()),
            "new_version": pa.array([new[a] for a in accessions], pa.int64()),
        },
        schema=SCHEMA,
    )
    return table.sort_by("key")
