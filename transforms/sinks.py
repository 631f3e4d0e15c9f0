"""Writers for the extract stage's outputs: Parquet tables and dead-letter JSON lines."""

from __future__ import annotations

import hashlib
import json
import re
from collections import OrderedDict
from dataclasses import dataclass

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from transforms import article_files, storage
from transforms.records import as_row

# Free text: min/max statistics of these would be long strings no filter uses.
_TEXT_COLUMNS = frozenset(
    {"caption", "article_title", "article_abstract", "article_text", "article_citation"}
)


def parquet_options(schema: pa.Schema) -> dict:
    """ParquetWriter options: binary payloads (JPEG, already compressed) stored plain;
    statistics only for short scalar columns.

    Dictionary-encoding and compressing image bytes costs time on write and twice the time
    on read, for no gain in size. Statistics of free text and lists were most of the footer
    (15 MB for 65,000 figures), which every reader decodes and holds while it reads.
    """
    payload = {f.name for f in schema if f.type == pa.binary()}
    return {
        "use_dictionary": [f.name for f in schema if f.name not in payload],
        "compression": {f.name: "NONE" if f.name in payload else "ZSTD" for f in schema},
        "write_statistics": [
            f.name
            for f in schema
            if f.name not in payload
            and f.name not in _TEXT_COLUMNS
            and not pa.types.is_list(f.type)
        ],
    }


def open_native(uri: str):
    """A local path as is (pyarrow's native reader is twice as fast), anything else via Beam."""
    return uri if "://" not in uri else FileSystems.open(uri, compression_type="uncompressed")


def _commit(aside: str, final: str) -> None:
    if FileSystems.exists(final):
        FileSystems.delete([final])
    FileSystems.rename([aside], [final])


def _held_bytes(row: dict) -> int:
    return sum(len(v) for v in row.values() if isinstance(v, (bytes, str)))


class _Stage(beam.DoFn):
    """Rows to staging files: one per (bundle, output file) the bundle touches, named by a
    fresh id and moved into place whole; outputs (file index, staged path).

    A retried bundle writes new files; only the names this step outputs are read later, so a
    failed attempt's file is never used (and goes with the staging folder). All buffers are
    written out together once what they hold reaches the bound, so a bundle holds at most
    `batch_rows` rows (or `batch_bytes`) however many output files there are.
    """

    def __init__(self, staging: str, schema: pa.Schema, batch_rows: int, batch_bytes: int):
        self.staging, self.schema = staging, schema
        self.batch_rows, self.batch_bytes = batch_rows, batch_bytes

    def start_bundle(self):
        self.buffers: dict[int, list[dict]] = {}
        self.writers: dict[int, tuple] = {}
        self.rows = self.bytes = 0

    def process(self, record, count: int):
        row = record if isinstance(record, dict) else as_row(record)
        ident = article_files.article_id(*(row.get(c) for c in article_files.ARTICLE_ID_COLUMNS))
        self.buffers.setdefault(article_files.file_index(ident, count), []).append(row)
        self.rows += 1
        self.bytes += _held_bytes(row)
        if self.rows >= self.batch_rows or self.bytes >= self.batch_bytes:
            self._flush()

    def _flush(self):
        for index, rows in sorted(self.buffers.items()):
            if index not in self.writers:
                self.writers[index] = self._open(index)
            self.writers[index][2].write_table(pa.Table.from_pylist(rows, schema=self.schema))
        self.buffers, self.rows, self.bytes = {}, 0, 0

    def _open(self, index: int) -> tuple:
        import uuid

        name = f"{index:05d}-{uuid.uuid4().hex}.parquet"
        paths = (
            storage.join(self.staging, f"_{name}.inprogress"),
            storage.join(self.staging, name),
        )
        if "://" not in self.staging:
            import os

            os.makedirs(self.staging, exist_ok=True)
        sink = FileSystems.create(paths[0], compression_type="uncompressed")
        return paths, sink, pq.ParquetWriter(sink, self.schema, **parquet_options(self.schema))

    def finish_bundle(self):
        from apache_beam.transforms.window import GlobalWindows

        self._flush()
        for index, (paths, sink, writer) in sorted(self.writers.items()):
            writer.close()
            sink.close()
            FileSystems.rename([paths[0]], [paths[1]])
            yield GlobalWindows.windowed_value((index, paths[1]))


_DIGITS = re.compile(r"\d+|\D+")


def natural(text) -> tuple:
    """Sort key of a figure key with its numbers in numeric order (F2 before F10), which is
    mostly the order of the figures in the article. Digit runs compare by length, then
    text: no int() of a hostile million-digit id."""
    if not isinstance(text, str):
        return ((2, 0, repr(text)),)
    return tuple(
        (0, len(part), part) if part[0].isdigit() else (1, 0, part)
        for part in _DIGITS.findall(text)
    )


