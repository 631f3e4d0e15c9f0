"""TEMPORARY: an index folder written directly with faiss and sqlite3, for the server's tests.

`biomedica index` (written in parallel) is what makes IDX folders; until it is merged, the
server's tests need one, so this writes the files of the issue 11 contract itself: exact
(flat) inner-product indexes with sample ids, samples.sqlite with the `samples` table and
the contentless FTS5 table. At merge the fixture switches to `biomedica index` and this file
goes.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import faiss
import numpy as np
import pyarrow.parquet as pq

from transforms.index.ids import shard_ids

SCHEMA = """
CREATE TABLE samples (
  id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, shard TEXT NOT NULL,
  tar_offset INTEGER NOT NULL, tar_size INTEGER NOT NULL,
  caption TEXT, article_title TEXT, article_journal TEXT, article_year INTEGER,
  article_license TEXT, article_license_group TEXT, article_accession_id TEXT,
  image_primary_label TEXT, image_secondary_label TEXT, image_cluster_id INTEGER,
  has_image_vector INTEGER NOT NULL, has_caption_vector INTEGER NOT NULL);
CREATE VIRTUAL TABLE samples_fts USING fts5(caption, image_context, article_title,
  content='', tokenize='porter unicode61 remove_diacritics 2');
"""
TOKENIZER = "porter unicode61 remove_diacritics 2"


def _vectors(emb: Path, column: str, ids: dict[str, int]):
    keys, rows = [], []
    for path in sorted((emb / "embeddings").glob("*.parquet")):
        table = pq.read_table(path)
        if column not in table.column_names:
            return None
        keys += table.column("key").to_pylist()
        rows.append(np.asarray(table.column(column).to_pylist(), dtype=np.float32))
    have = [(ids[k], i) for i, k in enumerate(keys) if k in ids]
    matrix = np.concatenate(rows)[[i for _, i in have]]
    return np.array([s for s, _ in have], dtype=np.int64), matrix


def build_index(ds: Path, emb: Path, idx: Path) -> dict:
    ds, emb, idx = Path(ds), Path(emb), Path(idx)
    idx.mkdir(parents=True)
    manifest_bytes = (ds / "manifest.json").read_bytes()
    dataset = json.loads(manifest_bytes)
    model = json.loads((emb / "embed_model.json").read_text())
    rows = []
    for shard in shard_ids(dataset):
        table = pq.read_table(ds / shard.parquet_path).to_pylist()
        rows += [(shard.base + i, r) for i, r in enumerate(table)]
    ids = {r["key"]: i for i, r in rows}
    vectors = {}
    for kind, column in (("image", "image_embedding"), ("caption", "caption_embedding")):
        found = _vectors(emb, column, ids)
        if found is None:
            continue
        sample_ids, matrix = found
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(matrix.shape[1]))
        index.add_with_ids(matrix, sample_ids)
        faiss.write_index(index, str(idx / f"{kind}.faiss"))
        vectors[kind] = {
            "file": f"{kind}.faiss",
            "kind": "flat",
            "factory": "IDMap2,Flat",
            "metric": "inner_product",
            "dim": int(matrix.shape[1]),
            "count": int(index.ntotal),
            "nprobe": None,
            "train_samples": 0,
            "recall_at_10": 1.0,
            "recall_queries": 0,
            "_ids": set(sample_ids.tolist()),
        }
    db = sqlite3.connect(idx / "samples.sqlite")
    db.executescript(SCHEMA)
    for sample, r in rows:
        db.execute(
            "INSERT INTO samples VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                sample,
                r["key"],
                r["shard"],
                r["tar_offset"],
                r["tar_size"],
                r["caption"],
                r["article_title"],
                r["article_journal"],
                r["article_year"],
                r["article_license"],
                r["article_license_group"],
                r["article_accession_id"],
                json.dumps(r["image_primary_label"] or []),
                json.dumps(r["image_secondary_label"] or []),
                r["image_cluster_id"],
                int(sample in vectors.get("image", {}).get("_ids", ())),
                int(sample in vectors.get("caption", {}).get("_ids", ())),
            ),
        )
        db.execute(
            "INSERT INTO samples_fts(rowid, caption, image_context, article_title) "
            "VALUES (?,?,?,?)",
            (sample, r["caption"], "\n".join(r["image_context"] or []), r["article_title"]),
        )
    db.commit()
    db.close()
    for info in vectors.values():
        info.pop("_ids")
    out = {
        "version": 1,
        "dataset": str(ds),
        "dataset_manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
        "embeddings": str(emb),
        "model": model,
        "samples": len(rows),
        "random_weights": bool(model.get("random_weights")),
        "vectors": vectors,
        "keyword": {
            "file": "samples.sqlite",
            "engine": "sqlite-fts5",
            "tokenizer": TOKENIZER,
            "columns": ["caption", "image_context", "article_title"],
            "rows": len(rows),
        },
        "parameters": {"built_by": "tests/index_fixture.py"},
    }
    (idx / "manifest.json").write_text(json.dumps(out, indent=2, sort_keys=True))
    return out
