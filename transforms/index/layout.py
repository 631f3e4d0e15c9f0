"""The files of an index folder (IDX/) and its manifest.json. Pure.

IDX/manifest.json     what the index is: dataset, model, vector indexes, keyword index
IDX/image.faiss       image vectors, faiss ids = sample ids (transforms.index.ids)
IDX/caption.faiss     caption vectors (only where the embeddings have them)
IDX/samples.sqlite    the id map, what a hit shows, the FTS5 keyword index
IDX/dead_letter/, IDX/run_report.json
"""

from __future__ import annotations

import json

from transforms.index import keyword

VERSION = 1
MANIFEST = "manifest.json"
SQLITE = "samples.sqlite"
WORK = "_work"  # encoded partitions between the fill and the assembly: gone after a run
IMAGE = "image"
CAPTION = "caption"


def faiss_file(kind: str) -> str:
    """image.faiss, caption.faiss"""
    return f"{kind}.faiss"


def vector_entry(described: dict, nprobe, train_samples: int, recall: float, queries: int):
    """The manifest's entry for one vector index (vectors.Plan.describe() plus the rest)."""
    return {
        "file": faiss_file(described.pop("name")),
        **described,
        "nprobe": nprobe,
        "train_samples": int(train_samples),
        "recall_at_10": round(float(recall), 4),
        "recall_queries": int(queries),
    }


def keyword_entry(rows: int) -> dict:
    return {
        "file": SQLITE,
        "engine": keyword.ENGINE,
        "tokenizer": keyword.TOKENIZER,
        "columns": list(keyword.FTS_COLUMNS),
        "rows": int(rows),
    }


def build_manifest(
    dataset: str,
    dataset_sha256: str,
    embeddings: str,
    model: dict,
    samples: int,
    vectors: dict,
    keyword_index: dict,
    parameters: dict,
) -> dict:
    return {
        "version": VERSION,
        "dataset": dataset,
        "dataset_manifest_sha256": dataset_sha256,
        "embeddings": embeddings,
        "model": model,
        "samples": int(samples),
        "random_weights": bool(model.get("random_weights", False)),
        "vectors": vectors,
        "keyword": keyword_index,
        "parameters": parameters,
    }


def manifest_bytes(manifest: dict) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