def figure_order(values: dict) -> tuple:
    """Where a figure row lies in its file: its article, then its key in natural order
    (then what tells two rows with one key apart)."""
    sortable = article_files.sortable
    return (
        article_files.article_id(*(values[c] for c in article_files.ARTICLE_ID_COLUMNS)),
        natural(values["key"]),
        *(sortable(values[c]) for c in ("key", "image_hash", "caption", "image_source")),
    )


def article_order(values: dict) -> tuple:
    return article_files.article_id(*(values[c] for c in article_files.ARTICLE_ID_COLUMNS))


FIGURE_ORDER = (
    figure_order,
    (*article_files.ARTICLE_ID_COLUMNS, "key", "image_hash", "caption", "image_source"),
)
ARTICLE_ORDER = (article_order, article_files.ARTICLE_ID_COLUMNS)


class _RowGroups:
    """Row groups of staged files, read on demand and kept while they fit in `limit` bytes
    (least recently used out first): rows are taken in sorted order, which mostly walks
    each staged file forward, so a row group is read about once."""

    def __init__(self, uris: list[str], limit: int):
        self.uris, self.limit = uris, limit
        self.files: dict[int, tuple] = {}
        self.cache: OrderedDict = OrderedDict()
        self.held = 0

    def file(self, f: int) -> pq.ParquetFile:
        if f not in self.files:
            source = open_native(self.uris[f])
            # pre_buffer caches every range read until the file closes: memory grows with it.
            self.files[f] = (source, pq.ParquetFile(source, pre_buffer=False))
        return self.files[f][1]

    def get(self, f: int, group: int) -> pa.Table:
        if (f, group) in self.cache:
            self.cache.move_to_end((f, group))
            return self.cache[(f, group)]
        table = self.file(f).read_row_group(group)
        self.cache[(f, group)] = table
        self.held += table.nbytes
        while self.held > self.limit and len(self.cache) > 1:
            _, old = self.cache.popitem(last=False)
            self.held -= old.nbytes
        return table

    def close(self):
        for source, _ in self.files.values():
            if not isinstance(source, str):
                source.close()


class _WriteFile(beam.DoFn):
    """One output file from its staged pieces: rows sorted by content, less the dropped keys.

    A first read takes only the sort columns; the rows are then copied in that order, a
    batch at a time, from row groups read on demand: a file's rows never wait in memory all
    together. The file appears under its name only once complete (written aside, renamed).
    """

    def __init__(self, directory: str, schema: pa.Schema, order, batch_rows: int):
        self.directory, self.schema, self.order, self.batch_rows = (
            directory,
            schema,
            order,
            batch_rows,
        )

    def process(self, element, count: int, dropped=None):
        index, staged = element
        staged = sorted(staged)
        groups = _RowGroups(staged, 256 * 1024 * 1024)
        try:
            places = self._places(groups, staged, dropped or {})
            if places:
                self._copy(groups, places, article_files.file_name(index, count))
        finally:
            groups.close()
        yield len(places)

    def _places(self, groups: _RowGroups, staged: list[str], dropped) -> list[tuple]:
        """(sort key, staged file, row group, row) of every row kept, in output order."""
        order, columns = self.order
        places = []
        for f in range(len(staged)):
            handle = groups.file(f)
            for group in range(handle.num_row_groups):
                table = handle.read_row_group(group, columns=list(columns))
                values = {c: table.column(c).to_pylist() for c in columns}
                for row in range(table.num_rows):
                    current = {c: values[c][row] for c in columns}
                    if dropped and current.get("key") in dropped:
                        continue
                    places.append((order(current), f, group, row))
        places.sort(key=lambda place: place[0])
        return places

    def _copy(self, groups: _RowGroups, places: list[tuple], name: str) -> None:
        final = storage.join(self.directory, name)
        aside = storage.join(self.directory, f"_{name}.inprogress")
        with FileSystems.create(aside, compression_type="uncompressed") as sink:
            with pq.ParquetWriter(sink, self.schema, **parquet_options(self.schema)) as writer:
                for start in range(0, len(places), self.batch_rows):
                    batch = places[start : start + self.batch_rows]
                    parts, run = [], []
                    for _, f, group, row in batch:
                        if run and run[0][:2] != (f, group):
                            parts.append(self._take(groups, run))
                            run = []
                        run.append((f, group, row))
                    parts.append(self._take(groups, run))
                    writer.write_table(pa.concat_tables(parts))
        _commit(aside, final)

    def _take(self, groups: _RowGroups, run: list[tuple]) -> pa.Table:
        f, group, _ = run[0]
        rows = pa.array([row for _, _, row in run], pa.int64())
        return groups.get(f, group).take(rows)


