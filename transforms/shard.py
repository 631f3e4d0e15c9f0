"""Shard stage: figure rows to WebDataset tar shards and Parquet per license group.

Order and shard assignment depend on the keys alone, never on the runner or on worker
count: keys are spread over hash buckets (so one worker never sorts a whole group), each
bucket is sorted, and bucket sizes give every key its global rank within its group; shard =
rank // samples_per_shard. The same rows therefore give byte-identical shards anywhere.
"""

from __future__ import annotations

import argparse
import hashlib
import io
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq

from transforms import storage
from transforms.licenses import GROUPS, OTHER
from transforms.outcomes import DEAD, LISTED, dead, listed
from transforms.records import SHARD_INDEX_SCHEMA, ShardPlacement, ShardRecord
from transforms.shard_samples import (
    DEFAULT_MAX_CAPTION_CHARS,
    SampleRejected,
    sample_json,
    sanitize,
)
from transforms.webdataset_tar import build_shard

STAGE = "shard"
DEFAULT_SAMPLES_PER_SHARD = 1000
DEFAULT_BUCKETS = 64


def group_of(row: dict) -> str:
    group = row.get("article_license_group") or ""
    return group if group in GROUPS else OTHER


def bucket_of(key: str, buckets: int) -> int:
    return int.from_bytes(hashlib.sha1(key.encode()).digest()[:4], "big") % buckets


def shard_paths(group: str, index: int) -> tuple[str, str]:
    name = f"{index:06d}"
    return f"webdataset/{group}/{name}.tar", f"parquet/{group}/{name}.parquet"


class _Sanitize(beam.DoFn):
    def __init__(self, max_caption_chars: int):
        self.max_caption_chars = max_caption_chars

    def process(self, row):
        yield listed(STAGE)
        try:
            yield sanitize(row, self.max_caption_chars)
        except SampleRejected as err:
            yield dead(
                STAGE,
                str(row.get("key")),
                err.reason,
                err.detail,
                str(row.get("image_source") or ""),
            )


def _offsets(sizes: list[tuple[tuple[str, int], int]]) -> dict:
    """Start rank of every (group, bucket), buckets in order within each group."""
    start: dict = {}
    running: dict[str, int] = {}
    for (group, bucket), size in sorted(sizes):
        start[(group, bucket)] = running.get(group, 0)
        running[group] = running.get(group, 0) + size
    return start


