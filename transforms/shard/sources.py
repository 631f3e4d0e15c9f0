"""What a shard run reads, unit by unit: extract's figure Parquet, or a dataset under a filter.

Pure and Beam-free. A source splits its input into units (one Parquet file; one shard of a
source dataset) and reads each twice: `light` gives the columns that decide where every row
goes (no image bytes), `full` gives the same rows, in the same order, with everything. The
shard stage plans from the light reads and writes from the full ones.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator

import pyarrow as pa

from transforms import storage
from transforms.article_files import ARTICLE_ID_COLUMNS, article_id, sibling
from transforms.records import (
    ANNOTATION_FIELDS,
    ANNOTATION_SCHEMA,
    ARTICLE_SCHEMA,
    PUBMED_COLUMNS,
    SHARD_INDEX_SCHEMA,
    ShardPlacement,
    arrow_schema,
)
from transforms.shard.row_filter import compile_where
from transforms.shard.webdataset_tar import read_images
from transforms.sinks import read_parquet

# The columns a plan needs: key and caption are checked, the group places the row, and the
# image hash and source settle and report duplicate keys.
LIGHT_COLUMNS = ("key", "caption", "article_license_group", "image_hash", "image_source")
BATCH_ROWS = 256


# Tests watch the reads through this name.
_read_parquet = read_parquet


TEXT = "article_text"
TEXT_TYPE = pa.dictionary(pa.int32(), pa.string())
# Articles per batch of the articles file held while texts are looked up: texts run to
# megabytes.
ARTICLE_BATCH_ROWS = 16


def text_column(texts: list[str]) -> pa.DictionaryArray:
    """A column of article texts, each distinct text stored once however many rows repeat
    it (a thousand figures of one article share one copy)."""
    unique: dict[str, int] = {}
    indices = [unique.setdefault(text, len(unique)) for text in texts]
    return pa.DictionaryArray.from_arrays(
        pa.array(indices, pa.int32()), pa.array(list(unique), pa.string())
    )


class ArticleColumns:
    """Article-level columns of one articles file (the text; the PubMed fields enrich
    fills), looked up a batch of figures at a time: a forward scan holding one small batch
    of articles, so figures asked for in the file's order (extract writes figures and
    articles in the same order) read it once. Articles behind the scan start it over, so any
    order costs at most two scans a batch of figures; once a scan has seen the whole file,
    an article it lacks costs none. Of `columns`, those the file has (`present`, known once
    a batch was read) are looked up; an older articles file lacks the PubMed ones."""

    def __init__(self, uri: str, columns: tuple[str, ...] = (TEXT,)):
        self.uri = uri
        self.columns = tuple(columns)
        self.present: tuple[str, ...] = ()
        self._scan = None
        self._batch: dict[tuple, dict] = {}
        self._known: set[tuple] | None = None  # every article of the file, once scanned

    def _batches(self):
        wanted = [*ARTICLE_ID_COLUMNS, *self.columns]
        ids = len(ARTICLE_ID_COLUMNS)
        seen = set()
        for table in _read_parquet(self.uri, wanted, ARTICLE_BATCH_ROWS):
            names = [c for c in self.columns if c in table.column_names]
            self.present = tuple(names)
            values = [table.column(c).to_pylist() for c in [*ARTICLE_ID_COLUMNS, *names]]
            batch = {
                article_id(*row[:ids]): dict(zip(names, row[ids:], strict=True))
                for row in zip(*values, strict=True)
            }
            seen.update(batch)
            yield batch
        self._known = seen

    def rows(self, wanted: set[tuple]) -> dict[tuple, dict]:
        """{article: {column: value}} of the wanted articles the file holds."""
        if self._known is not None:
            wanted = wanted & self._known
        found = {a: self._batch[a] for a in wanted if a in self._batch}
        for _ in range(2):  # on from here, then once from the start
            if len(found) == len(wanted):
                break
            if self._scan is None:
                self._scan = self._batches()
            for batch in self._scan:
                self._batch = batch
                found.update((a, batch[a]) for a in wanted.intersection(batch))
                if len(found) == len(wanted):
                    break
            else:
                self._scan, self._batch = None, {}
                if self._known is not None:
                    wanted = wanted & self._known
        return found

    def texts(self, wanted: set[tuple]) -> dict[tuple, str]:
        """{article: text} of the wanted articles the file holds."""
        return {a: row.get(TEXT) or "" for a, row in self.rows(wanted).items()}

    def text(self, article: tuple) -> str:
        return self.texts({article}).get(article, "")

    def column(self, table: pa.Table) -> pa.DictionaryArray:
        """The text of each row's article, for a figure table."""
        return self.lookup(table)[0]

    def lookup(self, table: pa.Table) -> tuple[pa.DictionaryArray, list[bool]]:
        """The text of each row's article, and whether the file held that article."""
        ids = _article_ids(table)
        found = self.texts(set(ids))
        return text_column([found.get(a, "") for a in ids]), [a in found for a in ids]

    def fill(self, table: pa.Table) -> pa.Table:
        """A figure table with its articles' columns: the text (if asked: the table has
        none) appended, a row whose article the file lacks getting "" and TEXT_NOT_FOUND in
        its fixes; every other column the file has set from the article's row, replacing
        the figure's own (extract leaves the PubMed ones empty), which a row whose article
        the file lacks keeps."""
        ids = _article_ids(table)
        found = self.rows(set(ids))
        for name in self.present:
            if name == TEXT:
                continue
            own = _column(table, name)
            values = [found[a][name] if a in found else v for a, v in zip(ids, own, strict=True)]
            column = pa.array(values, ARTICLE_SCHEMA.field(name).type)
            if name in table.column_names:
                table = table.set_column(table.schema.get_field_index(name), name, column)
            else:  # a figure file older than the column
                table = table.append_column(name, column)
        if TEXT in self.columns:
            texts = [(found[a].get(TEXT) or "") if a in found else "" for a in ids]
            table = table.append_column(TEXT, text_column(texts))
            table = with_fix(table, [a not in found for a in ids], TEXT_NOT_FOUND)
        return table