@dataclass
class WriteArticleFiles(beam.PTransform):
    """Rows of articles (or their figures) to `directory/part-<i>-of-<n>.parquet`, each
    article's rows in the file its PMCID and version hash to, sorted by content; less the
    rows whose key is in the `dropped` side input, if any. Outputs the rows kept per file.

    Rows are staged first (per bundle and file), so that rows with images never wait in
    memory for the (global) list of dropped keys, then each file is copied out of its
    staged pieces in order. `count` is the number of files, a singleton PCollection.
    """

    directory: str
    staging: str
    schema: pa.Schema
    count: beam.pvalue.PCollection
    order: tuple = FIGURE_ORDER
    dropped: beam.pvalue.PCollection | None = None  # (key, anything) pairs
    # Rows per row group, and per batch held: fewer, larger groups keep the footer (which
    # every reader decodes and holds) small; 256 figures are about 20 MB of images.
    batch_rows: int = 256
    batch_bytes: int = 64 * 1024 * 1024

    def __post_init__(self):
        super().__init__()

    def expand(self, rows):
        count = beam.pvalue.AsSingleton(self.count)
        staged = rows | "Stage" >> beam.ParDo(
            _Stage(self.staging, self.schema, self.batch_rows, self.batch_bytes), count
        )
        sides = {"count": count}
        if self.dropped is not None:
            sides["dropped"] = beam.pvalue.AsDict(self.dropped)
        return (
            staged
            | "ByFile" >> beam.GroupByKey()
            | "Write"
            >> beam.ParDo(
                _WriteFile(self.directory, self.schema, self.order, self.batch_rows), **sides
            )
        )


@dataclass
class WriteSortedTable(beam.PTransform):
    """Small records to one Parquet file, `directory/part-00000-of-00001.parquet`, sorted by
    `sort_key` (whatever order they came in)."""

    directory: str
    schema: pa.Schema
    sort_key: object  # row dict -> sortable

    def __post_init__(self):
        super().__init__()

    def expand(self, records):
        return (
            records
            | "AsRows" >> beam.Map(lambda r: r if isinstance(r, dict) else as_row(r))
            | "All" >> beam.combiners.ToList()
            | "Write" >> beam.Map(_write_sorted, self.directory, self.schema, self.sort_key)
        )


def _write_sorted(rows: list[dict], directory: str, schema: pa.Schema, sort_key) -> int:
    rows = sorted(rows, key=sort_key)
    name = article_files.file_name(0, 1)
    if "://" not in directory:
        import os

        os.makedirs(directory, exist_ok=True)
    aside = storage.join(directory, f"_{name}.inprogress")
    with FileSystems.create(aside, compression_type="uncompressed") as sink:
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), sink, **parquet_options(schema))
    _commit(aside, storage.join(directory, name))
    return len(rows)


# Dead letters per file: a file's lines are sorted in one worker.
DEAD_LETTERS_PER_FILE = 100_000


def _dead_letter_file(line: str, count: int) -> int:
    return int.from_bytes(hashlib.sha256(line.encode()).digest()[:8], "big") % count


class _WriteLines(beam.DoFn):
    def __init__(self, directory: str):
        self.directory = directory

    def process(self, element, count: int):
        index, lines = element
        name = f"dead_letters-{index:05d}-of-{count:05d}.jsonl"
        if "://" not in self.directory:
            import os

            os.makedirs(self.directory, exist_ok=True)
        aside = storage.join(self.directory, f"_{name}.inprogress")
        with FileSystems.create(aside, compression_type="uncompressed") as sink:
            for line in sorted(lines):
                sink.write(line.encode() + b"\n")
        _commit(aside, storage.join(self.directory, name))
        yield name


@dataclass
class WriteDeadLetters(beam.PTransform):
    """Dead letters to `<directory>/dead_letters-<i>-of-<n>.jsonl`, one JSON object a line,
    sorted: the same dead letters give the same files on any runner."""

    directory: str

    def __post_init__(self):
        super().__init__()

    def expand(self, dead_letters):
        lines = dead_letters | "Json" >> beam.Map(
            lambda d: json.dumps(as_row(d), ensure_ascii=False, sort_keys=True)
        )
        count = beam.pvalue.AsSingleton(
            lines
            | "Count" >> beam.combiners.Count.Globally()
            | "Files" >> beam.Map(lambda n: max(1, -(-n // DEAD_LETTERS_PER_FILE)))
        )
        return (
            lines
            | "ToFile" >> beam.Map(lambda line, n: (_dead_letter_file(line, n), line), count)
            | "ByFile" >> beam.GroupByKey()
            | "Lines" >> beam.ParDo(_WriteLines(self.directory), count)
        )
