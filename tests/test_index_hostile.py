"""`biomedica index` fed hostile input: a dataset with a key twice, an empty dataset, data on
which the default IVF-PQ misses its recall target. Synthetic datasets (tests/test_index.py's
helpers): a manifest and Parquet index, no tars."""

from __future__ import annotations

import json

import numpy as np
from test_index import (
    QUIET,
    clustered,
    load_faiss,
    run_index,
    synthetic_dataset,
    synthetic_embeddings,
)

from pipelines import index
from transforms.index import vectors


def test_a_key_twice_in_the_dataset_is_refused_in_one_line(tmp_path, capsys):
    """The samples table's UNIQUE key failed the job with SQLite's own words; now the job
    names the key, its sample ids and files, and writes no manifest (no servable index)."""
    keys = ["A", "B", "A", "C"]
    ds = synthetic_dataset(tmp_path / "ds", keys, 2)
    x = clustered(3, 8)
    emb = synthetic_embeddings(tmp_path / "emb", list(zip("ABC", x, strict=True)), 8, files=1)
    out = tmp_path / "idx"
    argv = ["--dataset", str(ds), "--embeddings", str(emb), "--output", str(out), *QUIET]
    assert index.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "the dataset holds key 'A' 2 times (sample ids 0, 2;" in err
    assert "000000.parquet" in err and "000001.parquet" in err
    assert not (out / "manifest.json").exists()


def test_an_empty_dataset_is_refused_before_work_unless_allowed(tmp_path, capsys):
    ds = tmp_path / "ds"
    ds.mkdir()
    (ds / "manifest.json").write_text(json.dumps({"shards": [], "groups": []}))
    emb = synthetic_embeddings(tmp_path / "emb", [("A", np.ones(4))], 4, files=1)
    argv = ["--dataset", str(ds), "--embeddings", str(emb), *QUIET]
    assert index.main([*argv, "--output", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds no samples" in err and "--allow_empty" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "a").exists()
    assert index.main([*argv, "--output", str(tmp_path / "b"), "--allow_empty"]) == 0
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["samples"] == 0 and manifest["keyword"]["rows"] == 0


def test_recall_below_target_widens_the_re_ranking(tmp_path):
    """On 32-number vectors the default PQ (4 bytes) with k_factor 4 reaches recall@10 0.88
    at every list probed; the job doubles k_factor until the target is met and says so."""
    n, dim = 3000, 32
    keys = [f"PMC{i:07d}_F1" for i in range(n)]
    x = clustered(n, dim)
    ds = synthetic_dataset(tmp_path / "ds", keys, 700)
    emb = synthetic_embeddings(tmp_path / "emb", list(zip(keys, x, strict=True)), dim)
    out = tmp_path / "idx"
    more = ["--index_type", "ivfpq", "--nlist", "16", "--partition_size", "500"]
    report = run_index(ds, emb, out, *more, "--recall_queries", "300")
    assert report["balanced"]
    image = json.loads((out / "manifest.json").read_text())["vectors"]["image"]
    assert image["factory"] == "IDMap2,IVF16,PQ4x8,Refine(SQ8)"
    assert image["recall_at_10"] >= 0.95
    assert image["k_factor_asked"] == 4 and image["k_factor"] in (8, 16, 32, 64)
    assert json.loads((out / "run_report.json").read_text())["parameters"]["k_factor"] == 4
    # The index file holds what the manifest says: the server searches with its k_factor.
    import faiss

    found = load_faiss(out / "image.faiss")
    refine = faiss.downcast_index(faiss.downcast_index(found).index)
    assert refine.k_factor == image["k_factor"]
    assert faiss.extract_index_ivf(found).nprobe == image["nprobe"]


def test_tune_keeps_k_factor_where_the_target_is_met_and_the_best_where_not():
    n, dim = 2000, 32
    x = clustered(n, dim, seed=2)
    plan = vectors.plan(n, dim, "ivfpq", nlist=8, pq_m=4)
    built = vectors.load(vectors.train(plan, x, 0))
    vectors.append(built, vectors.encode(built, x), np.arange(n))
    vectors.finish(built)
    queries = x[:200]
    exact = vectors.exact_top(queries, x, np.arange(n))[1]
    nprobe, recall, k_factor = vectors.tune(built, queries, exact, 0.5)
    assert k_factor == 4 and recall >= 0.5
    nprobe, recall, k_factor = vectors.tune(built, queries, exact, 1.01)  # never reached
    assert k_factor <= vectors.MAX_K_FACTOR and nprobe == 8 and recall < 1.01
    flat = vectors.load(vectors.train(vectors.plan(n, dim, "flat"), None, 0))
    assert vectors.tune(flat, queries, exact, 0.95)[2] is None
