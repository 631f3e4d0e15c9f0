"""Shard stage: figure rows to WebDataset tar shards and Parquet per license group.

The input comes as units (Parquet files, or a source dataset's shards: shard_sources), taken
in sorted order. Within a license group, samples are ranked in (unit, row) order and shard
= rank // samples_per_shard; the same input therefore gives byte-identical shards whatever
the runner or the number of workers.

Two reads, one write. The first read takes only the columns that place a row (no image
bytes): it checks keys and captions, finds duplicate keys across the whole input, and counts
each unit's samples per group, which gives every unit the ranks of its samples (ShardPlan).
The second read streams each unit and writes the shards that lie wholly in it straight to
their final place; only a shard that straddles two units is written as pieces under
`<output>/_work/`, joined once all are there. Image bytes go from the Parquet reader's
buffers to the file without a copy, and never through the runner's shuffle.
"""

from __future__ import annotations

import argparse
import hashlib
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms import progress, storage
from transforms.outcomes import DEAD, dead
from transforms.pmc.licenses import GROUPS, OTHER
from transforms.records import (
    FIGURE_FILE_SCHEMA,
    ShardPlacement,
    arrow_schema,
)
from transforms.shard.plan import Candidate, ShardPlan, duplicates
from transforms.shard.samples import (
    DEFAULT_MAX_CAPTION_CHARS,
    SampleRejected,
    as_text,
    check_image_head,
    check_text,
    sample_json_parts,
)
from transforms.shard.sources import (
    ANNOTATION_NOT_FOUND,
    TEXT,
    TEXT_NOT_FOUND,
    TEXT_TYPE,
    text_column,
)
from transforms.shard.webdataset_tar import sample_parts
from transforms.shard.writer import TarStream
from transforms.sinks import footer_rows

STAGE = "shard"
DEFAULT_SAMPLES_PER_SHARD = 1000
# Keys per bucket of the duplicate search: what one worker holds to compare keys.
KEYS_PER_BUCKET = 200_000
WORK_DIR = "_work"  # shard pieces of a run in progress
COUNTS = "counts"  # (count name, n) pairs for the run report
# Samples written with an empty article_text: their articles file lacked the article.
TEXT_MISSING = "samples_without_article_text"
# Samples written with empty labels: their annotations file lacked their key.
LABELS_MISSING = "samples_without_annotation"
STATS = "stats"  # ((group, journal, year), n) for the dataset card
LABELS = "labels"  # ((group, "primary" | "source", value), n) for the dataset card
RECORDS = "records"  # ShardRecords of shards written whole by one unit
CANDIDATES = "candidates"  # (key bucket, [Candidate]) for the duplicate search

# Rows as the shard stage holds them: a figure row, its article's text (joined by the source;
# dictionary-encoded: one copy per article, not per figure) and the fixes made on the way.
WORK_SCHEMA = pa.schema(
    list(FIGURE_FILE_SCHEMA)
    + [pa.field(TEXT, TEXT_TYPE), arrow_schema(ShardPlacement).field("fixes")]
)
UNREADABLE = "unit_unreadable"  # an input file (or source shard) that cannot be read
# Reads of a unit before its failure is taken for damage (and dead-lettered), not a blip.
READ_ATTEMPTS = 3
RETRY_SECONDS = 0.25
DUPLICATE_DETAIL = (
    "another row has the same key; the one with the smaller image hash "
    "(then caption, then input position) is kept"
)


def _text(value) -> str:
    return as_text(value)[0]


def group_of(value) -> str:
    value = _text(value)
    return value if value in GROUPS else OTHER


def bucket_of(key: str, buckets: int) -> int:
    return int.from_bytes(hashlib.sha1(key.encode()).digest()[:4], "big") % buckets


def conform(table: pa.Table) -> pa.Table:
    """Any figure table in WORK_SCHEMA's columns: missing ones empty, others cast.

    `key` and `caption` keep their own type (bytes included): check_text reads them.
    """
    columns = []
    for field in WORK_SCHEMA:
        if field.name in table.column_names:
            column = table.column(field.name)
            if field.name == TEXT and column.type != field.type:
                # A figure file that still carries the text (an older extract): its
                # repeated values stored once from here on.
                column = pc.dictionary_encode(column.cast(pa.string()))
                column = column.cast(field.type)
            elif field.name not in ("key", "caption") and column.type != field.type:
                column = column.cast(field.type)
            columns.append(column)
        elif field.name == TEXT:
            columns.append(text_column([""] * table.num_rows))
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