def _article_ids(table: pa.Table) -> list[tuple]:
    values = zip(*(_column(table, c) for c in ARTICLE_ID_COLUMNS), strict=True)
    return [article_id(*v) for v in values]


def _column(table: pa.Table, name: str) -> list:
    return table.column(name).to_pylist() if name in table.column_names else [None] * len(table)


# The `fixes` entry of a sample whose article its articles file lacks (its text is "").
TEXT_NOT_FOUND = "article_text_not_found"


def with_fix(table: pa.Table, rows: list[bool], fix: str) -> pa.Table:
    """`fix` added to the `fixes` of the rows marked True (the column made if absent)."""
    prior = _column(table, "fixes")
    fixes = [
        [*(p or []), fix] if mark else list(p or []) for p, mark in zip(prior, rows, strict=True)
    ]
    column = pa.array(fixes, pa.list_(pa.string()))
    if "fixes" in table.column_names:
        return table.set_column(table.schema.get_field_index("fixes"), "fixes", column)
    return table.append_column("fixes", column)


# The `fixes` entry of a sample whose key its annotations file lacks (its labels stay empty).
ANNOTATION_NOT_FOUND = "annotation_not_found"
ANNOTATIONS_FOLDER = "annotations"


def annotations_file(annotations: str, unit: str) -> str:
    """Where annotate put the annotations of a figure file: ANN/annotations/<its name>."""
    return storage.join(annotations, ANNOTATIONS_FOLDER, posixpath.basename(unit))


def missing_annotation_columns(names) -> list[str]:
    """The columns of ANNOTATION_SCHEMA a file's column names lack."""
    return [name for name in ANNOTATION_SCHEMA.names if name not in set(names)]


def _key_text(value) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


class UnitAnnotations:
    """The annotations of one figure file, read whole (its own file only: a few small
    columns per sample), looked up by key as the file's batches go by."""

    def __init__(self, uri: str):
        table = next(_read_parquet(uri, ANNOTATION_SCHEMA.names))
        missing = missing_annotation_columns(table.column_names)
        if missing:  # checked before the job: changed since
            raise ValueError(f"{uri} lacks the annotation columns {', '.join(missing)}")
        self.values = {
            name: table.column(name).cast(ANNOTATION_SCHEMA.field(name).type).to_pylist()
            for name in ANNOTATION_FIELDS
        }
        self.row: dict[str, int] = {}
        for i, key in enumerate(table.column("key").to_pylist()):
            self.row.setdefault(_key_text(key), i)

    def fill(self, table: pa.Table) -> pa.Table:
        """`table` with its ANNOTATION_FIELDS set from the annotation of each row's key; a
        key without one keeps empty labels and gets ANNOTATION_NOT_FOUND in its fixes."""
        rows = [self.row.get(_key_text(key)) for key in _column(table, "key")]
        for name in ANNOTATION_FIELDS:
            field = ANNOTATION_SCHEMA.field(name)
            values = self.values[name]
            empty = [] if pa.types.is_list(field.type) else None
            column = pa.array([empty if r is None else values[r] for r in rows], field.type)
            if name in table.column_names:
                table = table.set_column(table.schema.get_field_index(name), name, column)
            else:
                table = table.append_column(name, column)
        return with_fix(table, [r is None for r in rows], ANNOTATION_NOT_FOUND)


def articles_file(unit: str, articles: str | None = None) -> str:
    """The articles file of a figure file: the one of its name in `articles` (an output's
    articles folder, extract_layout.Layout.articles), else beside its figures folder."""
    return sibling(unit) if articles is None else storage.join(articles, posixpath.basename(unit))


