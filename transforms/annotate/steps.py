"""The annotate job's Beam steps: thin DoFns and functions around the pure modules beside
this one (embedding_rows, clustering, caption_concepts, labels, summary, thumbnails).

A unit is one embeddings file. It is read twice, each time whole and alone: for dead
letters and training candidates, and for cluster ids and votes. What crosses a shuffle per
sample: the training candidates (at most --cluster_sample of them per file, vectors
included), and each file's keys, cluster ids and distances, held from the second read until
the labels are known and its annotations file is written (about 50 bytes a sample; the
vectors are not kept).
"""

from __future__ import annotations

import heapq
import logging
import posixpath

import apache_beam as beam
import numpy as np
import pyarrow as pa
from PIL import Image

from transforms import progress, storage
from transforms.annotate import clustering, embedding_rows, figure_rows, labels, summary
from transforms.annotate.caption_concepts import MULTIPLE, default_finder, panel_type
from transforms.annotate.gallery import build_gallery
from transforms.annotate.taxonomy import load_taxonomy
from transforms.annotate.thumbnails import make_thumbnail, thumbnail_path
from transforms.images.bounds import ImageTooLarge
from transforms.outcomes import dead
from transforms.records import ANNOTATION_SCHEMA
from transforms.sinks import write_parquet

STAGE = "annotate"
LABELS_STAGE = "cluster_labels"
COUNTS = "counts"  # tagged output: (report counter, n)
STATS = "stats"  # tagged output: (cluster id, ClusterStats)
GALLERY = "gallery"  # the folder, and the report stage of its thumbnails
CLUSTERING = "clustering"  # report stage: vectors assigned to clusters, and the model
TOO_LARGE = "image_too_large"
NO_THUMBNAIL = "thumbnail_failed"

log = logging.getLogger(__name__)


def _name(uri: str) -> str:
    return posixpath.basename(uri.rstrip("/"))


def model_element(data: bytes, meta: dict) -> dict:
    """The clustering model as it travels to the workers (a side input): its bytes, its
    metadata, and its sha256 (workers deserialise each model once)."""
    import hashlib

    return {"bytes": data, "meta": meta, "sha256": hashlib.sha256(data).hexdigest()}


class _ModelHolder:
    """Deserialises the side input's model once per DoFn instance (and again only if the
    side input changes)."""

    def _model(self, element: dict) -> clustering.ClusterModel:
        if getattr(self, "_sha", None) != element["sha256"]:
            self._loaded = clustering.from_bytes(element["bytes"], element["meta"])
            self._sha = element["sha256"]
        return self._loaded


class ReadEmbeddings(beam.DoFn):
    """An embeddings file -> its training candidates (rank, key, vector bytes), at most
    `sample` of them; dead letters for unusable rows (or the file); its row count."""

    def __init__(self, model_id: str, dim: int, seed: int, sample: int):
        self.model_id, self.dim, self.seed, self.sample = model_id, dim, seed, sample

    def process(self, uri: str):
        table, error = _read(uri)
        if table is None:
            yield beam.pvalue.TaggedOutput(COUNTS, (f"{STAGE}.in", 1))
            yield dead(STAGE, _name(uri), embedding_rows.UNREADABLE, error, uri)
        else:
            yield from self._rows(uri, table)

    def _rows(self, uri: str, table: pa.Table):
        checked = embedding_rows.check_rows(table, self.model_id, self.dim)
        yield beam.pvalue.TaggedOutput(COUNTS, (f"{STAGE}.in", checked.rows))
        for key, reason, detail in checked.bad:
            yield dead(STAGE, key, reason, detail, uri)
        ranks = (
            (embedding_rows.sample_rank(k, self.seed), k, i) for i, k in enumerate(checked.keys)
        )
        for rank, key, i in heapq.nsmallest(self.sample, ranks):
            yield rank, key, checked.vectors[i].tobytes()
        progress.tick("embeddings", checked.rows)


def _read(uri: str) -> tuple[pa.Table | None, str]:
    """An embeddings file's table, or None and why it cannot be read."""
    try:
        return embedding_rows.read_table(uri), ""
    except (OSError, ValueError, KeyError, pa.ArrowException) as err:
        return None, str(err)


def train_model(
    candidates: list,
    clusters: int,
    pca_dims: int,
    seed: int,
    model_id: str,
    dim: int,
    weights: str | None = None,
) -> dict:
    """The training sample (candidates of smallest rank, in rank order) -> a model element.
    `weights`: the embeddings' weights fingerprint, recorded in the model's JSON. None where
    no row was usable: the run then writes empty annotations files and its dead letters."""
    if not candidates:
        return None
    ordered = sorted(candidates)
    vectors = np.frombuffer(b"".join(v for _, _, v in ordered), dtype=np.float32)
    model = clustering.train(
        vectors.reshape(len(ordered), dim), clusters, pca_dims, seed, model_id, weights
    )
    return model_element(model.to_bytes(), model.meta)


