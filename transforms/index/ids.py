"""Sample ids: one integer per dataset sample, shared by the index and the server. Pure.

A sample's id is its rank in the dataset read in manifest order: the shards as
`manifest.json` lists them, each shard's rows as its Parquet file holds them (row i of a
shard is the sample at `sample_offset` i). So an id needs no table to be found again: the
shard's base plus the row, and the server's `where` filters, which run over the Parquet
index in that same order, give a mask indexed by id.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ShardIds:
    shard: str  # "<group>/<index:06d>.tar", as the Parquet index's `shard` column names it
    parquet_path: str  # relative to the dataset root
    base: int  # id of the shard's first sample
    samples: int


def shard_ids(manifest: dict) -> list[ShardIds]:
    """Every shard of a dataset manifest with the id of its first sample, in id order."""
    out, base = [], 0
    for entry in manifest.get("shards", []):
        shard = entry["path"].split("/", 1)[1] if "/" in entry["path"] else entry["path"]
        count = int(entry["samples"])
        out.append(ShardIds(shard, entry["parquet_path"], base, count))
        base += count
    return out


def total_samples(manifest: dict) -> int:
    return sum(int(e["samples"]) for e in manifest.get("shards", []))
