"""Writers for the extract stage's outputs: Parquet tables and dead-letter JSON lines."""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from transforms import storage
from transforms.records import as_row


@dataclass
class WriteTable(beam.PTransform):
    """Records (dataclasses or dicts) to Parquet files `<directory>/part-*.parquet`."""

    directory: str
    schema: pa.Schema
    batch_rows: int = 1000  # rows per Arrow batch: keep small where rows hold images

    def __post_init__(self):
        super().__init__()

    def expand(self, records):
        return (
            records
            | "AsRows" >> beam.Map(lambda r: r if isinstance(r, dict) else as_row(r))
            | "Parquet"
            >> beam.io.WriteToParquet(
                storage.join(self.directory, "part"),
                self.schema,
                file_name_suffix=".parquet",
                record_batch_size=self.batch_rows,
                row_group_buffer_size=32 * 1024 * 1024,
            )
        )


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


class _WriteBundles(beam.DoFn):
    """Rows to one Parquet file per bundle, named by a fresh id and moved into place whole.

    A retried bundle writes a new file; only the names this step outputs are read later, so a
    failed attempt's file is never used (and goes with the staging folder).
    """

    def __init__(self, directory: str, schema: pa.Schema, batch_rows: int):
        self.directory, self.schema, self.batch_rows = directory, schema, batch_rows

    def start_bundle(self):
        self.rows, self.writer, self.sink, self.paths = [], None, None, None

    def process(self, row):
        self.rows.append(row)
        if len(self.rows) >= self.batch_rows:
            self._write()

    def _write(self):
        if self.writer is None:
            import uuid

            name = f"part-{uuid.uuid4().hex}.parquet"
            self.paths = (
                storage.join(self.directory, f"_{name}.inprogress"),
                storage.join(self.directory, name),
            )
            if "://" not in self.directory:
                import os

                os.makedirs(self.directory, exist_ok=True)
            self.sink = FileSystems.create(self.paths[0], compression_type="uncompressed")
            self.writer = pq.ParquetWriter(self.sink, self.schema, **parquet_options(self.schema))
        self.writer.write_table(pa.Table.from_pylist(self.rows, schema=self.schema))
        self.rows = []

    def finish_bundle(self):
        from apache_beam.transforms.window import GlobalWindows

        if self.rows:
            self._write()
        if self.writer is None:
            return
        self.writer.close()
        self.sink.close()
        FileSystems.rename([self.paths[0]], [self.paths[1]])
        yield GlobalWindows.windowed_value(self.paths[1])


@dataclass
class WriteDeadLetters(beam.PTransform):
    """Dead letters to `<directory>/dead_letters-*.jsonl`, one JSON object a line (any record
    dataclass: filtered records use it with `name="filtered"`)."""

    directory: str
    name: str = "dead_letters"

    def __post_init__(self):
        super().__init__()

    def expand(self, dead_letters):
        return (
            dead_letters
            | "Json"
            >> beam.Map(lambda d: json.dumps(as_row(d), ensure_ascii=False, sort_keys=True))
            | "Lines"
            >> beam.io.WriteToText(
                storage.join(self.directory, self.name), file_name_suffix=".jsonl"
            )
        )


class _CopyKeeping(beam.DoFn):
    """Copy one staged Parquet file to its final folder, leaving out the rows of dropped keys.

    Streams batch by batch, so memory stays flat however large the table grows; the final
    file appears under its name only once complete (written aside, then renamed).
    """

    def __init__(self, directory: str, schema: pa.Schema, batch_rows: int):
        self.directory, self.schema, self.batch_rows = directory, schema, batch_rows

    def process(self, staged: str, dropped: dict):
        name = posixpath.basename(staged)
        final = storage.join(self.directory, name)
        aside = storage.join(self.directory, f"_{name}.inprogress")
        kept = 0
        drop = pa.array(sorted(dropped), pa.string())
        source = open_native(staged)
        try:
            # pre_buffer caches every range the iterator has read: memory grows with the file.
            table_file = pq.ParquetFile(source, pre_buffer=False)
            with FileSystems.create(aside, compression_type="uncompressed") as sink:
                with pq.ParquetWriter(sink, self.schema, **parquet_options(self.schema)) as writer:
                    for batch in table_file.iter_batches(batch_size=self.batch_rows):
                        table = pa.Table.from_batches([batch], schema=self.schema)
                        if len(drop):
                            table = table.filter(pc.invert(pc.is_in(table["key"], value_set=drop)))
                        if table.num_rows:
                            writer.write_table(table)
                        kept += table.num_rows
        finally:
            if not isinstance(source, str):
                source.close()
        if FileSystems.exists(final):
            FileSystems.delete([final])
        FileSystems.rename([aside], [final])
        # The staged file stays until the run ends: a retried bundle reads it again.
        yield kept


@dataclass
class WriteTableWithout(beam.PTransform):
    """Rows to Parquet in `directory`, less those whose key is in the `dropped` side input.

    The rows go to a staging folder first, so that rows with images are never held back
    waiting for the (global) list of dropped keys; outputs the number of rows kept per file.
    """

    directory: str
    staging: str
    schema: pa.Schema
    dropped: beam.pvalue.PCollection  # (key, anything) pairs
    # Rows per row group, and per batch held: fewer, larger groups keep the footer (which
    # every reader decodes and holds) small; 256 figures are about 20 MB of images.
    batch_rows: int = 256

    def __post_init__(self):
        super().__init__()

    def expand(self, rows):
        staged = rows | "Stage" >> beam.ParDo(
            _WriteBundles(self.staging, self.schema, self.batch_rows)
        )
        return staged | "Keep" >> beam.ParDo(
            _CopyKeeping(self.directory, self.schema, self.batch_rows),
            dropped=beam.pvalue.AsDict(self.dropped),
        )