def model_counts(element: dict, trained: bool) -> list[tuple[str, int]]:
    """The model's facts in the report (its "in" and "out" are the vectors assigned):
    trained_on only where this run trained it, reused_model where it did not."""
    if element is None:
        return []
    meta = element["meta"]
    counts = [
        (f"{CLUSTERING}.clusters", int(meta["clusters"])),
        (f"{CLUSTERING}.pca_dims", int(meta["pca_dims"])),
    ]
    if trained:
        return counts + [
            (f"{CLUSTERING}.trained_on", int(meta["sample_size"])),
            (f"{CLUSTERING}.clusters_requested", int(meta["clusters_requested"])),
            (f"{CLUSTERING}.capped", int(bool(meta.get("capped")))),
        ]
    return counts + [(f"{CLUSTERING}.reused_model", 1)]


def save_model(element: dict | None, output: str, guard=None):
    if element is None:
        return
    clustering.save(output, element["bytes"], element["meta"], guard)
    yield element["sha256"]


class AssignAndCount(_ModelHolder, beam.DoFn):
    """An embeddings file -> (uri, keys, cluster ids, distances) of its usable rows in file
    order, and per cluster the ClusterStats of its members there (sizes, caption votes from
    the figure file of the same name, zero-shot votes, nearest members)."""

    def __init__(self, figures: str, model_id: str, dim: int, members: int):
        self.figures, self.model_id, self.dim, self.members = figures, model_id, dim, members

    def process(self, uri: str, model: dict, zero_shot=None):
        table, _ = _read(uri)
        if table is not None:  # else the first read dead-lettered it
            yield from self._assign(uri, table, model, zero_shot)

    def _assign(self, uri: str, table: pa.Table, model: dict | None, zero_shot):
        checked = embedding_rows.check_rows(table, self.model_id, self.dim)
        if model is None:  # no usable row anywhere (so none here): an empty file
            yield uri, [], np.zeros(0, np.int64), np.zeros(0, np.float32)
            return
        ids, distances = clustering.assign(self._model(model), checked.vectors)
        yield beam.pvalue.TaggedOutput(COUNTS, (f"{CLUSTERING}.in", len(checked.keys)))
        yield beam.pvalue.TaggedOutput(COUNTS, (f"{CLUSTERING}.out", len(ids)))
        captions = self._captions(uri)
        votes = [None] * len(checked.keys)
        if zero_shot is not None:
            concepts, matrix = zero_shot
            votes = labels.nearest_concepts(checked.vectors, matrix, concepts)
        finder = default_finder()
        global_of = load_taxonomy().global_of
        stats: dict[int, summary.ClusterStats] = {}
        missing = 0
        for key, cluster, distance, vote in zip(checked.keys, ids, distances, votes, strict=True):
            caption = captions.get(key)
            missing += caption is None
            found = finder.concepts(caption) if caption else []
            classes = tuple(dict.fromkeys(global_of[c] for c in found))
            several = bool(caption) and panel_type(caption) == MULTIPLE
            stats.setdefault(int(cluster), summary.ClusterStats()).add(
                key, float(distance), caption, found, several, self.members, vote, classes
            )
        for cluster, counted in sorted(stats.items()):
            yield beam.pvalue.TaggedOutput(STATS, (cluster, counted.trimmed(self.members)))
        if missing:
            yield beam.pvalue.TaggedOutput(COUNTS, (f"{STAGE}.no_figure_row", missing))
        yield uri, checked.keys, ids, distances

    def _captions(self, uri: str) -> dict[str, str]:
        figures = storage.join(self.figures, _name(uri))
        try:
            return figure_rows.captions(figures)
        except (OSError, ValueError, KeyError, pa.ArrowException) as err:
            log.warning("no captions for %s: %s is unreadable (%s)", _name(uri), figures, err)
            return {}


class CombineStats(beam.CombineFn):
    def __init__(self, members: int):
        self.members = members

    def create_accumulator(self):
        return summary.ClusterStats()

    def add_input(self, accumulator, stats):
        return summary.merge([accumulator, stats], self.members)

    def merge_accumulators(self, accumulators):
        return summary.merge(list(accumulators), self.members)

    def extract_output(self, accumulator):
        return accumulator.trimmed(self.members)


