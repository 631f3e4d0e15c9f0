"""Writers for the extract stage's outputs: Parquet tables and dead-letter JSON lines."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections import OrderedDict
from collections.abc import Iterator
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
    # Image bytes, and embedding vectors (fixed-size lists of floats: neither repeat nor
    # compress, and min/max of a vector's floats tells a reader nothing).
    payload = {
        f.name for f in schema if f.type == pa.binary() or pa.types.is_fixed_size_list(f.type)
    }
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


@contextlib.contextmanager
def parquet_file(uri: str) -> Iterator[pq.ParquetFile]:
    """A Parquet file opened for reading, never pre-buffered (pre-buffering keeps every
    range it read until the file is closed); closed on leaving the block."""
    source = open_native(uri)
    try:
        yield pq.ParquetFile(source, pre_buffer=False)
    finally:
        if not isinstance(source, str):
            source.close()


def footer_rows(uri: str) -> int | None:
    """A Parquet file's rows, from its footer alone; None where it cannot be read (the job
    that reads it dead-letters it)."""
    try:
        with parquet_file(uri) as handle:
            return handle.metadata.num_rows
    except (OSError, ValueError, pa.ArrowException):
        return None


def read_parquet(uri: str, columns=None, batch_rows: int | None = None) -> Iterator[pa.Table]:
    """A Parquet file whole (or in batches of `batch_rows`), only `columns` of them that it
    has; the file is closed when the generator ends."""
    with parquet_file(uri) as handle:
        if columns is not None:
            present = set(handle.schema_arrow.names)
            columns = [c for c in columns if c in present]
        if batch_rows is None:
            yield handle.read(columns=columns)
            return
        for batch in handle.iter_batches(batch_rows, columns=columns):
            yield pa.Table.from_batches([batch])


def write_parquet(uri: str, table: pa.Table, guard=None) -> None:
    """A table to `uri`, written aside and moved into place (checking the run's lock first,
    see _commit): no reader ever sees a partial file under the final name."""
    directory, name = uri.rsplit("/", 1)
    if "://" not in directory:
        import os

        os.makedirs(directory, exist_ok=True)
    aside = storage.join(directory, f"_{name}.inprogress")
    with FileSystems.create(aside, compression_type="uncompressed") as sink:
        pq.write_table(table, sink, **parquet_options(table.schema))
    _commit(aside, uri, guard)


def _commit(aside: str, final: str, guard=None) -> None:
    """Move a finished file into place; `guard` (run_lock.Guard) first checks that this run
    still holds the output, so a run that lost its lock never replaces another's file."""
    if guard is not None:
        guard()
    if FileSystems.exists(final):
        FileSystems.delete([final])
    FileSystems.rename([aside], [final])


def _held_bytes(row: dict) -> int:
    return sum(len(v) for v in row.values() if isinstance(v, (bytes, str)))


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


def _article(row: dict) -> tuple:
    return article_files.article_id(*(row.get(c) for c in article_files.ARTICLE_ID_COLUMNS))


def _digest(value) -> str:
    """A short stand-in for a long value in a sort key (it only breaks ties)."""
    data = value if isinstance(value, bytes) else str(value).encode("utf-8", "replace")
    return hashlib.sha1(data).hexdigest()[:16]


def figure_order(row: dict) -> tuple:
    """Where a figure row lies in its file: its article, then its key in natural order
    (then what tells two rows with one key apart)."""
    sortable = article_files.sortable
    return (
        _article(row),
        natural(row.get("key")),
        sortable(row.get("key")),
        sortable(row.get("image_hash")),
        _digest(row.get("caption")),
        sortable(row.get("image_source")),
    )


def article_order(row: dict) -> tuple:
    # Two rows of one article id (an <articles> wrapper naming one PMCID twice): by title.
    return (_article(row), article_files.sortable(row.get("article_title")))