def _column(table: pa.Table, name: str) -> list:
    return table.column(name).to_pylist() if name in table.column_names else [None] * len(table)


def _values(column: pa.ChunkedArray) -> list:
    """A column as Python values; a dictionary column's rows share one object per distinct
    value (to_pylist would make a copy of a megabyte text for each of its figures)."""
    if not pa.types.is_dictionary(column.type):
        return column.to_pylist()
    out, shared = [], {}
    for chunk in column.chunks:
        values = [shared.setdefault(v, v) for v in chunk.dictionary.to_pylist()]
        out.extend(None if i is None else values[i] for i in chunk.indices.to_pylist())
    return out


def _placement(table: pa.Table) -> tuple[list, list, list, list]:
    """(keys, captions, groups, sources) of a table as read, before any cast: both reads
    take them from here, so that both place every row alike."""
    groups = [group_of(g) for g in _column(table, "article_license_group")]
    sources = [_text(s) for s in _column(table, "image_source")]
    return _column(table, "key"), _column(table, "caption"), groups, sources


def _with_retries(read):
    """read(), tried again after a short wait when it raises: a transient storage error
    passes, a damaged file fails every time (and its last error is raised)."""
    for attempt in range(READ_ATTEMPTS):
        try:
            return read()
        except Exception:
            if attempt + 1 == READ_ATTEMPTS:
                raise
            time.sleep(RETRY_SECONDS * 2**attempt)


# ---- 1. check every row, without its image, and count where it goes -------------------------


class _PlaceUnit(beam.DoFn):
    """Light read of a unit: dead letters for rows no reader could take, duplicate-key
    candidates, and (unit, {group: rows that passed}) for the plan."""

    def __init__(self, source, max_caption_chars: int, key_buckets: int):
        self.source = source
        self.max_caption_chars, self.key_buckets = max_caption_chars, key_buckets

    def process(self, unit: str):
        try:
            table, counts = _with_retries(lambda: self.source.light(unit))
            keys, captions, groups, sources = _placement(table)
            hashes = [_text(h) for h in _column(table, "image_hash")]
        except Exception as err:  # an unreadable input file is bad input: data, not a crash
            yield beam.pvalue.TaggedOutput(COUNTS, (f"{STAGE}.in", 1))
            yield dead(STAGE, unit, UNREADABLE, f"{type(err).__name__}: {err}", unit)
        else:
            for count in counts:
                yield beam.pvalue.TaggedOutput(COUNTS, count)
            yield beam.pvalue.TaggedOutput(COUNTS, (f"{STAGE}.in", table.num_rows))
            yield from self._place(unit, keys, captions, groups, sources, hashes)

    def _place(self, unit: str, keys, captions, groups, sources, hashes):
        placed: Counter = Counter()
        buckets: dict[int, list[Candidate]] = defaultdict(list)
        rows = zip(keys, captions, groups, sources, hashes, strict=True)
        for row, (key, caption, group, source, image_hash) in enumerate(rows):
            try:
                safe, text, _ = check_text(key, caption, self.max_caption_chars)
            except SampleRejected as err:
                yield dead(STAGE, str(key), err.reason, err.detail, source)
                continue
            placed[group] += 1
            caption_digest = hashlib.sha1(text.encode()).hexdigest()
            buckets[bucket_of(safe, self.key_buckets)].append(
                Candidate(safe, image_hash, caption_digest, unit, row, group, source)
            )
        for bucket, candidates in buckets.items():
            yield beam.pvalue.TaggedOutput(CANDIDATES, (bucket, candidates))
        yield unit, dict(placed)


def _dropped(element):
    _, lists = element
    return duplicates([c for candidates in lists for c in candidates])


# ---- 2. every unit writes the shards it holds, and pieces of those it shares -----------------


