"""Benchmark: clustering model training, assignment per core, and annotate end to end.

    python bench/cluster_throughput.py [--train_rows 100000] [--dim 512] [--clusters 2000]
                                       [--articles 200 800]

- training: faiss PCA (25 dims) + k-means (--clusters) on --train_rows synthetic unit
  vectors of --dim (a mixture of 4,000 Gaussian blobs, so k-means has structure to find),
  in this process, one thread (as annotate trains: see transforms/annotate/clustering.py);
- assignment: vectors per second through the trained model on one core;
- caption concepts: captions per second through the concept finder and panel cues;
- annotate end to end: for each --articles, a generated sample corpus, extracted, given
  synthetic 512-d embeddings per figure (embed's file layout), then `pipelines.annotate` in
  a child process with one worker (CPU seconds from wait4, so start and imports count);
  CPU seconds per 1,000 samples, and the marginal rate between the two sizes.

Run by hand; never part of the test suite. Results go to bench/results/cluster.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from bench.child import run_pipeline  # noqa: E402
from transforms.annotate import clustering  # noqa: E402
from transforms.annotate.caption_concepts import default_finder, panel_type  # noqa: E402
from transforms.records import embedding_schema  # noqa: E402

RESULTS = REPO / "bench" / "results"
MODEL_ID = "bench-synthetic-v1"


def synthetic(rows: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((4000, dim)).astype(np.float32)
    vectors = centres[rng.integers(0, len(centres), rows)]
    vectors += 0.5 * rng.standard_normal((rows, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def bench_training(rows: int, dim: int, clusters: int) -> tuple[dict, clustering.ClusterModel]:
    sample = synthetic(rows, dim)
    started = time.process_time()
    wall = time.time()
    model = clustering.train(sample, clusters, 25, 0, MODEL_ID)
    return {
        "rows": rows,
        "dim": dim,
        "clusters": model.clusters,
        "pca_dims": model.meta["pca_dims"],
        "cpu_s": round(time.process_time() - started, 2),
        "wall_s": round(time.time() - wall, 2),
        "model_bytes": len(model.to_bytes()),
    }, model


def bench_assignment(model: clustering.ClusterModel, rows: int, dim: int) -> dict:
    vectors = synthetic(rows, dim, seed=1)
    clustering.assign(model, vectors[:1000])  # warm
    started = time.process_time()
    for start in range(0, rows, 10_000):
        clustering.assign(model, vectors[start : start + 10_000])
    cpu = time.process_time() - started
    return {"rows": rows, "cpu_s": round(cpu, 2), "vectors_per_cpu_s": round(rows / cpu)}


def bench_captions(extract: Path) -> dict:
    captions = []
    for f in sorted((extract / "extract" / "figures").glob("*.parquet")):
        captions += [c or "" for c in pq.read_table(f, columns=["caption"]).column(0).to_pylist()]
    captions = (captions * (20_000 // max(1, len(captions)) + 1))[:20_000]
    finder = default_finder()
    started = time.process_time()
    for caption in captions:
        finder.concepts(caption)
        panel_type(caption)
    cpu = time.process_time() - started
    return {"captions": len(captions), "captions_per_cpu_s": round(len(captions) / cpu)}


def prepare(articles: int, root: Path) -> tuple[Path, Path, int]:
    """A sample corpus, its extract output, and synthetic embeddings for every figure."""
    corpus, extract, emb = (
        root / f"corpus-{articles}",
        root / f"extract-{articles}",
        root / f"emb-{articles}",
    )
    if not (extract / "run_report.json").exists():
        python = sys.executable
        subprocess.run(
            [
                python,
                "-m",
                "pipelines.sample",
                "--output",
                str(corpus),
                "--articles",
                str(articles),
                "--image_side",
                "256",
                "--overwrite",
            ],
            cwd=REPO,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        subprocess.run(
            [
                python,
                "-m",
                "pipelines.extract",
                "--source",
                str(corpus),
                "--output",
                str(extract),
                "--overwrite",
                "--log_level",
                "ERROR",
            ],
            cwd=REPO,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    (emb / "embeddings").mkdir(parents=True, exist_ok=True)
    total = 0
    for i, f in enumerate(sorted((extract / "extract" / "figures").glob("*.parquet"))):
        keys = pq.read_table(f, columns=["key"]).column(0).to_pylist()
        vectors = synthetic(len(keys), 512, seed=100 + i)
        table = pa.table(
            {
                "key": keys,
                "model": [MODEL_ID] * len(keys),
                "image_embedding": pa.FixedSizeListArray.from_arrays(
                    pa.array(vectors.ravel()), 512
                ),
            },
            schema=embedding_schema(512, caption=False),
        )
        pq.write_table(table, emb / "embeddings" / f.name)
        total += len(keys)
    info = {
        "version": 1,
        "model": "bench",
        "model_id": MODEL_ID,
        "weights": "none",
        "random_weights": True,
        "dim": 512,
        "caption": False,
        "input": str(extract),
    }
    (emb / "embed_model.json").write_text(json.dumps(info))
    return extract, emb, total


def bench_annotate(articles: int, root: Path) -> dict:
    extract, emb, samples = prepare(articles, root)
    clusters = max(1, min(100, samples // 20))
    report, measured = run_pipeline(
        "annotate",
        root / f"ann-{articles}",
        "--input",
        str(extract),
        "--embeddings",
        str(emb),
        "--clusters",
        str(clusters),
        "--log_level",
        "ERROR",
    )
    out = report["stages"]["annotate"]["out"]
    return {
        **measured,
        "articles": articles,
        "samples": out,
        "clusters": clusters,
        "cpu_s_per_1000": round(1000 * measured["cpu_s"] / max(1, out), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train_rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--clusters", type=int, default=2000)
    parser.add_argument("--assign_rows", type=int, default=200_000)
    parser.add_argument("--articles", type=int, nargs="*", default=[200, 800])
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    results["training"], model = bench_training(args.train_rows, args.dim, args.clusters)
    print("training", results["training"], flush=True)
    results["assignment"] = bench_assignment(model, args.assign_rows, args.dim)
    print("assignment", results["assignment"], flush=True)
    runs = [bench_annotate(n, RESULTS / "annotate") for n in args.articles]
    for run in runs:
        print("annotate", run, flush=True)
    results["annotate"] = runs
    if args.articles:
        results["captions"] = bench_captions(RESULTS / "annotate" / f"extract-{args.articles[-1]}")
        print("captions", results["captions"], flush=True)
    if len(runs) >= 2 and runs[-1]["samples"] > runs[0]["samples"]:
        extra = runs[-1]["samples"] - runs[0]["samples"]
        cpu = runs[-1]["cpu_s"] - runs[0]["cpu_s"]
        results["annotate_marginal_cpu_s_per_1000"] = round(1000 * cpu / extra, 2)
        print("marginal cpu s per 1000 samples", results["annotate_marginal_cpu_s_per_1000"])
    (RESULTS / "cluster.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