class _Stage(beam.DoFn):
    """Rows to staging files: one Arrow IPC file per bundle, named by a fresh id and moved
    into place whole. Outputs, per output file the bundle touches, (file index, (staged
    path, [(sort key, batch, row, key, bytes)])): where each of its rows lies in the staged
    file, whose other batches belong to other output files.

    One open writer per bundle, however many output files (all of PMC is thousands; on GCS
    each open writer holds an upload buffer). A retried bundle writes a new file; only the
    names this step outputs are read later, so a failed attempt's file is never used (and
    goes with the staging folder). Buffers are written out together once what they hold
    reaches the bound, so a bundle holds at most `batch_rows` rows (or `batch_bytes`). Each
    record batch holds one article's rows (or part of them): the copy reads an article at a
    time, and only the batches of its own file (the IPC file format reads batches at random).
    """

    def __init__(self, staging: str, schema: pa.Schema, order, limits: tuple[int, int]):
        self.staging, self.schema, self.order = staging, schema, order
        self.batch_rows, self.batch_bytes = limits

    def start_bundle(self):
        self.buffers: dict[int, list[dict]] = {}
        self.places: dict[int, list] = {}  # output file index: places of its rows
        self.file = None  # [paths, sink, writer, batches written]
        self.rows = self.bytes = 0

    def process(self, record, count: int):
        row = record if isinstance(record, dict) else as_row(record)
        self.buffers.setdefault(article_files.file_index(_article(row), count), []).append(row)
        self.rows += 1
        self.bytes += _held_bytes(row)
        if self.rows >= self.batch_rows or self.bytes >= self.batch_bytes:
            self._flush()

    def _flush(self):
        if self.buffers and self.file is None:
            self.file = self._open()
        for index, rows in sorted(self.buffers.items()):
            places = self.places.setdefault(index, [])
            # One conversion per buffer (a conversion costs per call), one batch per article.
            table = pa.RecordBatch.from_pylist(rows, schema=self.schema)
            start = 0
            for end in range(1, len(rows) + 1):
                if end == len(rows) or _article(rows[end]) != _article(rows[start]):
                    self.file[2].write_batch(table.slice(start, end - start))
                    places += [
                        (self.order(row), self.file[3], i, row.get("key"), _held_bytes(row))
                        for i, row in enumerate(rows[start:end])
                    ]
                    self.file[3] += 1
                    start = end
        self.buffers, self.rows, self.bytes = {}, 0, 0

    def _open(self) -> list:
        import uuid

        name = f"{uuid.uuid4().hex}.arrow"
        paths = (
            storage.join(self.staging, f"_{name}.inprogress"),
            storage.join(self.staging, name),
        )
        if "://" not in self.staging:
            import os

            os.makedirs(self.staging, exist_ok=True)
        sink = FileSystems.create(paths[0], compression_type="uncompressed")
        return [paths, sink, pa.ipc.new_file(sink, self.schema), 0]

    def finish_bundle(self):
        from apache_beam.transforms.window import GlobalWindows

        self._flush()
        if self.file is None:
            return
        paths, sink, writer, _ = self.file
        writer.close()
        sink.close()
        FileSystems.rename([paths[0]], [paths[1]])
        for index, places in sorted(self.places.items()):
            yield GlobalWindows.windowed_value((index, (paths[1], places)))


# Staged batches kept for reuse: rows are taken article by article, so a batch is mostly
# needed once; this only spares re-reads where an article's figures straddle batches.
BATCH_CACHE_BYTES = 64 * 1024 * 1024


class _Batches:
    """Record batches of staged files, read on demand and kept while they fit in `limit`
    bytes (least recently used out first). A batch is one article's rows, and rows are
    taken article by article: a batch is read about once."""

    def __init__(self, uris: list[str], limit: int):
        self.uris, self.limit = uris, limit
        self.files: dict[int, tuple] = {}
        self.cache: OrderedDict = OrderedDict()
        self.held = 0

    def _file(self, f: int) -> pa.ipc.RecordBatchFileReader:
        if f not in self.files:
            uri = self.uris[f]
            # Read, not memory-mapped: a mapping keeps every page it touched resident.
            source = pa.OSFile(uri) if "://" not in uri else FileSystems.open(uri)
            self.files[f] = (source, pa.ipc.open_file(source))
        return self.files[f][1]

    def get(self, f: int, batch: int) -> pa.RecordBatch:
        if (f, batch) in self.cache:
            self.cache.move_to_end((f, batch))
            return self.cache[(f, batch)]
        found = self._file(f).get_batch(batch)
        self.cache[(f, batch)] = found
        self.held += found.nbytes
        while self.held > self.limit and len(self.cache) > 1:
            _, old = self.cache.popitem(last=False)
            self.held -= old.nbytes
        return found

    def close(self):
        for source, _ in self.files.values():
            source.close()