def _image_views(column: pa.ChunkedArray) -> tuple[memoryview, np.ndarray]:
    """The image column's data buffer and value offsets: row i is view[off[i]:off[i + 1]],
    a view into Arrow's memory (so the bytes are copied once: into the file)."""
    array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if pa.types.is_large_binary(array.type):
        width = np.int64
    else:
        array, width = array.cast(pa.binary()), np.int32
    _, offsets, data = array.buffers()
    starts = np.frombuffer(
        offsets, dtype=width, count=len(array) + 1, offset=array.offset * width().itemsize
    )
    return (memoryview(data) if data is not None else memoryview(b"")), starts


class _UnitWrite:
    """Where one unit's write stands: next rank per group, open shard streams (with the
    unit rows they hold), and the rows whose outcome is settled (written or dead-lettered)."""

    def __init__(self, unit: str, plan: ShardPlan):
        self.unit, self.plan = unit, plan
        self.dropped = plan.dropped.get(unit, frozenset())
        self.rank = {group: plan.start.get((unit, group), 0) for group in GROUPS}
        self.streams: dict[str, tuple[int, TarStream, list[int]]] = {}
        self.settled: set[int] = set()


class _WriteUnit(beam.DoFn):
    """Full read of a unit: its whole shards written in place, pieces of the others spilled."""

    def __init__(self, source, per_shard: int, max_caption_chars: int, work: str, output: str):
        self.source, self.per_shard, self.max_caption_chars = source, per_shard, max_caption_chars
        self.work, self.output = work, output

    def process(self, unit: str, plan: ShardPlan):
        if unit not in plan.units:  # unreadable at the light read: dead-lettered there
            return
        for attempt in range(READ_ATTEMPTS):
            # Outputs wait for the attempt to end: a retried one must not emit pieces twice.
            # (Whole shards a failed attempt wrote are written identically by the next.)
            state, outputs = _UnitWrite(unit, plan), []
            error = self._write(state, outputs)
            if error is None or attempt + 1 == READ_ATTEMPTS:
                break
            time.sleep(RETRY_SECONDS * 2**attempt)
        yield from outputs
        if error is not None:
            yield from self._lost(state, error)

    def _write(self, state: _UnitWrite, outputs: list) -> Exception | None:
        """Write a unit's samples; the source's read error if it breaks (after aborting the
        open shards), None once all are written. A failed write raises: the runner retries
        the bundle."""
        tables, row = self.source.full(state.unit), 0
        try:
            while True:
                try:
                    raw = next(tables)
                    placement = _placement(raw)
                    table = conform(raw)
                except StopIteration:
                    break
                except Exception as err:  # damaged data (or a read that keeps failing)
                    return err
                outputs.extend(self._batch(state, table, placement, row))
                row += table.num_rows
            for group in list(state.streams):
                outputs.extend(self._close(state, group))
            return None
        finally:
            for _, stream, _ in state.streams.values():  # a failed unit leaves no file aside
                stream.abort()
            state.streams.clear()

    def _batch(self, state: _UnitWrite, table: pa.Table, placement: tuple, row: int):
        kept, keys, captions, fixes, ranks, groups = [], [], [], [], [], []
        raw = zip(
            *placement,
            _column(table, "fixes"),
            pc.binary_slice(table.column("image"), 0, 3).to_pylist(),
            strict=True,
        )
        for i, (key, caption, group, source, prior, head) in enumerate(raw):
            try:
                safe, text, made = check_text(key, caption, self.max_caption_chars)
            except SampleRejected:
                continue  # dead-lettered by the light read
            if row + i in state.dropped:
                continue  # a duplicate key: dead-lettered by the duplicate search
            place = state.rank[group]
            state.rank[group] += 1
            try:
                check_image_head(head)
            except SampleRejected as err:  # its place stays empty: a shard one short
                state.settled.add(row + i)
                yield dead(STAGE, safe, err.reason, err.detail, source)
                continue
            kept.append(i)
            ranks.append(place)
            keys.append(safe)
            captions.append(text)
            fixes.append([*(prior or []), *made])
            groups.append(group)
        if not kept:
            return
        for fix, count in ((TEXT_NOT_FOUND, TEXT_MISSING), (ANNOTATION_NOT_FOUND, LABELS_MISSING)):
            missing = sum(fix in made for made in fixes)
            if missing:
                yield beam.pvalue.TaggedOutput(COUNTS, (f"{STAGE}.{count}", missing))
        meta = table.drop_columns(["image"]).take(pa.array(kept, pa.int64()))
        for name, values in (("key", keys), ("caption", captions), ("fixes", fixes)):
            meta = meta.set_column(
                meta.schema.get_field_index(name),
                name,
                pa.array(values, WORK_SCHEMA.field(name).type),
            )
        jsons = sample_json_parts({name: _values(meta.column(name)) for name in meta.column_names})
        meta = meta.drop_columns([TEXT])  # in the JSON only: the index leaves it out
        view, starts = _image_views(table.column("image"))
        for j, i in enumerate(kept):
            group, number = groups[j], ranks[j] // self.per_shard
            if group in state.streams and state.streams[group][0] != number:
                yield from self._close(state, group)
            if group not in state.streams:
                stream = self._open(state.unit, group, number, ranks[j], state.plan)
                state.streams[group] = (number, stream, [])
            _, stream, rows = state.streams[group]
            image = view[starts[i] : starts[i + 1]]
            stream.add(meta, j, sample_parts(keys[j], image, jsons[j], captions[j].encode()))
            rows.append(row + i)

    def _lost(self, state: _UnitWrite, err: Exception):
        """Dead letters for the rows of a unit that broke mid-read and were not yet written
        (their keys from the light read, which worked before)."""
        table, _ = _with_retries(lambda: self.source.light(state.unit))
        keys, captions, _, sources = _placement(table)
        detail = f"{type(err).__name__}: {err}"
        rows = zip(keys, captions, sources, strict=True)
        for row, (key, caption, source) in enumerate(rows):
            if row in state.settled or row in state.dropped:
                continue
            try:
                safe, _, _ = check_text(key, caption, self.max_caption_chars)
            except SampleRejected:
                continue  # dead-lettered by the light read
            yield dead(STAGE, safe, UNREADABLE, detail, source or state.unit)

    def _open(self, unit: str, group: str, number: int, rank: int, plan: ShardPlan) -> TarStream:
        if plan.holds_whole(unit, group, number):
            return TarStream.for_shard(self.output, group, number)
        # A piece: a fresh name per write, so a retried bundle never reads a failed
        # attempt's file (only the paths a bundle outputs are read; the rest go with _work).
        place = storage.join(self.work, "pieces", group, f"{number:06d}", uuid.uuid4().hex)
        return TarStream(place + ".tar", first_rank=rank, hashed=False)

    def _close(self, state: _UnitWrite, group: str):
        number, stream, rows = state.streams[group]
        index = stream.index()
        stats = Counter(
            zip(
                index.column("article_journal").to_pylist(),
                index.column("article_year").to_pylist(),
                strict=True,
            )
        )
        if state.plan.holds_whole(state.unit, group, number):
            closed = [
                beam.pvalue.TaggedOutput(RECORDS, stream.close_shard(self.output, group, number))
            ]
        else:
            index_path = stream.uri.removesuffix(".tar") + ".arrow"
            storage.write_bytes(index_path, table_to_blob(stream.close_piece()))
            closed = [((group, number), (stream.first_rank, stream.uri, index_path))]
        del state.streams[group]  # closed: no longer the finally's to abort
        progress.tick("samples", index.num_rows)  # stderr progress of a local run
        progress.tick("shards", int(state.plan.holds_whole(state.unit, group, number)))
        state.settled.update(rows)
        for (journal, year), n in stats.items():
            yield beam.pvalue.TaggedOutput(STATS, ((group, journal or "", str(year or "")), n))
        for (what, value), n in label_counts(index).items():
            yield beam.pvalue.TaggedOutput(LABELS, ((group, what, value), n))
        yield from closed


