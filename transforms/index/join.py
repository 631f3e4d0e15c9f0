"""What becomes of each dataset sample and each embeddings row: the join by key. Pure.

A dataset sample gets its vectors when exactly one usable embeddings row has its key;
otherwise it is a dead letter of stage `index_vectors` (and still a row of the keyword
index): no row (`embedding_not_found`), an unusable one (`embedding_invalid`: wrong
dimension, NaN or infinity, a zero vector, another model), or several
(`embedding_duplicate`). Embeddings rows whose key is no sample of the dataset (the
embeddings of a subset's parent) are counted, not dead letters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from transforms.index.vectors import check_vector

STAGE = "index_vectors"
EMBEDDINGS_STAGE = "index_embeddings"  # the embeddings files themselves
KEYWORD_STAGE = "index_keyword"
NOT_FOUND = "embedding_not_found"
INVALID = "embedding_invalid"
DUPLICATE = "embedding_duplicate"
UNREADABLE = "embeddings_unreadable"
UNUSED = "embeddings_unused"


@dataclass
class Vectors:
    """One embeddings row as checked: its vectors (unit float32) or why it is unusable."""

    source: str  # the embeddings file
    image: np.ndarray | None = None
    caption: np.ndarray | None = None
    problem: str = ""


def check_row(
    source: str, model: str | None, image, caption, model_id: str, dim: int, with_caption: bool
) -> Vectors:
    """An embeddings row's vectors, checked against embed_model.json's model and dim (a
    caption vector checked only where the model has one)."""
    if model != model_id:
        return Vectors(source, problem=f"model {model!r}, embed_model.json says {model_id!r}")
    image_vector, why = check_vector(image, dim)
    if image_vector is None:
        return Vectors(source, problem=f"image vector: {why}")
    caption_vector = None
    if with_caption:
        caption_vector, why = check_vector(caption, dim)
        if caption_vector is None:
            return Vectors(source, problem=f"caption vector: {why}")
    return Vectors(source, image_vector, caption_vector)


@dataclass
class Outcome:
    """What the join made of one key."""

    sample: tuple[int, str] | None  # (sample id, its Parquet file) where the key is a sample
    vectors: Vectors | None = None  # the sample's usable vectors
    dead: tuple[str, str, str] | None = None  # (reason, detail, source)
    unused: int = 0  # embeddings rows of a key no sample has


def join(samples: list[tuple[int, str]], rows: list[Vectors]) -> list[Outcome]:
    """The outcome of each sample of a key (a dataset has each key once: the index job
    refuses one that has a key twice, steps.DuplicateKey) or, with no sample, the count of
    unused rows."""
    if not samples:
        return [Outcome(None, unused=len(rows))]
    out = []
    for sample in sorted(samples):
        if not rows:
            dead = (NOT_FOUND, "no embeddings row has this key", sample[1])
            out.append(Outcome(sample, dead=dead))
        elif len(rows) > 1:
            files = sorted({r.source for r in rows})
            detail = f"{len(rows)} embeddings rows have this key (in {', '.join(files)})"
            out.append(Outcome(sample, dead=(DUPLICATE, detail, files[0])))
        elif rows[0].problem:
            out.append(Outcome(sample, dead=(INVALID, rows[0].problem, rows[0].source)))
        else:
            out.append(Outcome(sample, vectors=rows[0]))
    return out