def _ranks(element, offsets: dict, per_shard: int):
    (group, bucket), keys = element
    base = offsets[(group, bucket)]
    for i, key in enumerate(keys):
        rank = base + i
        yield key, (group, rank // per_shard, rank % per_shard)


class _Place(beam.DoFn):
    """Join a key's rows with its place; more than one row under a key is a dead letter."""

    def process(self, element):
        key, joined = element
        rows = sorted(joined["rows"], key=lambda r: (r.get("image_hash") or "", r["caption"]))
        group, shard, position = list(joined["place"])[0]
        yield (group, shard), (position, rows[0])
        for extra in rows[1:]:
            yield dead(
                STAGE,
                key,
                "duplicate_key",
                "another row has the same key; the one with the smaller image hash is kept",
                str(extra.get("image_source") or ""),
            )


class _WriteShard(beam.DoFn):
    """Write one shard's tar and Parquet (aside, then renamed); skip what is already in place."""

    def __init__(self, output: str):
        self.output = output

    def process(self, element):
        (group, index), items = element
        rows = [row for _, row in sorted(items, key=lambda item: item[0])]
        tar_path, parquet_path = shard_paths(group, index)
        tar_bytes, spans = build_shard(
            [(r["key"], r["image"], sample_json(r), r["caption"].encode()) for r in rows]
        )
        index_rows = []
        for position, (row, span) in enumerate(zip(rows, spans, strict=True)):
            placement = ShardPlacement(
                tar_path.removeprefix("webdataset/"),
                position,
                span.offset,
                span.size,
                row.get("fixes", []),
            )
            fields = {k: v for k, v in row.items() if k != "image"}
            fields.update(vars(placement))
            index_rows.append(fields)
        table = pa.Table.from_pylist(index_rows, schema=SHARD_INDEX_SCHEMA)
        sink = io.BytesIO()
        pq.write_table(table, sink, compression="zstd")
        parquet_bytes = sink.getvalue()
        rewritten = False
        for path, data in ((tar_path, tar_bytes), (parquet_path, parquet_bytes)):
            uri = storage.join(self.output, path)
            if storage.sha256_of(uri) != hashlib.sha256(data).hexdigest():
                storage.atomic_write(uri, [data])
                rewritten = True
        yield ShardRecord(
            group=group,
            index=index,
            path=tar_path,
            samples=len(rows),
            bytes=len(tar_bytes),
            sha256=hashlib.sha256(tar_bytes).hexdigest(),
            parquet_path=parquet_path,
            parquet_sha256=hashlib.sha256(parquet_bytes).hexdigest(),
            rewritten=rewritten,
        )


@dataclass
class WriteShards(beam.PTransform):
    """Figure rows in; ShardRecords, dead letters and the stage's "in" markers out."""

    output: str
    samples_per_shard: int = DEFAULT_SAMPLES_PER_SHARD
    buckets: int = DEFAULT_BUCKETS
    max_caption_chars: int = DEFAULT_MAX_CAPTION_CHARS

    def __post_init__(self):
        super().__init__()
        if self.samples_per_shard < 1:
            raise ValueError("--samples_per_shard must be at least 1")
        if self.buckets < 1:
            raise ValueError("--sort_buckets must be at least 1")

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("shard")
        group.add_argument("--samples_per_shard", type=int, default=DEFAULT_SAMPLES_PER_SHARD)
        group.add_argument(
            "--max_caption_chars",
            type=int,
            default=DEFAULT_MAX_CAPTION_CHARS,
            help="longer captions are cut at a word boundary (and say so)",
        )
        group.add_argument(
            "--sort_buckets",
            type=int,
            default=DEFAULT_BUCKETS,
            help="hash buckets the keys are sorted in (changes the order)",
        )

    @classmethod
    def from_args(cls, args, output: str) -> WriteShards:
        return cls(
            output=output,
            samples_per_shard=args.samples_per_shard,
            buckets=args.sort_buckets,
            max_caption_chars=args.max_caption_chars,
        )

    def expand(self, rows):
        clean = rows | "Sanitize" >> beam.ParDo(_Sanitize(self.max_caption_chars)).with_outputs(
            DEAD, LISTED, main="rows"
        )
        buckets = self.buckets
        keys_by_bucket = (
            clean.rows
            | "KeyBucket"
            >> beam.Map(lambda r: ((group_of(r), bucket_of(r["key"], buckets)), r["key"]))
            | "GroupBuckets" >> beam.GroupByKey()
            | "SortBucket" >> beam.MapTuple(lambda gb, keys: (gb, sorted(set(keys))))
        )
        offsets = (
            keys_by_bucket
            | "BucketSizes" >> beam.MapTuple(lambda gb, keys: (gb, len(keys)))
            | "AllSizes" >> beam.combiners.ToList()
            | "Offsets" >> beam.Map(_offsets)
        )
        places = keys_by_bucket | "Ranks" >> beam.FlatMap(
            _ranks, offsets=beam.pvalue.AsSingleton(offsets), per_shard=self.samples_per_shard
        )
        placed = (
            {"rows": clean.rows | "ByKey" >> beam.Map(lambda r: (r["key"], r)), "place": places}
            | "JoinPlaces" >> beam.CoGroupByKey()
            | "Place"
            >> beam.ParDo(_Place())
            .with_output_types(tuple[Any, Any])
            .with_outputs(DEAD, main="placed")
        )
        records = (
            placed.placed
            | "GroupShards" >> beam.GroupByKey()
            | "WriteShard" >> beam.ParDo(_WriteShard(self.output))
        )
        return {
            "records": records,
            "rows": clean.rows,
            DEAD: (clean[DEAD], placed[DEAD]) | "ShardDead" >> beam.Flatten(),
            LISTED: clean[LISTED],
        }
