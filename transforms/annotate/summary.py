"""What annotate learns about each cluster, and the summary it writes (clusters.json,
clusters.parquet; the gallery is made from the same content). Pure, Beam-free.

Members are counted per cluster in `ClusterStats`, which merge in any order to the same
result (sums, and the nearest members by (distance, key)), so the summary is the same on
every runner.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa

from transforms.annotate import labels as labelling
from transforms.annotate.clustering import MODEL_FILE
from transforms.annotate.taxonomy import Taxonomy
from transforms.annotate.thumbnails import thumbnail_path
from transforms.records import arrow_schema

SUMMARY_VERSION = 1
CAPTION_CHARS = 300  # of a nearest member's caption, in the summary
TOP_TERMS = 10
NO_LABEL = {
    "source": None,
    "label_id": None,
    "panel_type": None,
    "panel_subtype": None,
    "global_class": [],
    "local_class": [],
    "score": None,
}


@dataclass
class ClusterStats:
    """A cluster's members so far: their number, their captions' votes (local concepts
    named, global concepts named, panels shown), their images' zero-shot votes, and the
    nearest few to the centroid as (distance, key, caption head, concepts named)."""

    size: int = 0
    captions: int = 0  # members whose caption was found (and is not empty)
    multiple: int = 0  # of those, captions that show several panels
    concepts: Counter = field(default_factory=Counter)
    global_concepts: Counter = field(default_factory=Counter)  # members naming each
    zero_shot_voters: int = 0
    zero_shot: Counter = field(default_factory=Counter)
    nearest: list = field(default_factory=list)

    def add(
        self,
        key: str,
        distance: float,
        caption: str | None,
        concepts: list[str],
        multiple: bool,
        limit: int,
        zero_shot: str | None = None,
        global_concepts: tuple[str, ...] = (),
    ) -> None:
        """`concepts`: the distinct local concepts the caption names; `global_concepts`:
        the distinct global concepts they belong to (one vote each per member)."""
        self.size += 1
        if caption:
            self.captions += 1
            self.multiple += int(multiple)
            self.concepts.update(concepts)
            self.global_concepts.update(global_concepts)
        if zero_shot is not None:
            self.zero_shot_voters += 1
            self.zero_shot[zero_shot] += 1
        if limit > 0:
            head = (caption or "")[:CAPTION_CHARS]
            self.nearest.append((round(float(distance), 6), key, head, tuple(concepts)))
            if len(self.nearest) > 4 * limit:  # trim now and then, not on every member
                self.nearest = sorted(self.nearest)[:limit]

    def trimmed(self, limit: int) -> ClusterStats:
        self.nearest = sorted(self.nearest)[:limit]
        return self


def merge(stats: list[ClusterStats], limit: int) -> ClusterStats:
    total = ClusterStats()
    for s in stats:
        total.size += s.size
        total.captions += s.captions
        total.multiple += s.multiple
        total.concepts.update(s.concepts)
        total.global_concepts.update(s.global_concepts)
        total.zero_shot_voters += s.zero_shot_voters
        total.zero_shot.update(s.zero_shot)
        total.nearest.extend(s.nearest)
    return total.trimmed(limit)


def suggestions(stats: ClusterStats, taxonomy: Taxonomy) -> list[labelling.Label]:
    """The votes a cluster's members give: caption vote first, then zero-shot."""
    found = []
    by_captions = labelling.vote(
        stats.concepts,
        stats.captions,
        stats.multiple,
        stats.captions,
        taxonomy,
        labelling.CAPTION_VOTE,
        stats.global_concepts,
    )
    if by_captions is not None:
        found.append(by_captions)
    by_images = labelling.vote(
        stats.zero_shot,
        stats.zero_shot_voters,
        stats.multiple,
        stats.captions,  # prompts say nothing of panels: the captions' count stands
        taxonomy,
        labelling.ZERO_SHOT,
    )
    if by_images is not None:
        found.append(by_images)
    return found


def applied_entry(cluster: int, label: labelling.Label | None) -> dict:
    if label is None:
        return dict(NO_LABEL)
    return {"source": label.source, "label_id": cluster, **label.as_entry(), "score": label.score}


