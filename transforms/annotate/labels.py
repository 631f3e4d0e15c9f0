"""A cluster's label and where it came from: an expert's file, a vote of its members'
captions, or a zero-shot vote of its members' images against prompts. Pure, Beam-free.

Which applies: the expert's label (score 1.0) where the file covers the cluster; else the
caption vote; else the zero-shot vote; a vote applies only where its top concept holds at
least MIN_SHARE of the voters (below that it stays a suggestion in clusters.json).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from transforms.annotate.caption_concepts import MULTIPLE, SINGLE, panel_subtype
from transforms.annotate.taxonomy import Taxonomy

EXPERT, CAPTION_VOTE, ZERO_SHOT = "expert", "caption_vote", "zero_shot"
# A vote whose top concept fewer than this share of the voters named stays a suggestion.
MIN_SHARE = 0.1
# Concepts beside the top one in a label: those with at least this share of its votes.
RUNNER_UP = 0.5
MAX_CONCEPTS = 3
LABEL_FIELDS = ("panel_type", "panel_subtype", "global_class", "local_class")


@dataclass(frozen=True)
class Label:
    """One cluster's label in BIOMEDICA's terms, with its source and score."""

    source: str
    panel_type: str | None
    panel_subtype: str | None
    global_class: tuple[str, ...] = ()
    local_class: tuple[str, ...] = ()
    score: float | None = None

    def as_entry(self) -> dict:
        """BIOMEDICA's cluster_labels.json entry."""
        return {
            "panel_type": self.panel_type,
            "panel_subtype": self.panel_subtype,
            "global_class": list(self.global_class),
            "local_class": list(self.local_class),
        }

    def as_suggestion(self) -> dict:
        return {"source": self.source, **self.as_entry(), "score": self.score}


# ---- the expert's file ------------------------------------------------------------------


@dataclass
class ExpertLabels:
    """A parsed cluster_labels.json: good entries by cluster id, and the bad ones as
    (cluster id as written, reason, detail)."""

    labels: dict[int, Label] = field(default_factory=dict)
    bad: list[tuple[str, str, str]] = field(default_factory=list)

    def split(self, clusters: int) -> tuple[dict[int, Label], list[int]]:
        """(labels of clusters 0..clusters-1, ids the clustering does not have)."""
        inside = {c: label for c, label in self.labels.items() if c < clusters}
        return inside, sorted(c for c in self.labels if c >= clusters)


def _strings(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def check_entry(entry, taxonomy: Taxonomy) -> tuple[str, str] | None:
    """(reason, detail) where an entry is not a label in BIOMEDICA's format over our
    taxonomy; None where it is."""
    if not isinstance(entry, dict):
        return "label_not_an_object", f"expected an object, got {type(entry).__name__}"
    missing = [f for f in LABEL_FIELDS if f not in entry]
    if missing:
        return "label_missing_field", f"missing {', '.join(missing)}"
    if entry["panel_type"] not in taxonomy.panel_types:
        return "label_bad_panel_type", f"panel_type {entry['panel_type']!r} is not one of " + (
            ", ".join(taxonomy.panel_types)
        )
    if entry["panel_subtype"] not in taxonomy.panel_subtypes:
        return "label_bad_panel_subtype", f"panel_subtype {entry['panel_subtype']!r} unknown"
    for name, known in (("global_class", taxonomy.concepts), ("local_class", taxonomy.global_of)):
        if not _strings(entry[name]):
            return "label_bad_field", f"{name} must be a list of strings"
        unknown = [c for c in entry[name] if c not in known]
        if unknown:
            return "label_unknown_concept", f"{name} {unknown} not in the taxonomy"
    return None


class _Entries(dict):
    """A JSON object that also keeps its (name, value) pairs as written: json.loads would
    keep only the last value of a name given twice."""

    def __init__(self, pairs):
        super().__init__(pairs)
        self.pairs = pairs


def parse_expert_labels(data: bytes, taxonomy: Taxonomy) -> ExpertLabels:
    """BIOMEDICA's {"<cluster id>": {panel_type, panel_subtype, global_class, local_class}}.
    A file that is not a JSON object raises ValueError; a bad entry is kept aside, and so is
    every entry after the first of a cluster id given twice ("3" and "03" too)."""
    try:
        content = json.loads(data, object_pairs_hook=_Entries)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"not JSON: {err}") from None
    if not isinstance(content, dict):
        raise ValueError("not a JSON object of cluster id -> label")
    parsed = ExpertLabels()
    seen: set[int] = set()
    for key, entry in content.pairs:
        text = str(key).strip()
        if not text.isdigit() or not text.isascii() or len(text) > 9:
            parsed.bad.append((str(key), "label_bad_cluster_id", "not a cluster id (0, 1, ...)"))
            continue
        cluster = int(text)
        if cluster in seen:
            parsed.bad.append((str(key), "label_duplicate_cluster_id", f"{cluster} given twice"))
            continue
        seen.add(cluster)
        wrong = check_entry(entry, taxonomy)
        if wrong is not None:
            parsed.bad.append((str(key), *wrong))
            continue
        parsed.labels[cluster] = Label(
            EXPERT,
            entry["panel_type"],
            entry["panel_subtype"],
            tuple(entry["global_class"]),
            tuple(entry["local_class"]),
            1.0,
        )
    return parsed


# ---- votes ------------------------------------------------------------------------------