def label_counts(index: pa.Table) -> Counter:
    """Label counts of a shard's rows for the card: ("source", label source) per sample,
    and ("primary", label) per primary label of a sample ("" where it has none)."""
    counts: Counter = Counter()
    sources = _column(index, "image_label_source")
    for source, labels in zip(sources, _column(index, "image_primary_label"), strict=True):
        counts[("source", source or "")] += 1
        for label in labels or [""]:
            counts[("primary", label or "")] += 1
    return counts


# ---- 3. join the pieces of each shard that straddles units -----------------------------------


class _JoinPieces(beam.DoFn):
    """Append the pieces of a shard, in rank order, to its tar, and close it."""

    def __init__(self, output: str):
        self.output = output

    def process(self, element):
        (group, number), pieces = element
        stream = TarStream.for_shard(self.output, group, number)
        try:
            for _, members, index in sorted(pieces, key=lambda piece: piece[0]):
                stream.add_piece(
                    storage.read_bytes(members), blob_to_table(storage.read_bytes(index))
                )
            yield stream.close_shard(self.output, group, number)
        except BaseException:
            stream.abort()
            raise


@dataclass
class WriteShards(beam.PTransform):
    """Units of a source in; ShardRecords, card stats (journals and years, labels), counts
    and dead letters out."""

    output: str
    source: object  # a shard_sources reader: light(unit) and full(unit)
    samples_per_shard: int = DEFAULT_SAMPLES_PER_SHARD
    max_caption_chars: int = DEFAULT_MAX_CAPTION_CHARS
    key_buckets: int = 1

    def __post_init__(self):
        super().__init__()
        if self.samples_per_shard < 1:
            raise ValueError("--samples_per_shard must be at least 1")
        if self.max_caption_chars < 1:
            raise ValueError("--max_caption_chars must be at least 1")

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("shard")
        group.add_argument(
            "--samples_per_shard",
            type=int,
            default=DEFAULT_SAMPLES_PER_SHARD,
            help="samples per tar shard (the last of a license group may hold fewer)",
        )
        group.add_argument(
            "--max_caption_chars",
            type=int,
            default=DEFAULT_MAX_CAPTION_CHARS,
            help="longer captions are cut at a word boundary (and say so)",
        )

    @classmethod
    def from_args(cls, args, output: str, source, input_rows: int) -> WriteShards:
        """The transform for the flags; `input_rows` sizes the duplicate search."""
        return cls(
            output=output,
            source=source,
            samples_per_shard=args.samples_per_shard,
            max_caption_chars=args.max_caption_chars,
            key_buckets=max(1, -(-input_rows // KEYS_PER_BUCKET)),
        )

    def expand(self, units):
        work = storage.join(self.output, WORK_DIR)
        # Units are few and heavy: spread them over workers before either read.
        units = units | "SpreadUnits" >> beam.Reshuffle()
        placed = units | "Place" >> beam.ParDo(
            _PlaceUnit(self.source, self.max_caption_chars, self.key_buckets)
        ).with_outputs(DEAD, COUNTS, CANDIDATES, main="placed")
        dropped = (
            placed[CANDIDATES]
            | "GroupKeys" >> beam.GroupByKey()
            | "Duplicates" >> beam.FlatMap(_dropped)
        )
        per_shard = self.samples_per_shard
        plan = (
            placed.placed
            | "AllCounts" >> beam.combiners.ToList()
            | "Plan"
            >> beam.Map(
                lambda counts, dropped: ShardPlan.build(per_shard, counts, dropped),
                dropped=beam.pvalue.AsList(dropped),
            )
        )
        written = units | "Write" >> beam.ParDo(
            _WriteUnit(self.source, per_shard, self.max_caption_chars, work, self.output),
            plan=beam.pvalue.AsSingleton(plan),
        ).with_outputs(DEAD, STATS, LABELS, RECORDS, COUNTS, main="pieces")
        joined = (
            written.pieces
            | "GroupPieces" >> beam.GroupByKey()
            | "JoinPieces" >> beam.ParDo(_JoinPieces(self.output))
        )
        duplicate_dead = dropped | "DuplicateDead" >> beam.Map(
            lambda c: dead(STAGE, c.key, "duplicate_key", DUPLICATE_DETAIL, c.source).value
        )
        return {
            "records": (written[RECORDS], joined) | "AllShards" >> beam.Flatten(),
            STATS: written[STATS],
            LABELS: written[LABELS],
            COUNTS: (placed[COUNTS], written[COUNTS]) | "ShardCounts" >> beam.Flatten(),
            DEAD: (placed[DEAD], duplicate_dead, written[DEAD]) | "ShardDead" >> beam.Flatten(),
        }


def count_rows(files: list[str]) -> int:
    """Rows of Parquet files, from their footers (an unreadable file counts none here; the
    job dead-letters it)."""
    return sum(footer_rows(uri) or 0 for uri in files)
