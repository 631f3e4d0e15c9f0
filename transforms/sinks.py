"""Writers for the extract stage's outputs: Parquet tables and dead-letter JSON lines."""

from __future__ import annotations

import json
from dataclasses import dataclass

import apache_beam as beam
import pyarrow as pa

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


@dataclass
class WriteDeadLetters(beam.PTransform):
    """Dead letters to `<directory>/dead_letters-*.jsonl`, one JSON object a line."""

    directory: str

    def __post_init__(self):
        super().__init__()

    def expand(self, dead_letters):
        return (
            dead_letters
            | "Json"
            >> beam.Map(lambda d: json.dumps(as_row(d), ensure_ascii=False, sort_keys=True))
            | "Lines"
            >> beam.io.WriteToText(
                storage.join(self.directory, "dead_letters"), file_name_suffix=".jsonl"
            )
        )
