"""Shard stage: figure rows to WebDataset tar shards and Parquet per license group.

Order and shard assignment depend on the keys alone, never on the runner or on worker
count: keys are spread over hash buckets (so no worker sorts a whole group), each bucket is
sorted, and bucket sizes give every key its global rank within its group; shard = rank //
samples_per_shard. The same rows therefore give byte-identical shards anywhere.

Rows travel as Arrow tables, never one by one, and the bytes never go through the runner's
shuffle: rows are spilled to `<output>/_work/` as Arrow files per (group, bucket), and only
their paths are grouped; each bucket writes the tar members of the shards it overlaps as one
piece file per shard; a shard is its pieces joined in rank order (tar members concatenate)
and closed. Memory stays flat however large the input, on the in-process runner too.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import uuid
from collections import Counter
from dataclasses import dataclass

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from transforms import storage
from transforms.licenses import GROUPS, OTHER
from transforms.outcomes import DEAD, dead
from transforms.records import (
    FIGURE_SCHEMA,
    SHARD_INDEX_SCHEMA,
    ShardPlacement,
    ShardRecord,
    arrow_schema,
)
from transforms.shard_samples import (
    DEFAULT_MAX_CAPTION_CHARS,
    SampleRejected,
    check_fields,
    sample_json,
)
from transforms.sinks import open_native
from transforms.webdataset_tar import end_of_archive, sample_parts

STAGE = "shard"
DEFAULT_SAMPLES_PER_SHARD = 1000
# Samples per key bucket when --sort_buckets is not given: what one worker holds to sort a
# bucket (about 200 MB of 100 kB figures). From the row count, not file sizes, so that the
# same rows written differently (another extract run) get the same buckets and shards.
ROWS_PER_BUCKET = 2048
WORK_DIR = "_work"  # spilled rows and shard pieces of a run in progress
COUNTS = "counts"  # (count name, n) pairs for the run report
STATS = "stats"  # ((group, journal, year), n) for the dataset card
RECORDS = "records"  # ShardRecords of shards written whole by one bucket
KEYS = "keys"  # ((group, bucket), keys of one spilled table): bucket sizes come from these

# Rows as the shard stage holds them: a figure row plus the fixes made on the way.
WORK_SCHEMA = pa.schema(list(FIGURE_SCHEMA) + [arrow_schema(ShardPlacement).field("fixes")])


def group_of(value) -> str:
    return value if value in GROUPS else OTHER


def bucket_of(key: str, buckets: int) -> int:
    return int.from_bytes(hashlib.sha1(key.encode()).digest()[:4], "big") % buckets


def shard_paths(group: str, index: int) -> tuple[str, str]:
    name = f"{index:06d}"
    return f"webdataset/{group}/{name}.tar", f"parquet/{group}/{name}.parquet"


def conform(table: pa.Table) -> pa.Table:
    """Any figure table in WORK_SCHEMA's columns: missing ones empty, others cast.

    `key` and `caption` keep their own type (bytes included): check_fields reads them.
    """
    columns = []
    for field in WORK_SCHEMA:
        if field.name in table.column_names:
            column = table.column(field.name)
            if field.name not in ("key", "caption") and column.type != field.type:
                column = column.cast(field.type)
            columns.append(column)
        elif field.name == "fixes":
            columns.append(pa.array([[]] * table.num_rows, field.type))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    names = WORK_SCHEMA.names
    return pa.Table.from_arrays(columns, names=names)


def table_to_blob(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def blob_to_table(blob: bytes) -> pa.Table:
    return pa.ipc.open_stream(blob).read_all()


# ---- 1. check rows and spread them over buckets --------------------------------------------


class _ReadTables(beam.DoFn):
    """Figure Parquet files to Arrow tables of `batch_rows` rows, read without pre-buffering."""

    def __init__(self, batch_rows: int = 256):
        self.batch_rows = batch_rows

    def process(self, uri: str):
        source = open_native(uri)
        try:
            for batch in pq.ParquetFile(source, pre_buffer=False).iter_batches(self.batch_rows):
                yield pa.Table.from_batches([batch])
        finally:
            if not isinstance(source, str):
                source.close()


def _spill(work: str, kind: str, place: str, data, suffix: str) -> str:
    # Only the paths a bundle outputs are ever read, so a fresh name per write is safe: the
    # files of a failed, retried bundle are never read (and go with the work folder).
    path = storage.join(work, kind, place, uuid.uuid4().hex + suffix)
    storage.write_bytes(path, data)
    return path


class _SplitTable(beam.DoFn):
    """Check every row, fix what can be fixed, spill the rest per (group, bucket).

    Checked rows are buffered (up to `flush_bytes`) so that each spill file holds many rows:
    one sort and one take per flush, not one small file per bucket per input batch.
    """

    def __init__(
        self, buckets: int, max_caption_chars: int, work: str, flush_bytes: int = 64 << 20
    ):
        self.buckets, self.max_caption_chars, self.work = buckets, max_caption_chars, work
        self.flush_bytes = flush_bytes

    def start_bundle(self):
        self.buffered: list[pa.Table] = []
        self.places: list[int] = []
        self.size = 0

    def process(self, table: pa.Table):
        table = conform(table)
        yield beam.pvalue.TaggedOutput(COUNTS, (f"{STAGE}.in", table.num_rows))
        heads = pc.binary_slice(table.column("image"), 0, 3).to_pylist()
        keys, captions, fixes, kept = [], [], [], []
        groups = table.column("article_license_group").to_pylist()
        sources = table.column("image_source").to_pylist()
        prior = table.column("fixes").to_pylist()
        raw = zip(table.column("key").to_pylist(), table.column("caption").to_pylist(), strict=True)
        for i, (key, caption) in enumerate(raw):
            try:
                safe, text, made = check_fields(key, caption, heads[i], self.max_caption_chars)
            except SampleRejected as err:
                yield dead(STAGE, str(key), err.reason, err.detail, str(sources[i] or ""))
                continue
            group = GROUPS.index(group_of(groups[i]))
            self.places.append(group * self.buckets + bucket_of(safe, self.buckets))
            kept.append(i)
            keys.append(safe)
            captions.append(text)
            fixes.append([*(prior[i] or []), *made])
        if not kept:
            return
        rows = table if len(kept) == table.num_rows else table.take(pa.array(kept, pa.int64()))
        for name, values in (("key", keys), ("caption", captions), ("fixes", fixes)):
            rows = rows.set_column(
                rows.schema.get_field_index(name),
                name,
                pa.array(values, WORK_SCHEMA.field(name).type),
            )
        self.buffered.append(rows)
        self.size += rows.nbytes
        if self.size >= self.flush_bytes:
            yield from self._flush()

    def finish_bundle(self):
        from apache_beam.transforms.window import GlobalWindows

        for output in self._flush():
            if isinstance(output, beam.pvalue.TaggedOutput):
                yield beam.pvalue.TaggedOutput(
                    output.tag, GlobalWindows.windowed_value(output.value)
                )
            else:
                yield GlobalWindows.windowed_value(output)

    def _flush(self):
        if not self.buffered:
            return
        rows = pa.concat_tables(self.buffered)
        places = pa.array(self.places, pa.int64())
        if len(set(self.places)) > 1:  # one place (one bucket per group, say): nothing to sort
            order = pc.sort_indices(places)
            rows, places = rows.take(order), places.take(order)
        places = places.to_pylist()
        self.buffered, self.places, self.size = [], [], 0
        start = 0
        while start < len(places):
            stop = start
            while stop < len(places) and places[stop] == places[start]:
                stop += 1
            group, bucket = GROUPS[places[start] // self.buckets], places[start] % self.buckets
            part = rows.slice(start, stop - start)
            path = _spill(
                self.work, "buckets", f"{group}/{bucket:05d}", table_to_blob(part), ".arrow"
            )
            yield (group, bucket), path
            yield beam.pvalue.TaggedOutput(KEYS, ((group, bucket), part.column("key").to_pylist()))
            start = stop


# ---- 2. rank the keys of every bucket --------------------------------------------------------


def _unique_keys(element) -> tuple:
    place, key_lists = element
    return place, len({key for keys in key_lists for key in keys})


def _offsets(sizes: list) -> dict:
    """Start rank of every (group, bucket), buckets in order within each group; and the
    number of samples of each group (under the group's own name)."""
    start: dict = {}
    running: dict[str, int] = {}
    for (group, bucket), size in sorted(sizes):
        start[(group, bucket)] = running.get(group, 0)
        running[group] = running.get(group, 0) + size
    return {**start, **running}


# ---- 3. every bucket writes its pieces of the shards it overlaps -----------------------------


def _one_row_per_key(table: pa.Table, keys: list[str]) -> tuple[pa.Table, list]:
    """Keep, of rows sharing a key, the one with the smallest (image hash, JSON): a choice
    that depends on the rows only, never on the order they arrived in."""
    rows = table.drop_columns(["image"]).to_pylist()
    keep, dropped, start = [], [], 0
    while start < len(keys):
        stop = start
        while stop < len(keys) and keys[stop] == keys[start]:
            stop += 1
        ranked = sorted(
            range(start, stop), key=lambda i: (rows[i]["image_hash"] or "", sample_json(rows[i]))
        )
        keep.append(ranked[0])
        dropped += [(keys[i], str(rows[i]["image_source"] or "")) for i in ranked[1:]]
        start = stop
    return table.take(pa.array(sorted(keep), pa.int64())), dropped


class _BucketPieces(beam.DoFn):
    def __init__(self, per_shard: int, work: str, output: str):
        self.per_shard, self.work, self.output = per_shard, work, output

    def process(self, element, offsets: dict):
        (group, bucket), paths = element
        table = pa.concat_tables([blob_to_table(storage.read_bytes(p)) for p in sorted(set(paths))])
        table = table.take(pc.sort_indices(table, [("key", "ascending")]))
        keys = table.column("key").to_pylist()
        if len(set(keys)) < len(keys):
            table, dropped = _one_row_per_key(table, keys)
            for key, source in dropped:
                yield dead(
                    STAGE,
                    key,
                    "duplicate_key",
                    "another row has the same key; the one "
                    "with the smaller image hash (then JSON) is kept",
                    source,
                )
        base = offsets[(group, bucket)]
        stats = Counter(
            zip(
                table.column("article_journal").to_pylist(),
                table.column("article_year").to_pylist(),
                strict=True,
            )
        )
        for (journal, year), n in stats.items():
            yield beam.pvalue.TaggedOutput(STATS, ((group, journal or "", str(year or "")), n))
        start = 0
        while start < table.num_rows:
            shard = (base + start) // self.per_shard
            stop = min(table.num_rows, (shard + 1) * self.per_shard - base)
            members, index = self._piece(table.slice(start, stop - start))
            shard_end = min((shard + 1) * self.per_shard, offsets[group])
            if base + start == shard * self.per_shard and base + stop == shard_end:
                # The whole shard lies in this bucket: write it now, no piece to join.
                record = write_shard(self.output, group, shard, [(members, index)])
                yield beam.pvalue.TaggedOutput(RECORDS, record)
            else:
                place = f"{group}/{shard:06d}"
                yield (
                    (group, shard),
                    (
                        base + start,
                        _spill(self.work, "pieces", place, members, ".tar"),
                        _spill(self.work, "pieces", place, table_to_blob(index), ".arrow"),
                    ),
                )
            start = stop

    @staticmethod
    def _piece(rows: pa.Table) -> tuple[list[bytes], pa.Table]:
        """Tar members of consecutive samples (as parts), and their index rows (in-piece
        offsets)."""
        metadata = rows.drop_columns(["image"])
        images = rows.column("image")
        parts, offsets, sizes, size = [], [], [], 0
        for i, fields in enumerate(metadata.to_pylist()):
            members = sample_parts(
                fields["key"], images[i].as_py(), sample_json(fields), fields["caption"].encode()
            )
            length = sum(len(part) for part in members)
            offsets.append(size)
            sizes.append(length)
            size += length
            parts.extend(members)
        index = metadata.append_column("tar_offset", pa.array(offsets, pa.int64()))
        index = index.append_column("tar_size", pa.array(sizes, pa.int64()))
        return parts, index


# ---- 4. join the pieces of each shard and write it --------------------------------------------


def write_shard(output: str, group: str, index: int, pieces: list) -> ShardRecord:
    """Join (tar member parts, index table) pieces in order into a shard's tar and Parquet.

    The parts are hashed and written one after the other, never joined into one copy. Each
    file is written aside and renamed; one identical to what is in place is left alone (a
    resumed run).
    """
    tar_path, parquet_path = shard_paths(group, index)
    tables, parts, size = [], [], 0
    for members, table in pieces:
        tables.append(
            table.set_column(
                table.schema.get_field_index("tar_offset"),
                "tar_offset",
                pc.add(table.column("tar_offset"), size),
            )
        )
        parts.extend(members)
        size += sum(len(part) for part in members)
    parts.append(end_of_archive(size))
    size += len(parts[-1])
    index_table = pa.concat_tables(tables)
    index_table = index_table.append_column(
        "shard", pa.array([tar_path.removeprefix("webdataset/")] * index_table.num_rows)
    )
    index_table = index_table.append_column(
        "sample_offset", pa.array(range(index_table.num_rows), pa.int64())
    )
    index_table = index_table.select(SHARD_INDEX_SCHEMA.names).cast(SHARD_INDEX_SCHEMA)
    sink = io.BytesIO()
    pq.write_table(index_table, sink, compression="zstd")
    rewritten = False
    digests = {}
    for path, chunks in ((tar_path, parts), (parquet_path, [sink.getvalue()])):
        digest = hashlib.sha256()
        for chunk in chunks:
            digest.update(chunk)
        digests[path] = digest.hexdigest()
        uri = storage.join(output, path)
        if storage.sha256_of(uri) != digests[path]:  # None where there is no file yet
            storage.atomic_write(uri, chunks)
            rewritten = True
    return ShardRecord(
        group=group,
        index=index,
        path=tar_path,
        samples=index_table.num_rows,
        bytes=size,
        sha256=digests[tar_path],
        parquet_path=parquet_path,
        parquet_sha256=digests[parquet_path],
        rewritten=rewritten,
    )


class _JoinPieces(beam.DoFn):
    """Read the pieces of a shard that spans buckets, in rank order, and write it."""

    def __init__(self, output: str):
        self.output = output

    def process(self, element):
        (group, index), pieces = element
        loaded = [
            ([storage.read_bytes(members)], blob_to_table(storage.read_bytes(table)))
            for _, members, table in sorted(pieces, key=lambda piece: piece[0])
        ]
        yield write_shard(self.output, group, index, loaded)


@dataclass
class WriteShards(beam.PTransform):
    """Arrow tables of figure rows in; ShardRecords, card stats, counts and dead letters out."""

    output: str
    samples_per_shard: int = DEFAULT_SAMPLES_PER_SHARD
    buckets: int = 1
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
            default=0,
            help="hash buckets the keys are sorted in; 0 (default): one per 2,048 input rows. "
            "Part of what decides the order, so it is recorded in the manifest",
        )

    @classmethod
    def from_args(cls, args, output: str, input_rows: int) -> WriteShards:
        """The transform for the flags; `input_rows` sizes the buckets when not given."""
        buckets = args.sort_buckets or max(1, -(-input_rows // ROWS_PER_BUCKET))
        return cls(
            output=output,
            samples_per_shard=args.samples_per_shard,
            buckets=buckets,
            max_caption_chars=args.max_caption_chars,
        )

    def expand(self, tables):
        work = storage.join(self.output, WORK_DIR)
        split = tables | "Split" >> beam.ParDo(
            _SplitTable(self.buckets, self.max_caption_chars, work)
        ).with_outputs(DEAD, COUNTS, KEYS, main="spilled")
        by_bucket = split.spilled | "GroupBuckets" >> beam.GroupByKey()
        offsets = (
            split[KEYS]
            | "GroupKeys" >> beam.GroupByKey()
            | "BucketSizes" >> beam.Map(_unique_keys)
            | "AllSizes" >> beam.combiners.ToList()
            | "Offsets" >> beam.Map(_offsets)
        )
        pieces = by_bucket | "Pieces" >> beam.ParDo(
            _BucketPieces(self.samples_per_shard, work, self.output),
            offsets=beam.pvalue.AsSingleton(offsets),
        ).with_outputs(DEAD, STATS, RECORDS, main="pieces")
        joined = (
            pieces.pieces
            | "GroupShards" >> beam.GroupByKey()
            | "JoinPieces" >> beam.ParDo(_JoinPieces(self.output))
        )
        records = (pieces[RECORDS], joined) | "AllShards" >> beam.Flatten()
        return {
            "records": records,
            STATS: pieces[STATS],
            COUNTS: split[COUNTS],
            DEAD: (split[DEAD], pieces[DEAD]) | "ShardDead" >> beam.Flatten(),
        }


def rows_to_tables(rows, batch_rows: int = 256):
    """A PCollection of figure-row dicts as Arrow tables, for WriteShards."""
    return (
        rows
        | "BatchRows" >> beam.BatchElements(min_batch_size=1, max_batch_size=batch_rows)
        | "ToTables"
        >> beam.Map(
            lambda batch: conform(
                pa.Table.from_pylist(
                    [{k: v for k, v in r.items() if k in WORK_SCHEMA.names} for r in batch]
                )
            )
        )
    )


def count_rows(files: list[str]) -> int:
    """Rows of Parquet files, from their footers."""
    total = 0
    for uri in files:
        source = open_native(uri)
        try:
            total += pq.ParquetFile(source).metadata.num_rows
        finally:
            if not isinstance(source, str):
                source.close()
    return total


def read_tables(files, batch_rows: int = 256):
    """A PCollection of Parquet file URIs as Arrow tables, for WriteShards."""
    return files | "ReadTables" >> beam.ParDo(_ReadTables(batch_rows))