def summarise(stats: list, model: dict, expert: labels.ExpertLabels | None, embed_info: dict):
    """Every cluster's stats -> {"summary": clusters.json content, "fields": cluster id ->
    the Annotation label fields of its members, "counts": report counts}; no summary where
    there is no model (no usable row)."""
    if model is None:
        return {"summary": None, "fields": {}, "counts": []}
    taxonomy = load_taxonomy()
    clusters = int(model["meta"]["clusters"])
    inside, outside = (expert or labels.ExpertLabels()).split(clusters)
    if outside:
        shown = ", ".join(str(c) for c in outside[:20]) + (" ..." if len(outside) > 20 else "")
        log.warning(
            "--cluster_labels: %d cluster ids outside this clustering of %d clusters: %s",
            len(outside),
            clusters,
            shown,
        )
    content, applied = summary.build_summary(
        dict(stats), model["meta"], embed_info, inside, taxonomy
    )
    counts = [
        (f"clustering.labelled_by.{(lab.source if lab else 'none')}", 1) for lab in applied.values()
    ]
    if expert is not None:
        counts += [
            (f"{LABELS_STAGE}.out", len(inside)),
            (f"{LABELS_STAGE}.outside_clustering", len(outside)),
        ]
    return {
        "summary": content,
        "fields": {c: summary.annotation_fields(c, lab) for c, lab in applied.items()},
        "counts": counts,
    }


def write_summary(summarised: dict, output: str, guard=None) -> list[str]:
    """clusters.json, clusters.parquet and the gallery page."""
    content = summarised["summary"]
    if content is None:
        return []
    if guard is not None:
        guard()
    storage.atomic_write(storage.join(output, "clusters.json"), [summary.summary_json(content)])
    write_parquet(storage.join(output, "clusters.parquet"), summary.summary_table(content), guard)
    return write_gallery_page(content, output, guard)


def write_gallery_page(content: dict, output: str, guard=None) -> list[str]:
    """The gallery page, from clusters.json's content alone (its thumbnails are written by
    WriteThumbnails); the paths written, relative to gallery/."""
    written = []
    for path, data in sorted(build_gallery(content).items()):
        if guard is not None:
            guard()
        storage.atomic_write(storage.join(output, GALLERY, path), [data])
        written.append(path)
    return written


class WriteAnnotations(beam.DoFn):
    """(uri, keys, ids, distances) of an embeddings file -> annotations/<its name>, rows in
    its order, each with its cluster's label fields; yields the row count."""

    def __init__(self, output: str, guard=None):
        self.output, self.guard = output, guard

    def process(self, assigned, labelled: dict):
        uri, keys, ids, distances = assigned
        fields = labelled["fields"]
        columns: dict[str, list] = {f.name: [] for f in ANNOTATION_SCHEMA}
        columns["key"] = list(keys)
        columns["image_cluster_id"] = [int(c) for c in ids]
        columns["image_cluster_distance"] = [float(d) for d in distances]
        for cluster in columns["image_cluster_id"]:
            for name, value in fields[cluster].items():
                columns[name].append(value)
        table = pa.Table.from_pydict(columns, schema=ANNOTATION_SCHEMA)
        write_parquet(storage.join(self.output, "annotations", _name(uri)), table, self.guard)
        progress.tick("annotations", len(keys))
        yield len(keys)


class WriteThumbnails(beam.DoFn):
    """An embeddings file -> thumbnails (gallery/thumbs/...) of the gallery's samples that
    its figure file of the same name holds. Counts under the "gallery" stage: in (images
    found), out (thumbnails written), and dead letters (an image too large to decode, or
    not an image); the sample itself stays annotated."""

    def __init__(self, figures: str, output: str, guard=None):
        self.figures, self.output, self.guard = figures, output, guard

    def process(self, uri: str, labelled: dict):
        found = self._images(uri, labelled)
        made = 0
        for key, image in sorted(found.items()):
            try:
                small = make_thumbnail(image)
            except ImageTooLarge as err:  # over the pixel bound, said by its header
                yield dead(GALLERY, key, TOO_LARGE, str(err), uri)
                continue
            except (OSError, ValueError, Image.DecompressionBombError) as err:  # not decodable
                yield dead(GALLERY, key, NO_THUMBNAIL, str(err), uri)
                continue
            if self.guard is not None and made == 0:
                self.guard()
            storage.write_bytes(storage.join(self.output, GALLERY, thumbnail_path(key)), small)
            made += 1
        if found:
            yield f"{GALLERY}.in", len(found)
        if made:
            yield f"{GALLERY}.out", made

    def _images(self, uri: str, labelled: dict) -> dict[str, bytes]:
        if labelled["summary"] is None:
            return {}
        if getattr(self, "_summary", None) is not labelled["summary"]:
            self._summary = labelled["summary"]
            self._wanted = summary.thumbnail_keys(self._summary)
        figures = storage.join(self.figures, _name(uri))
        if not self._wanted or not storage.exists(figures):
            return {}
        try:
            return figure_rows.images(figures, self._wanted)
        except (OSError, ValueError, KeyError, pa.ArrowException) as err:
            log.warning("no thumbnails from %s: %s", figures, err)
            return {}
