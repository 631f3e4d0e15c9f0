"""The index job's Beam steps: thin DoFns and functions around the pure modules beside
this one (join, vectors, keyword, layout).

Memory, for a dataset of N samples: the join is a CoGroupByKey by sample key (no table of
every key in one process); what crosses the fill's shuffle is each usable sample's vectors,
grouped into partitions of `partition_size` consecutive ids (one partition's vectors in a
worker at once); the training sample and the recall queries are bounded by their flags;
the assembly holds the index it writes (its codes, not the vectors) and the keyword step
streams the dataset's Parquet shard by shard into SQLite (a bool per sample in memory).
"""

from __future__ import annotations

import io
import logging
import os
import tempfile

import apache_beam as beam
import numpy as np

from transforms import progress, storage
from transforms.embed.files import vector_rows
from transforms.index import join, keyword, layout, vectors
from transforms.index.ids import ShardIds
from transforms.outcomes import dead
from transforms.records import CAPTION_EMBEDDING, EMBEDDING_MODEL, IMAGE_EMBEDDING
from transforms.sinks import read_parquet

COUNTS = "counts"  # tagged output: (report counter, n)
TRAIN = "train"  # tagged output: training sample candidates
QUERIES = "queries"  # tagged output: recall query candidates
TOPS = "tops"  # tagged output: (kind, partial exact top-k)
TRAIN_PURPOSE, QUERY_PURPOSE = "train", "queries"
READ_ROWS = 65_536  # embeddings rows read at once

log = logging.getLogger(__name__)


class DatasetMismatch(ValueError):
    """The dataset's Parquet index does not hold what its manifest says."""


class DuplicateKey(DatasetMismatch):
    """Two samples of the dataset share a key. The index refuses the dataset rather than
    dead-lettering one of them: a key names one sample (`/samples/{key}`, the UNIQUE key
    of samples.sqlite) and every sample id must have its row, so no index of it would be
    whole. `biomedica shard` never writes such a dataset; a hand-made or damaged one can."""


class ReadSampleIds(beam.DoFn):
    """A shard (ShardIds as a tuple) -> (key, (sample id, its Parquet file)) per row."""

    def __init__(self, dataset: str):
        self.dataset = dataset

    def process(self, shard: tuple):
        shard = ShardIds(*shard)
        uri = storage.join(self.dataset, shard.parquet_path)
        keys = [k for t in read_parquet(uri, columns=["key"]) for k in t.column(0).to_pylist()]
        if len(keys) != shard.samples:
            raise DatasetMismatch(
                f"{uri} holds {len(keys)} rows, the dataset's manifest.json says {shard.samples}"
            )
        for row, key in enumerate(keys):
            yield key, (shard.base + row, uri)
        yield beam.pvalue.TaggedOutput(COUNTS, (f"{join.STAGE}.in", len(keys)))
        progress.tick("samples", len(keys))


class ReadEmbeddings(beam.DoFn):
    """An embeddings file -> (key, join.Vectors) per row; a file that cannot be read is a
    dead letter of stage index_embeddings (its samples then have no vector)."""

    def __init__(self, model_id: str, dim: int, caption: bool):
        self.model_id, self.dim, self.caption = model_id, dim, caption

    def process(self, uri: str):
        yield beam.pvalue.TaggedOutput(COUNTS, (f"{join.EMBEDDINGS_STAGE}.in", 1))
        columns = ["key", EMBEDDING_MODEL, IMAGE_EMBEDDING]
        if self.caption:
            columns.append(CAPTION_EMBEDDING)
        try:
            tables = list(read_parquet(uri, columns=columns, batch_rows=READ_ROWS))
        except Exception as err:  # noqa: BLE001 (damaged file: its own dead letter)
            yield dead(join.EMBEDDINGS_STAGE, uri, join.UNREADABLE, str(err), uri)
            return
        for table in tables:
            names = table.column_names
            keys = table.column("key").to_pylist() if "key" in names else [None] * len(table)
            models = table.column(EMBEDDING_MODEL).to_pylist() if EMBEDDING_MODEL in names else []
            images = _column(table, IMAGE_EMBEDDING)
            captions = _column(table, CAPTION_EMBEDDING) if self.caption else None
            for i, key in enumerate(keys):
                if not isinstance(key, str) or not key:
                    continue  # no key: no sample it could be, and nothing to count it under
                yield (
                    key,
                    join.check_row(
                        uri,
                        models[i] if models else None,
                        images[i] if images is not None else None,
                        captions[i] if captions is not None else None,
                        self.model_id,
                        self.dim,
                        self.caption,
                    ),
                )
            progress.tick("embeddings", len(keys))
        yield beam.pvalue.TaggedOutput(COUNTS, (f"{join.EMBEDDINGS_STAGE}.out", 1))


def _column(table, name: str):
    """A vector column's rows (transforms.embed.files.vector_rows); None if absent."""
    return vector_rows(table.column(name)) if name in table.column_names else None


