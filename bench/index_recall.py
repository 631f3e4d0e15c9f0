"""Benchmark: the vector index `biomedica index` picks for 100k vectors, against exact search.

    python bench/index_recall.py --vectors 100000 --dim 512 --components 1000 4000

The vectors are synthetic, shaped like image embeddings rather than uniform noise: a
Gaussian mixture of `--components` components, each a rank-32 Gaussian around its centre
plus a little isotropic noise, normalised to unit length (fewer components: neighbourhoods
that follow the clusters, which the inverted lists find easily; more: nearest neighbours
that cross clusters, harder). For each mixture it builds the index with the job's own code
(transforms.index.vectors: plan, train, encode per partition, append in id order) and the
job's defaults, then reports the recall@10 against exact search on 1000 of the vectors
(the nprobe chosen for --recall_target), the build time by step (train, fill: encoding
every partition, merge: appending the codes), the index size, and single-threaded query
latency (one query at a time, k=10). Then it builds samples.sqlite (transforms.index.keyword,
the job's own code) from `--keyword_rows` synthetic rows with text of realistic length
(an 80-word caption, two 120-word in-line references, a 12-word title, drawn from a
20,000-word vocabulary) and reports the time and file size. Run by hand; the README's
figures come from it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from transforms.index import keyword, vectors  # noqa: E402

RANK = 32  # each component's own dimensions


def mixture(n: int, dim: int, components: int, seed: int) -> np.ndarray:
    """(n, dim) unit vectors from the mixture described in the module doc."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((components, dim)).astype(np.float32)
    labels = rng.integers(0, components, n)
    x = centres[labels]
    for c in range(components):
        members = np.flatnonzero(labels == c)
        basis = rng.standard_normal((dim, RANK)).astype(np.float32) * (0.4 * np.sqrt(dim) / RANK)
        x[members] += rng.standard_normal((len(members), RANK)).astype(np.float32) @ basis.T
    x += 0.05 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def one(args, components: int) -> dict:
    x = mixture(args.vectors, args.dim, components, args.seed)
    ids = np.arange(len(x), dtype=np.int64)
    rng = np.random.default_rng(args.seed + 1)
    queries = x[rng.choice(len(x), args.queries, replace=False)]
    started = time.perf_counter()
    exact = vectors.exact_top(queries, x, ids)
    exact_seconds = time.perf_counter() - started

    plan = vectors.plan(len(x), args.dim, "auto", args.exact_below, args.train_sample)
    started = time.perf_counter()
    trained = vectors.train(plan, x[: args.train_sample], seed=0)
    train_seconds = time.perf_counter() - started
    template = vectors.load(trained)
    fill_seconds, parts = 0.0, []
    for start in range(0, len(x), args.partition_size):
        chunk = slice(start, start + args.partition_size)
        began = time.perf_counter()
        parts.append((vectors.encode(template, x[chunk]), ids[chunk]))
        fill_seconds += time.perf_counter() - began
    started = time.perf_counter()
    index = vectors.load(trained)
    for codes, part_ids in parts:
        vectors.append(index, codes, part_ids)
    vectors.finish(index)
    merge_seconds = time.perf_counter() - started
    nprobe, recall = vectors.tune_nprobe(index, queries, exact[1], args.recall_target)

    latencies = []
    with vectors.one_thread():
        for query in queries[: args.latency_queries]:
            began = time.perf_counter()
            index.search(query[None, :], 10)
            latencies.append((time.perf_counter() - began) * 1000)
    exact_latency = []
    flat = vectors.load(vectors.train(vectors.plan(len(x), args.dim, "flat"), None))
    vectors.append(flat, vectors.encode(flat, x), ids)
    with vectors.one_thread():
        for query in queries[:100]:
            began = time.perf_counter()
            flat.search(query[None, :], 10)
            exact_latency.append((time.perf_counter() - began) * 1000)
    return {
        "components": components,
        "factory": plan.factory,
        "nprobe": nprobe,
        "recall_at_10": round(recall, 4),
        "mean_similarity_of_exact_hits_1_and_10": [
            round(float(exact[0][:, 1].mean()), 3),
            round(float(exact[0][:, 9].mean()), 3),
        ],
        "train_seconds": round(train_seconds, 1),
        "fill_seconds": round(fill_seconds, 1),
        "merge_seconds": round(merge_seconds, 2),
        "exact_top10_seconds_all_queries": round(exact_seconds, 1),
        "index_bytes": len(vectors.serialize(index)),
        "flat_index_bytes": len(vectors.serialize(flat)),
        "query_ms_p50": round(float(np.percentile(latencies, 50)), 2),
        "query_ms_p99": round(float(np.percentile(latencies, 99)), 2),
        "exact_query_ms_p50": round(float(np.percentile(exact_latency, 50)), 2),
    }


def keyword_build(rows: int, seed: int) -> dict:
    import os
    import tempfile

    rng = np.random.default_rng(seed)
    vocabulary = np.array([f"w{i}x" for i in range(20_000)])

    def words(n: int) -> str:
        return " ".join(vocabulary[rng.zipf(1.3, n) % len(vocabulary)])

    def samples():
        for i in range(rows):
            row = {
                "key": f"PMC{i:08d}_F1",
                "shard": f"commercial/{i // 10000:06d}.tar",
                "tar_offset": i * 40_000,
                "tar_size": 40_000,
                "caption": words(80),
                "image_context": [words(120), words(120)],
                "article_title": words(12),
                "article_year": 2020,
                "image_primary_label": ["Microscopy"],
            }
            yield keyword.row_values(i, row, True, False)

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "samples.sqlite")
        started = time.perf_counter()
        keyword.build(path, samples())
        seconds = time.perf_counter() - started
        size = os.path.getsize(path)
        db = keyword.open_read_only(path)
        began = time.perf_counter()
        for i in range(200):
            db.execute(
                "SELECT rowid FROM samples_fts WHERE samples_fts MATCH ? LIMIT 20", (f"w{i}x",)
            ).fetchall()
        query_ms = (time.perf_counter() - began) / 200 * 1000
        db.close()
    return {
        "rows": rows,
        "build_seconds": round(seconds, 1),
        "seconds_per_million_rows": round(seconds / rows * 1e6, 1),
        "file_bytes": size,
        "bytes_per_row": round(size / rows),
        "match_query_ms_mean": round(query_ms, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--components", type=int, nargs="+", default=[1000, 4000])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--latency_queries", type=int, default=500)
    parser.add_argument("--recall_target", type=float, default=0.95)
    parser.add_argument("--exact_below", type=int, default=100_000)
    parser.add_argument("--train_sample", type=int, default=200_000)
    parser.add_argument("--partition_size", type=int, default=50_000)
    parser.add_argument("--keyword_rows", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    results = [one(args, c) for c in args.components]
    summary = {"vectors": args.vectors, "dim": args.dim, "runs": results}
    if args.keyword_rows:
        summary["keyword"] = keyword_build(args.keyword_rows, args.seed)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