class _WriteFile(beam.DoFn):
    """One output file from its staged pieces: rows sorted by content, less the dropped keys.

    The order comes from the places the staging step sent along (no image read to decide);
    the rows are then copied in that order, a batch at a time, from staged record batches
    read on demand: a file's rows never wait in memory all together. The file appears under
    its name only once complete (written aside, renamed).
    """

    def __init__(self, directory: str, schema: pa.Schema, limits: tuple[int, int], guard=None):
        self.directory, self.schema, self.guard = directory, schema, guard
        self.batch_rows, self.batch_bytes = limits

    def process(self, element, count: int, dropped=None):
        index, pieces = element
        pieces = sorted(pieces, key=lambda piece: piece[0])
        places = [
            (order, f, batch, row, size)
            for f, (_, entries) in enumerate(pieces)
            for order, batch, row, key, size in entries
            if not (dropped and key in dropped)
        ]
        places.sort(key=lambda place: place[0])
        if places:
            batches = _Batches([uri for uri, _ in pieces], BATCH_CACHE_BYTES)
            try:
                self._copy(batches, places, article_files.file_name(index, count))
            finally:
                batches.close()
        yield len(places)

    def _copy(self, batches: _Batches, places: list[tuple], name: str) -> None:
        final = storage.join(self.directory, name)
        aside = storage.join(self.directory, f"_{name}.inprogress")
        if "://" not in self.directory:
            import os

            os.makedirs(self.directory, exist_ok=True)
        with FileSystems.create(aside, compression_type="uncompressed") as sink:
            with pq.ParquetWriter(sink, self.schema, **parquet_options(self.schema)) as writer:
                for group in self._row_groups(places):
                    parts, run = [], []
                    for _, f, batch, row, _ in group:
                        if run and run[0][:2] != (f, batch):
                            parts.append(self._take(batches, run))
                            run = []
                        run.append((f, batch, row))
                    parts.append(self._take(batches, run))
                    # The writer's pages follow the chunks, and how staging happened to cut
                    # the rows must not show in the bytes: one chunk a row (no copy, unlike
                    # one chunk for all).
                    rows = [part.slice(i, 1) for part in parts for i in range(part.num_rows)]
                    writer.write_table(pa.Table.from_batches(rows, schema=self.schema))
        _commit(aside, final, self.guard)

    def _row_groups(self, places: list[tuple]):
        """Consecutive places cut by their rows' content: at most batch_rows rows, and
        batch_bytes bytes (a megabyte text is one row of an article file)."""
        group, held = [], 0
        for place in places:
            if group and (len(group) >= self.batch_rows or held + place[4] > self.batch_bytes):
                yield group
                group, held = [], 0
            group.append(place)
            held += place[4]
        if group:
            yield group

    def _take(self, batches: _Batches, run: list[tuple]) -> pa.RecordBatch:
        f, batch, _ = run[0]
        found, rows = batches.get(f, batch), [row for _, _, row in run]
        if rows == list(range(found.num_rows)):
            return found  # the whole batch in its order: the common case, no copy
        return found.take(pa.array(rows, pa.int64()))


@dataclass
class WriteArticleFiles(beam.PTransform):
    """Rows of articles (or their figures) to `directory/part-<i>-of-<n>.parquet`, each
    article's rows in the file its PMCID and version hash to, sorted by content; less the
    rows whose key is in the `dropped` side input, if any. Outputs the rows kept per file.

    Rows are staged first (per bundle and file), so that rows with images never wait in
    memory for the (global) list of dropped keys, then each file is copied out of its
    staged pieces in order; only where rows lie (sort key, key) goes through the shuffle.
    `count` is the number of files, a singleton PCollection.
    """

    directory: str
    staging: str
    schema: pa.Schema
    count: beam.pvalue.PCollection
    order: object = figure_order  # row dict -> sort key within a file
    dropped: beam.pvalue.PCollection | None = None  # (key, anything) pairs
    # Rows per row group, and per batch held: fewer, larger groups keep the footer (which
    # every reader decodes and holds) small; 256 figures are about 20 MB of images.
    batch_rows: int = 256
    batch_bytes: int = 64 * 1024 * 1024
    guard: object = None  # run_lock.Guard, checked before each final move

    def __post_init__(self):
        super().__init__()

    def expand(self, rows):
        count = beam.pvalue.AsSingleton(self.count)
        staged = rows | "Stage" >> beam.ParDo(
            _Stage(self.staging, self.schema, self.order, (self.batch_rows, self.batch_bytes)),
            count,
        )
        sides = {"count": count}
        if self.dropped is not None:
            sides["dropped"] = beam.pvalue.AsDict(self.dropped)
        return (
            staged
            | "ByFile" >> beam.GroupByKey()
            | "Write"
            >> beam.ParDo(
                _WriteFile(
                    self.directory, self.schema, (self.batch_rows, self.batch_bytes), self.guard
                ),
                **sides,
            )
        )