class JoinVectors(beam.DoFn):
    """(key, {"samples": [...], "rows": [...]}) -> (partition, (id, image, caption)) for a
    sample with usable vectors; dead letters; counts; training and query candidates."""

    def __init__(self, partition_size: int, seed: int):
        self.partition_size, self.seed = partition_size, seed

    def process(self, element):
        key, grouped = element
        samples = sorted(grouped["samples"])
        if len(samples) > 1:
            ids = ", ".join(str(sample_id) for sample_id, _ in samples[:5])
            files = ", ".join(sorted({uri for _, uri in samples}))
            raise DuplicateKey(
                f"the dataset holds key {key!r} {len(samples)} times (sample ids {ids}; in "
                f"{files}): a dataset's keys must be unique; rebuild it with `biomedica shard`"
            )
        for outcome in join.join(samples, list(grouped["rows"])):
            if outcome.sample is None:
                if outcome.unused:
                    yield beam.pvalue.TaggedOutput(
                        COUNTS, (f"{join.STAGE}.{join.UNUSED}", outcome.unused)
                    )
                continue
            sample_id = outcome.sample[0]
            if outcome.dead is not None:
                reason, detail, source = outcome.dead
                yield dead(join.STAGE, key, reason, detail, source)
                continue
            item = (sample_id, outcome.vectors.image, outcome.vectors.caption)
            yield (sample_id // self.partition_size, item)
            yield beam.pvalue.TaggedOutput(COUNTS, (f"{join.STAGE}.out", 1))
            for tag, purpose in ((TRAIN, TRAIN_PURPOSE), (QUERIES, QUERY_PURPOSE)):
                rank = vectors.sample_rank(key, self.seed, purpose)
                yield beam.pvalue.TaggedOutput(tag, (rank, *item))


def kinds(caption: bool) -> list[str]:
    return [layout.IMAGE, layout.CAPTION] if caption else [layout.IMAGE]


def _matrix(items: list, kind: str, dim: int) -> np.ndarray:
    column = 1 if kind == layout.IMAGE else 2
    if not items:
        return np.zeros((0, dim), np.float32)
    return np.stack([item[column] for item in items]).astype(np.float32)


def train_indexes(sample: list, count: int, caption: bool, dim: int, settings: dict) -> dict:
    """{kind: {"plan": Plan.describe(), "bytes": the trained empty index, "train": n}}.
    `sample`: the training candidates of smallest rank (their order fixed by rank)."""
    sample = sorted(sample)
    out = {}
    for kind in kinds(caption):
        plan = vectors.plan(
            count,
            dim,
            # No vector at all: an empty exact index (nothing to train on).
            settings["index_type"] if count else vectors.FLAT,
            settings["exact_below"],
            settings["train_sample"],
            settings["nlist"],
            settings["pq_m"],
            settings["refine"],
            settings["k_factor"],
        )
        points = _matrix([s[1:] for s in sample], kind, dim) if plan.kind == vectors.IVFPQ else None
        data = vectors.train(plan, points, settings["seed"])
        out[kind] = {
            "plan": plan.describe(),
            "bytes": data,
            "train": 0 if points is None else len(points),
        }
    return out


def query_matrices(candidates: list, caption: bool, dim: int) -> dict:
    """{kind: (q, dim) query vectors}, the candidates in rank order."""
    items = [c[1:] for c in sorted(candidates)]
    return {kind: _matrix(items, kind, dim) for kind in kinds(caption)}


def work_file(output: str, kind: str, partition: int) -> str:
    return storage.join(output, layout.WORK, kind, f"{partition:08d}.npz")


class EncodePartition(beam.DoFn):
    """(partition, its samples' vectors) -> each kind's codes written to a work file, a
    record of it, and the partition's exact top-k for the recall queries (TOPS)."""

    def __init__(self, output: str, caption: bool, dim: int):
        self.output, self.caption, self.dim = output, caption, dim
        self._loaded: dict = {}

    def _index(self, kind: str, trained: dict):
        # Each worker deserialises the trained index once (it can be megabytes).
        data = trained[kind]["bytes"]
        if self._loaded.get(kind, (None,))[0] != data:
            self._loaded[kind] = (data, vectors.load(data))
        return self._loaded[kind][1]

    def process(self, element, trained: dict, queries: dict):
        partition, items = element
        items = sorted(items, key=lambda item: item[0])
        ids = np.array([item[0] for item in items], np.int64)
        for kind in kinds(self.caption):
            matrix = _matrix(items, kind, self.dim)
            codes = vectors.encode(self._index(kind, trained), matrix)
            buffer = io.BytesIO()
            np.savez(buffer, ids=ids, **{f"codes{i}": c for i, c in enumerate(codes)})
            uri = work_file(self.output, kind, partition)
            storage.atomic_write(uri, [buffer.getvalue()])
            yield (kind, partition, len(ids), uri)
            top = vectors.exact_top(queries[kind], matrix, ids)
            yield beam.pvalue.TaggedOutput(TOPS, (kind, top))
        progress.tick("vectors", len(ids))


class MergeTops(beam.CombineFn):
    """Partial exact top-k results of one kind merged into the top-k of all vectors."""

    def create_accumulator(self):
        return None

    def add_input(self, accumulator, top):
        return top if accumulator is None else vectors.merge_top(accumulator, top)

    def merge_accumulators(self, accumulators):
        out = None
        for acc in accumulators:
            if acc is not None:
                out = acc if out is None else vectors.merge_top(out, acc)
        return out

    def extract_output(self, accumulator):
        return accumulator


def read_work(uri: str) -> dict:
    with np.load(io.BytesIO(storage.read_bytes(uri))) as data:
        return {name: data[name] for name in data.files}


def assemble(
    kind: str,
    trained: dict,
    records: list,
    tops: dict,
    queries: dict,
    output: str,
    target: float,
    guard=None,
):
    """Build one kind's index from its partitions' codes (in partition order), choose the
    smallest nprobe reaching `target` recall@10 against the exact top-10, write
    IDX/<kind>.faiss; yield (kind, the manifest's vector entry)."""
    index = vectors.load(trained[kind]["bytes"])
    mine = sorted((r for r in records if r[0] == kind), key=lambda r: r[1])
    for _, _, _, uri in mine:
        part = read_work(uri)
        codes = [part[f"codes{i}"] for i in range(len(part) - 1)]
        vectors.append(index, codes, part["ids"])
    vectors.finish(index)
    top = tops.get(kind)
    exact_ids = top[1] if top is not None else np.zeros((0, vectors.K), np.int64)
    nprobe, recall, k_factor = vectors.tune(index, queries[kind], exact_ids, target)
    if nprobe is not None and recall < target:
        log.warning(
            "%s index: recall@10 %.3f at nprobe %d (every list, k_factor %s) is below "
            "--recall_target %.2f",
            kind,
            recall,
            nprobe,
            k_factor,
            target,
        )
    data = vectors.serialize(index)
    if guard is not None:
        guard()
    storage.atomic_write(storage.join(output, layout.faiss_file(kind)), [data])
    described = {"name": kind, **trained[kind]["plan"], "count": int(index.ntotal)}
    asked = described.get("k_factor")
    if k_factor is not None and asked is not None and k_factor != asked:
        # Widened by vectors.tune: the manifest says what the index file holds, and why.
        described["k_factor"], described["k_factor_asked"] = k_factor, asked
    entry = layout.vector_entry(
        described, nprobe, trained[kind]["train"], recall, len(queries[kind])
    )
    entry["bytes"] = len(data)
    yield kind, entry


def vector_flags(records: list, kind: str, samples: int) -> np.ndarray:
    """A bool per sample id: whether the kind's index holds its vector."""
    flags = np.zeros(samples, bool)
    for record in records:
        if record[0] == kind:
            flags[read_work(record[3])["ids"]] = True
    return flags


def _keyword_rows(dataset: str, shards: list[ShardIds], image, caption):
    for shard in shards:
        uri = storage.join(dataset, shard.parquet_path)
        row = 0
        for table in read_parquet(uri, columns=keyword.PARQUET_COLUMNS, batch_rows=READ_ROWS):
            for values in table.to_pylist():
                sample_id = shard.base + row
                yield keyword.row_values(sample_id, values, image[sample_id], caption[sample_id])
                row += 1
        if row != shard.samples:
            raise DatasetMismatch(
                f"{uri} holds {row} rows, the dataset's manifest.json says {shard.samples}"
            )


def build_keyword(
    _, dataset: str, shards: list, samples: int, records: list, caption: bool, output: str, guard
):
    """samples.sqlite from the dataset's Parquet index, rows in id order, built in a local
    temporary file (SQLite has one writer and wants a local file) and then copied into
    place; yields the manifest's keyword entry and the stage's counts."""
    shards = [ShardIds(*s) for s in shards]
    image = vector_flags(records, layout.IMAGE, samples)
    captions = (
        vector_flags(records, layout.CAPTION, samples) if caption else np.zeros(samples, bool)
    )
    with tempfile.TemporaryDirectory(prefix="biomedica-index-") as folder:
        path = os.path.join(folder, layout.SQLITE)
        rows = keyword.build(
            path,
            _keyword_rows(dataset, shards, image, captions),
            on_batch=lambda n: progress.tick("keyword rows", n),
        )
        if guard is not None:
            guard()
        with open(path, "rb") as handle:
            storage.atomic_write(
                storage.join(output, layout.SQLITE), iter(lambda: handle.read(1 << 24), b"")
            )
    yield {
        "entry": layout.keyword_entry(rows),
        "counts": [(f"{join.KEYWORD_STAGE}.in", samples), (f"{join.KEYWORD_STAGE}.out", rows)],
    }


def write_manifest(_, entries: list, keyword_done: dict, header: dict, output: str, guard=None):
    """manifest.json, written last: an index folder with one is complete."""
    manifest = layout.build_manifest(
        vectors=dict(sorted(entries)), keyword_index=keyword_done["entry"], **header
    )
    if guard is not None:
        guard()
    storage.atomic_write(storage.join(output, layout.MANIFEST), [layout.manifest_bytes(manifest)])
    yield manifest["samples"]