def cluster_entry(
    cluster: int,
    stats: ClusterStats,
    expert: labelling.Label | None,
    taxonomy: Taxonomy,
) -> tuple[dict, labelling.Label | None]:
    """A cluster's entry in clusters.json, and the label its members get."""
    suggested = suggestions(stats, taxonomy)
    label = labelling.choose(expert, suggested)
    terms = sorted(stats.concepts.items(), key=lambda item: (-item[1], item[0]))[:TOP_TERMS]
    entry = {
        "cluster_id": cluster,
        "size": stats.size,
        "nearest": [
            {
                "key": key,
                "distance": distance,
                "caption": caption,
                "terms": list(found),
                "thumbnail": thumbnail_path(key),
            }
            for distance, key, caption, found in sorted(stats.nearest)
        ],
        "top_terms": [{"term": t, "count": n} for t, n in terms],
        "suggested": [s.as_suggestion() for s in suggested],
        "expert": expert.as_entry() if expert is not None else None,
        "applied": applied_entry(cluster, label),
    }
    return entry, label


def build_summary(
    stats: dict[int, ClusterStats],
    model_meta: dict,
    embed_info: dict,
    expert: dict[int, labelling.Label],
    taxonomy: Taxonomy,
) -> tuple[dict, dict[int, labelling.Label | None]]:
    """clusters.json's content (every cluster of the model, members or not) and the label
    each cluster's members get."""
    entries, applied = [], {}
    for cluster in range(int(model_meta["clusters"])):
        entry, label = cluster_entry(
            cluster, stats.get(cluster, ClusterStats()), expert.get(cluster), taxonomy
        )
        entries.append(entry)
        applied[cluster] = label
    summary = {
        "version": SUMMARY_VERSION,
        "embedding_model": model_meta["embedding_model"],
        "random_weights": bool(embed_info.get("random_weights", False)),
        "cluster_model": MODEL_FILE,
        "clusters": int(model_meta["clusters"]),
        "pca_dims": int(model_meta["pca_dims"]),
        "taxonomy": taxonomy.as_json(),
        "panel_types": list(taxonomy.panel_types),
        "panel_subtypes": list(taxonomy.panel_subtypes),
        "cluster_list": entries,
    }
    return summary, applied


def annotation_fields(cluster: int, label: labelling.Label | None) -> dict:
    """The Annotation fields a label gives every member of `cluster` (but key, id and
    distance)."""
    if label is None:
        return {
            "image_label_id": None,
            "image_panel_type": None,
            "image_panel_subtype": None,
            "image_primary_label": [],
            "image_secondary_label": [],
            "image_label_source": None,
            "image_label_score": None,
        }
    return {
        "image_label_id": cluster,
        "image_panel_type": label.panel_type,
        "image_panel_subtype": label.panel_subtype,
        "image_primary_label": list(label.global_class),
        "image_secondary_label": list(label.local_class),
        "image_label_source": label.source,
        "image_label_score": label.score,
    }


def summary_json(summary: dict) -> bytes:
    return (json.dumps(summary, indent=1, ensure_ascii=False) + "\n").encode()


@dataclass
class ClusterRow:
    """A row of clusters.parquet: one cluster, its applied label and what it rests on
    (clusters.json holds the same, nested)."""

    cluster_id: int
    size: int
    label_source: str | None
    label_id: int | None
    panel_type: str | None
    panel_subtype: str | None
    primary_label: list[str]
    secondary_label: list[str]
    label_score: float | None
    expert: bool
    top_terms: list[str]
    top_term_counts: list[int]
    nearest_keys: list[str]
    nearest_distances: list[float]
    suggested: str  # the suggestions as JSON


CLUSTER_SCHEMA = arrow_schema(ClusterRow)


def cluster_rows(summary: dict) -> list[dict]:
    rows = []
    for entry in summary["cluster_list"]:
        applied = entry["applied"]
        rows.append(
            {
                "cluster_id": entry["cluster_id"],
                "size": entry["size"],
                "label_source": applied["source"],
                "label_id": applied["label_id"],
                "panel_type": applied["panel_type"],
                "panel_subtype": applied["panel_subtype"],
                "primary_label": applied["global_class"],
                "secondary_label": applied["local_class"],
                "label_score": applied["score"],
                "expert": entry["expert"] is not None,
                "top_terms": [t["term"] for t in entry["top_terms"]],
                "top_term_counts": [t["count"] for t in entry["top_terms"]],
                "nearest_keys": [m["key"] for m in entry["nearest"]],
                "nearest_distances": [m["distance"] for m in entry["nearest"]],
                "suggested": json.dumps(entry["suggested"], sort_keys=True),
            }
        )
    return rows


def summary_table(summary: dict) -> pa.Table:
    """clusters.parquet's table (written by sinks.write_parquet)."""
    return pa.Table.from_pylist(cluster_rows(summary), schema=CLUSTER_SCHEMA)


def thumbnail_keys(summary: dict) -> frozenset[str]:
    """The samples the gallery shows: every cluster's nearest members."""
    return frozenset(m["key"] for e in summary["cluster_list"] for m in e["nearest"])
