"""An articles file with its PubMed columns set: read in small batches, written aside and moved
into place. Pure of Beam (the enrich stage calls it once per articles file).

Rows stay in the input file's order and keep every column they had (an older extract's file
gains the PubMed columns; a column this version does not know travels on after them).
"""

from __future__ import annotations

import uuid
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from transforms import storage
from transforms.pubmed.join import columns, parse_pmid
from transforms.records import ARTICLE_SCHEMA, PUBMED_COLUMNS
from transforms.sinks import _commit, footer_rows, parquet_options, read_parquet

# Articles per batch and row group, as extract writes them: an article's text runs to megabytes.
BATCH_ROWS = 64
PMID = "article_pmid"


def pmids(uri: str) -> list:
    """The article_pmid of each row of an articles file, in order (None where absent)."""
    values = []
    for table in read_parquet(uri, [PMID], batch_rows=4096):
        values += table.column(PMID).to_pylist() if PMID in table.column_names else []
    if not values:  # no such column: as many Nones as rows
        values = [None] * (footer_rows(uri) or 0)
    return values


def status_without_match(pmid_value) -> str:
    """The status of a row the join gave nothing: it had no PMID to look up."""
    pmid, why = parse_pmid(pmid_value)
    return why if pmid is None else "not_found"


class BadArticlesFile(ValueError):
    """An articles file that cannot be read whole, or whose columns are not an article's."""


def _schema(found: pa.Schema) -> pa.Schema:
    known = set(ARTICLE_SCHEMA.names)
    return pa.schema(list(ARTICLE_SCHEMA) + [f for f in found if f.name not in known])


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    out = []
    for field in schema:
        if field.name in table.column_names:
            column = table.column(field.name)
            if column.type != field.type:
                try:
                    column = column.cast(field.type)
                except (pa.ArrowException, ValueError, TypeError) as err:
                    raise BadArticlesFile(
                        f"column {field.name} is {column.type}, not {field.type}: {err}"
                    ) from None
            out.append(column)
        elif pa.types.is_list(field.type):
            out.append(pa.array([[]] * table.num_rows, field.type))
        else:
            out.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(out, schema=schema)


def _with_pubmed(table: pa.Table, values: list[dict]) -> pa.Table:
    for name in PUBMED_COLUMNS:
        column = pa.array([v[name] for v in values], ARTICLE_SCHEMA.field(name).type)
        table = table.set_column(table.schema.get_field_index(name), name, column)
    return table


def _tables(src: str):
    """The file's batches, conformed; BadArticlesFile for anything wrong with the input (an
    output that cannot be written raises its own error, to be retried)."""
    batches = read_parquet(src, batch_rows=BATCH_ROWS)
    schema = None
    while True:
        try:
            table = next(batches, None)
            if table is None:
                return
            schema = schema or _schema(table.schema)
            yield schema, _conform(table, schema)
        except BadArticlesFile:
            raise
        except (OSError, ValueError, TypeError, pa.ArrowException) as err:
            raise BadArticlesFile(f"{type(err).__name__}: {err}") from None


def write_enriched(src: str, dst: str, found: dict[int, dict], guard=None) -> Counter:
    """`src` rewritten to `dst` with each row's PubMed columns: `found[row]` (join.columns)
    where the join settled the row's PMID, else the status of a row without one. Returns the
    count of rows by status. BadArticlesFile (and nothing written) where `src` is damaged."""
    statuses: Counter = Counter()
    folder, name = dst.rsplit("/", 1) if "://" in dst else _split_local(dst)
    # Named for this attempt: a retried bundle never shares its file with an earlier one.
    aside = storage.join(folder, f"_{name}.{uuid.uuid4().hex[:12]}.inprogress")
    writer = sink = None
    row = 0
    try:
        for schema, table in _tables(src):
            if writer is None:
                sink = FileSystems.create(aside, compression_type="uncompressed")
                writer = pq.ParquetWriter(sink, schema, **parquet_options(schema))
            values = []
            for pmid_value in table.column(PMID).to_pylist():
                value = found.get(row) or columns(status_without_match(pmid_value))
                statuses[value["article_pubmed_status"]] += 1
                values.append(value)
                row += 1
            writer.write_table(_with_pubmed(table, values), row_group_size=BATCH_ROWS)
        if writer is None:  # a file of no rows: still a file, with the schema
            schema = ARTICLE_SCHEMA
            sink = FileSystems.create(aside, compression_type="uncompressed")
            writer = pq.ParquetWriter(sink, schema, **parquet_options(schema))
        writer.close()
        writer = None
        sink.close()
        sink = None
        extra = set(found) - set(range(row))
        if extra:  # the file changed between the PMID scan and this write
            raise BadArticlesFile(f"{row} rows, but rows {sorted(extra)[:5]} were joined")
    except BaseException:
        if writer is not None:
            writer.close()
        if sink is not None:
            sink.close()
        if FileSystems.exists(aside):
            FileSystems.delete([aside])
        raise
    _commit(aside, dst, guard)
    return statuses


def _split_local(path: str) -> tuple[str, str]:
    import os

    folder, name = os.path.split(path)
    os.makedirs(folder, exist_ok=True)
    return folder, name
