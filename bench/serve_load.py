"""Benchmark: search latency and throughput of `biomedica serve` under concurrent clients.

    python bench/serve_load.py --samples 100000 --clients 32 --seconds 20

Builds (once, under --workdir) a dataset of --samples samples and its index with the real
commands, then starts the real server and measures, per kind of request, with --clients
concurrent clients (threads, one HTTP connection each) for --seconds: latency p50 and p99,
requests per second, errors, and the server's memory (RSS after start, after the load).

The dataset: a generated sample corpus is extracted once, and its figure rows are copied
until there are --samples of them (keys made unique, each caption's words reshuffled with
a few words drawn from the whole corpus, so a query word matches a realistic share of
captions). `biomedica shard` writes the dataset (no article text: `--without_article_text`).
The vectors are synthetic, in the pixels model's 188 dimensions: a Gaussian mixture of 256
clusters, unit length (the index's kind and cost depend on count and dimension, not on what
the vectors mean), written as an embed output that says model `pixels`, so an uploaded image
is embedded by the real pixels model. `biomedica index` builds the index.

The clients share the machine with the server (2 cores here): the figures are what this
machine does with both on it. Run by hand; never part of the test suite.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import requests  # noqa: E402

from bench.child import cached_corpus, run_pipeline  # noqa: E402
from transforms.records import embedding_schema  # noqa: E402

DIM = 188


def _extract(workdir: Path, articles: int) -> Path:
    corpus = cached_corpus(workdir, articles, 128)
    out = workdir / f"extract-{articles}"
    if not (out / "run_report.json").exists():
        run_pipeline("extract", out, "--source", str(corpus))
    return out


def _copies(extract: Path, samples: int, target: Path) -> Path:
    """Figure files holding `samples` rows: the extract's rows copied, keys made unique."""
    done = target / ".complete"
    if done.exists():
        return target
    rows = pa.concat_tables(
        pq.read_table(f) for f in sorted((extract / "extract" / "figures").glob("*.parquet"))
    )
    vocabulary = sorted({w for c in rows.column("caption").to_pylist() for w in c.split()})
    rng = random.Random(0)
    target.mkdir(parents=True, exist_ok=True)
    per_file, written, part = 10_000, 0, 0
    files = -(-samples // per_file)
    while written < samples:
        take = min(per_file, samples - written)
        idx = [(written + i) % rows.num_rows for i in range(take)]
        chunk = rows.take(pa.array(idx))
        copy = [(written + i) // rows.num_rows for i in range(take)]
        keys = [f"{k}_c{c}" for k, c in zip(chunk["key"].to_pylist(), copy, strict=True)]
        captions = []
        for caption in chunk.column("caption").to_pylist():
            words = caption.split()
            rng.shuffle(words)
            captions.append(" ".join(words[:40] + rng.sample(vocabulary, 5)))
        chunk = chunk.set_column(chunk.schema.get_field_index("key"), "key", pa.array(keys))
        chunk = chunk.set_column(
            chunk.schema.get_field_index("caption"), "caption", pa.array(captions)
        )
        pq.write_table(chunk, target / f"part-{part:05d}-of-{files:05d}.parquet")
        written += take
        part += 1
    done.write_text("ok\n")
    return target


def _embeddings(dataset: Path, target: Path) -> Path:
    if (target / "embed_model.json").exists():
        return target
    keys = []
    for f in sorted((dataset / "parquet").glob("*/*.parquet")):
        keys += pq.read_table(f, columns=["key"]).column("key").to_pylist()
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(256, DIM)).astype(np.float32)
    vectors = centres[rng.integers(0, 256, len(keys))] + 0.35 * rng.normal(
        size=(len(keys), DIM)
    ).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    schema = embedding_schema(DIM, False)
    (target / "embeddings").mkdir(parents=True, exist_ok=True)
    flat = pa.array(vectors.reshape(-1), pa.float32())
    table = pa.table(
        {
            "key": pa.array(keys),
            "model": pa.array(["pixels-v1"] * len(keys)),
            "image_embedding": pa.FixedSizeListArray.from_arrays(flat, DIM),
        }
    ).cast(schema)
    pq.write_table(table, target / "embeddings" / "part-00000-of-00001.parquet")
    model = {
        "version": 1,
        "model": "pixels",
        "model_id": "pixels-v1",
        "weights": "none",
        "random_weights": False,
        "dim": DIM,
        "caption": False,
        "input": str(dataset),
        "weights_fingerprint": "pixels-v1",
    }
    (target / "embed_model.json").write_text(json.dumps(model, indent=2) + "\n")
    return target


def _build(workdir: Path, samples: int, articles: int) -> tuple[Path, Path, dict]:
    extract = _extract(workdir, articles)
    figures = _copies(extract, samples, workdir / f"figures-{samples}")
    dataset = workdir / f"dataset-{samples}"
    timings = {}
    if not (dataset / "manifest.json").exists():
        _, timings["shard"] = run_pipeline(
            "shard",
            dataset,
            "--input",
            str(figures / "*.parquet"),
            "--without_article_text",
            "--samples_per_shard",
            "1000",
        )
    emb = _embeddings(dataset, workdir / f"emb-{samples}")
    index = workdir / f"index-{samples}"
    if not (index / "manifest.json").exists():
        report, timings["index"] = run_pipeline(
            "index", index, "--dataset", str(dataset), "--embeddings", str(emb)
        )
    return dataset, index, timings


def _serve(dataset: Path, index: Path, port: int) -> subprocess.Popen:
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipelines.serve",
            "--dataset",
            str(dataset),
            "--index",
            str(index),
            "--port",
            str(port),
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(600):
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok:
                return server
        except requests.RequestException:
            pass
        if server.poll() is not None:
            raise SystemExit("the server exited before it answered")
        time.sleep(0.5)
    raise SystemExit("the server did not answer in 300 s")


def _match_share(index: Path, words: list[str]) -> float:
    """The mean share of samples a query word's keyword search matches (the bm25 work)."""
    import sqlite3

    db = sqlite3.connect(f"file:{index / 'samples.sqlite'}?mode=ro&immutable=1", uri=True)
    total = db.execute("SELECT count(*) FROM samples").fetchone()[0]
    query = "SELECT count(*) FROM samples_fts WHERE samples_fts MATCH ?"
    counts = [db.execute(query, (f'"{w}"',)).fetchone()[0] for w in words[:200]]
    db.close()
    return round(sum(counts) / len(counts) / total, 3)


def _load(clients: int, seconds: float, request) -> dict:
    """`request(session, rng)` by `clients` threads for `seconds`: latencies and errors."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def client(n: int) -> None:
        session, rng, mine, bad = requests.Session(), random.Random(n), [], 0
        while time.perf_counter() < stop:
            started = time.perf_counter()
            ok = request(session, rng)
            mine.append(time.perf_counter() - started)
            bad += not ok
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "requests": len(ordered),
        "errors": errors[0],
        "qps": round(len(ordered) / wall, 1),
        "p50_ms": round(1000 * statistics.median(ordered), 1),
        "p99_ms": round(1000 * ordered[int(0.99 * (len(ordered) - 1))], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--articles", type=int, default=300, help="corpus the rows copy")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--port", type=int, default=18080)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench-serve"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    dataset, index, timings = _build(args.workdir, args.samples, args.articles)
    words = []
    for f in sorted((dataset / "parquet").glob("*/*.parquet"))[:3]:
        for caption in pq.read_table(f, columns=["caption"]).column("caption").to_pylist():
            words += [w.strip(".,;:()").lower() for w in caption.split() if len(w) > 5]
    words = sorted(set(words))
    share = _match_share(index, words)
    with open(next(dataset.glob("webdataset/*/000000.tar")), "rb") as tar:
        import tarfile

        with tarfile.open(fileobj=tar) as t:
            member = next(m for m in t.getmembers() if m.name.endswith(".jpg"))
            upload = t.extractfile(member).read()
    base = f"http://127.0.0.1:{args.port}"
    server = _serve(dataset, index, args.port)
    process = psutil.Process(server.pid)
    try:
        rss_start = process.memory_info().rss
        peak = [rss_start]
        watching = threading.Event()

        def watch() -> None:
            while not watching.wait(0.2):
                peak[0] = max(peak[0], process.memory_info().rss)

        watcher = threading.Thread(target=watch)
        watcher.start()

        def keyword(session, rng) -> bool:
            q = " ".join(rng.sample(words, rng.choice((1, 2))))
            return session.get(f"{base}/search", params={"q": q, "k": 20}).ok

        filters = (
            "article_license_group == 'commercial'",
            "article_year >= 2015",
            "article_license_group != 'other' and article_year < 2022",
        )

        def filtered(session, rng) -> bool:
            q, where = rng.choice(words), rng.choice(filters)
            return session.get(f"{base}/search", params={"q": q, "k": 20, "where": where}).ok

        # A filter's mask is computed once per filter text (then cached): measured apart.
        cold = {}
        for where in filters:
            started = time.perf_counter()
            requests.get(f"{base}/search", params={"q": words[0], "k": 20, "where": where})
            cold[where] = round(1000 * (time.perf_counter() - started), 1)
        print("first use of each filter (ms):", cold, flush=True)

        def image(session, rng) -> bool:
            files = {"file": ("query.jpg", io.BytesIO(upload), "image/jpeg")}
            return session.post(f"{base}/search/image", params={"k": 20}, files=files).ok

        results = {}
        for name, request in (("keyword", keyword), ("keyword+where", filtered), ("image", image)):
            request(requests.Session(), random.Random(0))  # warm: the model
            results[name] = _load(args.clients, args.seconds, request)
            print(name, results[name], flush=True)
            # The same requests one at a time: the cost of one, without queueing.
            results[f"{name}, 1 client"] = _load(1, args.seconds / 2, request)
            print(f"{name}, 1 client", results[f"{name}, 1 client"], flush=True)
        watching.set()
        watcher.join()
        manifest = json.loads((index / "manifest.json").read_text())
        summary = {
            "samples": args.samples,
            "clients": args.clients,
            "seconds": args.seconds,
            "cpus": os.cpu_count(),
            "index": {k: v for k, v in manifest["vectors"]["image"].items() if k != "file"},
            "server_rss_mib": {
                "after_start": round(rss_start / 2**20),
                "peak_under_load": round(peak[0] / 2**20),
            },
            "build": timings,
            "first_use_of_a_filter_ms": cold,
            "query_words": len(words),
            "mean_share_of_samples_a_query_word_matches": share,
            "results": results,
        }
        print(json.dumps(summary, indent=2))
        out = REPO / "bench" / "results" / "serve_load.json"
        out.write_text(json.dumps(summary, indent=2) + "\n")
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