# Rows per file of a sorted table: a file's rows are sorted in one worker.
SORTED_ROWS_PER_FILE = 100_000


def _sorted_file(row: dict, sort_key, count: int) -> int:
    data = repr(sort_key(row)).encode("utf-8", "replace")
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big") % count


def _tie_break(row: dict) -> str:
    return json.dumps(row, sort_keys=True, default=_digest)


@dataclass
class WriteSortedTable(beam.PTransform):
    """Small records to `directory/part-<i>-of-<n>.parquet`, like the dead letters: each
    row's `sort_key` hashes it to one of n files (n from the count), each file sorted by
    `sort_key` on its own, so no worker holds them all and the same records give the same
    files whatever order they came in. No records: one empty file (readers find the table)."""

    directory: str
    schema: pa.Schema
    sort_key: object  # row dict -> sortable; its repr() places the row
    rows_per_file: int = SORTED_ROWS_PER_FILE
    guard: object = None  # run_lock.Guard, checked before each final move

    def __post_init__(self):
        super().__init__()

    def expand(self, records):
        rows = records | "AsRows" >> beam.Map(lambda r: r if isinstance(r, dict) else as_row(r))
        total = rows | "Count" >> beam.combiners.Count.Globally()
        per_file = self.rows_per_file
        count = beam.pvalue.AsSingleton(
            total | "Files" >> beam.Map(lambda n: max(1, -(-n // per_file)))
        )
        sort_key = self.sort_key
        write = (self.directory, self.schema, self.sort_key, self.guard)
        total | "Empty" >> beam.FlatMap(
            lambda n: [_write_sorted([], 0, 1, *write)] if not n else []
        )
        return (
            rows
            | "ToFile" >> beam.Map(lambda r, n: (_sorted_file(r, sort_key, n), r), count)
            | "ByFile" >> beam.GroupByKey()
            | "Write" >> beam.Map(lambda part, n: _write_sorted(part[1], part[0], n, *write), count)
        )


def _write_sorted(
    rows, index: int, count: int, directory: str, schema: pa.Schema, sort_key, guard=None
) -> int:
    rows = sorted(rows, key=lambda row: (sort_key(row), _tie_break(row)))
    name = article_files.file_name(index, count)
    if "://" not in directory:
        import os

        os.makedirs(directory, exist_ok=True)
    aside = storage.join(directory, f"_{name}.inprogress")
    with FileSystems.create(aside, compression_type="uncompressed") as sink:
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), sink, **parquet_options(schema))
    _commit(aside, storage.join(directory, name), guard)
    return len(rows)


# Dead letters per file: a file's lines are sorted in one worker.
DEAD_LETTERS_PER_FILE = 100_000


def _dead_letter_file(line: str, count: int) -> int:
    return int.from_bytes(hashlib.sha256(line.encode()).digest()[:8], "big") % count


class _WriteLines(beam.DoFn):
    def __init__(self, directory: str, name: str, guard=None):
        self.directory, self.name, self.guard = directory, name, guard

    def process(self, element, count: int):
        index, lines = element
        name = f"{self.name}-{index:05d}-of-{count:05d}.jsonl"
        if "://" not in self.directory:
            import os

            os.makedirs(self.directory, exist_ok=True)
        aside = storage.join(self.directory, f"_{name}.inprogress")
        with FileSystems.create(aside, compression_type="uncompressed") as sink:
            for line in sorted(lines):
                sink.write(line.encode() + b"\n")
        _commit(aside, storage.join(self.directory, name), self.guard)
        yield name


@dataclass
class WriteDeadLetters(beam.PTransform):
    """Records to `<directory>/<name>-<i>-of-<n>.jsonl`, one JSON object a line, sorted:
    the same records give the same files on any runner. Dead letters, and filtered records
    with `name="filtered"`."""

    directory: str
    name: str = "dead_letters"
    guard: object = None  # run_lock.Guard, checked before each final move

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
            | "Lines" >> beam.ParDo(_WriteLines(self.directory, self.name, self.guard), count)
        )