def _ranked(counts: Counter) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def _leaders(counts: Counter, most: int) -> list[str]:
    """The top concept and those with at least RUNNER_UP of its votes, at most `most`."""
    ranked = _ranked(counts)
    if not ranked:
        return []
    top = ranked[0][1]
    return [c for c, n in ranked[:most] if n >= max(1, RUNNER_UP * top)]


def global_votes(local_counts: Counter, taxonomy: Taxonomy) -> Counter:
    """Global concept votes where each voter named one local concept (the zero-shot vote)."""
    found: Counter = Counter()
    for concept, n in local_counts.items():
        found[taxonomy.global_of[concept]] += n
    return found


def vote(
    counts: Counter,
    voters: int,
    multiple: int,
    panel_voters: int,
    taxonomy: Taxonomy,
    source: str,
    global_counts: Counter | None = None,
) -> Label | None:
    """The label a vote gives. Global concepts are voted first: `global_counts` holds, per
    global concept, the members naming any of its local concepts (a member votes once per
    global concept, however many of its local concepts it names; by default each voter named
    one local concept of `counts`). The winner and its runners-up are the global class; the
    local class is voted among the winner's local concepts (`counts`: members per local
    concept), then each runner-up's top local concept. So a plot cluster whose members name
    bar, line and scatter plots is "Plots and Charts", though "immunohistochemistry" may be
    its most frequent single term. `multiple` of `panel_voters` members showed several
    panels. Score: the share of the `voters` naming the winning global concept."""
    if voters <= 0 or not counts:
        return None
    if global_counts is None:
        global_counts = global_votes(counts, taxonomy)
    global_ = tuple(_leaders(global_counts, MAX_CONCEPTS))
    if not global_:
        return None
    winner = global_[0]
    local = _leaders(
        Counter({c: n for c, n in counts.items() if taxonomy.global_of[c] == winner}),
        MAX_CONCEPTS,
    )
    for other in global_[1:]:
        local += _leaders(
            Counter({c: n for c, n in counts.items() if taxonomy.global_of[c] == other}), 1
        )
    kind = None
    if panel_voters > 0:
        kind = MULTIPLE if 2 * multiple >= panel_voters else SINGLE
    return Label(
        source,
        kind,
        panel_subtype(kind, global_),
        global_,
        tuple(local),
        round(min(1.0, global_counts[winner] / voters), 6),
    )


def applies(label: Label | None) -> bool:
    return label is not None and (label.source == EXPERT or (label.score or 0) >= MIN_SHARE)


def choose(expert: Label | None, suggestions: list[Label]) -> Label | None:
    """The label a cluster's members get: the expert's, else the first vote that applies
    (suggestions come caption vote first)."""
    if expert is not None:
        return expert
    return next((s for s in suggestions if applies(s)), None)


# ---- zero-shot --------------------------------------------------------------------------

PROMPTS = (
    "a figure from a biomedical paper showing {}",
    "a scientific image of {}",
)
# Too vague to prompt for: an image nearest these says nothing.
NOT_PROMPTED = frozenset({"ambiguous"})


def prompt_texts(taxonomy: Taxonomy) -> tuple[list[str], list[str]]:
    """(concepts, prompts): every prompted local concept, each with len(PROMPTS) prompts in
    a row of the prompt list."""
    concepts = [c for c in taxonomy.locals if c not in NOT_PROMPTED]
    return concepts, [p.format(c) for c in concepts for p in PROMPTS]


def concept_matrix(prompt_vectors: np.ndarray, concepts: list[str]) -> np.ndarray:
    """(concepts, dim): each concept's prompt embeddings averaged and L2-normalised."""
    vectors = np.asarray(prompt_vectors, dtype=np.float32).reshape(len(concepts), len(PROMPTS), -1)
    mean = vectors.mean(axis=1)
    norms = np.linalg.norm(mean, axis=1, keepdims=True)
    return (mean / np.where(norms > 0, norms, 1)).astype(np.float32)


def nearest_concepts(images: np.ndarray, matrix: np.ndarray, concepts: list[str]) -> list[str]:
    """Each image's concept: the prompt most similar to it (cosine; ties to the first)."""
    if len(images) == 0:
        return []
    scores = np.asarray(images, dtype=np.float32) @ matrix.T
    return [concepts[i] for i in np.argmax(scores, axis=1)]


def zero_shot_allowed(embed_model: dict) -> tuple[bool, str]:
    """Whether embed's model can vote (a text tower with real weights), and why not."""
    if not embed_model.get("caption"):
        return False, f"zero-shot skipped: {embed_model.get('model_id')} has no text tower"
    if embed_model.get("random_weights", True):
        return False, (
            f"zero-shot skipped: {embed_model.get('model_id')} has random weights "
            "(its text and image embeddings do not share a meaning)"
        )
    return True, "zero-shot: image embeddings against taxonomy prompts"


def prompt_matrix(model: str, weights: str | None, taxonomy: Taxonomy) -> tuple[list[str], object]:
    """(concepts, (concepts, dim) matrix) from embed's own model: its text tower embeds the
    prompts once per run. Called only where zero_shot_allowed said yes."""
    from transforms.embed.models import load_embedder  # torch: only on this path

    embedder = load_embedder(model, weights)
    concepts, prompts = prompt_texts(taxonomy)
    return concepts, concept_matrix(embedder.embed_texts(prompts), concepts)