class ParquetSource:
    """Figure Parquet files (extract's output): a unit is a file's URI. Article-level
    columns come from the articles file of the same name (articles_file: in `articles`, the
    input's articles folder, which an enrich output holds apart from the figures it links
    to; else beside the figures folder): the text, held once per article, which a figure
    file that carries the column keeps its own of, and the PubMed fields (PUBMED_COLUMNS)
    the file has, which replace the figure row's (extract leaves them empty; enrich fills
    them in its articles files only). An article that file lacks gets an empty text and a
    `fixes` entry (TEXT_NOT_FOUND), counted by the shard stage, and keeps its figure row's
    PubMed fields. No articles file: an error (the unit's rows are dead-lettered) unless
    `article_text` is False (--without_article_text), when every text is empty, as asked.

    With `annotations` (annotate's output folder), each sample's labels come from the
    annotations file of its figure file's name (annotations_file), matched by key; a key
    that file lacks keeps empty labels and a `fixes` entry (ANNOTATION_NOT_FOUND)."""

    def __init__(
        self,
        article_text: bool = True,
        annotations: str | None = None,
        articles: str | None = None,
    ):
        self.article_text = article_text
        self.annotations = annotations
        self.articles = articles

    def light(self, unit: str) -> tuple[pa.Table, list[tuple[str, int]]]:
        return next(_read_parquet(unit, LIGHT_COLUMNS)), []

    def full(self, unit: str) -> Iterator[pa.Table]:
        articles = articles_file(unit, self.articles)
        joined = None
        held = storage.exists(articles)
        labels = None
        if self.annotations:
            labels = UnitAnnotations(annotations_file(self.annotations, unit))
        for table in _read_parquet(unit, batch_rows=BATCH_ROWS):
            own_text = TEXT in table.column_names
            if held and joined is None:  # a file's batches share one schema: the first says
                text = () if own_text else (TEXT,)
                joined = ArticleColumns(articles, (*text, *PUBMED_COLUMNS))
            if joined is not None:
                table = joined.fill(table)
            elif own_text:
                pass
            elif not self.article_text:
                table = table.append_column(TEXT, text_column([""] * table.num_rows))
            else:  # checked before the job: gone since
                raise FileNotFoundError(f"{articles} (the article texts of {unit}) is missing")
            yield table if labels is None else labels.fill(table)


# A dataset's index columns that say where a sample lay; `fixes` travels on with the sample.
_PLACEMENT = [f.name for f in arrow_schema(ShardPlacement) if f.name != "fixes"]


class DatasetSubset:
    """The samples of a dataset that match a filter: a unit is one of its shards
    ("<group>/<index>.tar"), whose Parquet is filtered and whose tar is read once."""

    def __init__(self, dataset: str, where: str, stage: str = "subset"):
        self.dataset, self.where, self.stage = dataset, where, stage
        self._predicate = None

    @staticmethod
    def units_of(index_files: list[str]) -> list[str]:
        """Shard names of a dataset's index files (…/parquet/<group>/<index>.parquet)."""
        return sorted(
            "/".join(uri.rsplit("/", 2)[-2:]).removesuffix(".parquet") + ".tar"
            for uri in index_files
        )

    def _matches(self, unit: str) -> tuple[pa.Table, int]:
        if self._predicate is None:
            self._predicate = compile_where(self.where, SHARD_INDEX_SCHEMA.names)
        uri = storage.join(self.dataset, "parquet", unit.removesuffix(".tar") + ".parquet")
        table = next(_read_parquet(uri))
        keep = [i for i, row in enumerate(table.to_pylist()) if self._predicate(row)]
        matched = table.take(pa.array(keep, pa.int64()))
        return matched.drop_columns([c for c in _PLACEMENT if c in matched.column_names]), len(
            table
        )

    def light(self, unit: str) -> tuple[pa.Table, list[tuple[str, int]]]:
        matched, listed = self._matches(unit)
        left_out = listed - matched.num_rows
        counts = [(f"{self.stage}.in", listed), (f"{self.stage}.out", matched.num_rows)]
        if left_out:
            counts += [
                (f"{self.stage}.filtered", left_out),
                (f"{self.stage}.filtered_by_reason.where_not_matched", left_out),
            ]
        return matched, counts

    def full(self, unit: str) -> Iterator[pa.Table]:
        matched, _ = self._matches(unit)
        if not matched.num_rows:
            return
        keys = matched.column("key").to_pylist()
        # A missing or damaged tar raises: the shard stage retries it, then dead-letters the
        # rows with the error. A key the tar lacks gets no image, and its own dead letter.
        with storage.open_stream(storage.join(self.dataset, "webdataset", unit)) as stream:
            images, texts = read_images(stream, set(keys))
        matched = matched.append_column(
            "image", pa.array([images.get(k) for k in keys], pa.binary())
        )
        # The article text is in each sample's JSON only (the index leaves it out).
        yield matched.append_column(TEXT, text_column([texts.get(k, "") for k in keys]))
