"""`biomedica index`: faiss vector indexes and the SQLite FTS5 keyword index over a dataset.

The sample corpus chain (extract -> shard -> embed pixels, and embed open_clip with random
weights for caption vectors) checks the real formats; synthetic datasets of a few thousand
samples (a manifest and Parquet index, no tars: the index reads neither images nor tars)
check IVF-PQ, dead letters and determinism quickly.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import read_dead_letters, read_table, run_extract

from pipelines import embed, index, shard
from transforms.index import ids, keyword, vectors
from transforms.pmc.sample_corpus import generate_corpus
from transforms.records import embedding_schema

QUIET = ["--log_level", "ERROR"]


def run_index(dataset, embeddings, output, *more) -> dict:
    argv = ["--dataset", str(dataset), "--embeddings", str(embeddings), "--output", str(output)]
    return index.run([*argv, *QUIET, *more])


def load_faiss(path: Path):
    return vectors.load(path.read_bytes())


def sqlite_rows(path: Path, sql: str, *args) -> list:
    db = keyword.open_read_only(str(path))
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


# ---- the sample corpus chain ----------------------------------------------------------------


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("index")
    generate_corpus(str(root / "corpus"), 8, seed=4, image_side=96)
    run_extract(["--source", str(root / "corpus"), "--output", str(root / "ext"), *QUIET])
    ds = root / "ds"
    assert shard.run(
        ["--input", str(root / "ext"), "--output", str(ds), "--samples_per_shard", "8", *QUIET]
    )["balanced"]
    assert embed.run(["--input", str(root / "ext"), "--output", str(root / "emb"), *QUIET])[
        "balanced"
    ]
    idx = root / "idx"
    return {
        "root": root,
        "ds": ds,
        "emb": root / "emb",
        "idx": idx,
        "report": run_index(ds, root / "emb", idx),
    }


def dataset_keys(ds: Path) -> list[str]:
    """Every sample key in id order (transforms.index.ids: manifest order, then row)."""
    manifest = json.loads((ds / "manifest.json").read_text())
    keys = []
    for s in ids.shard_ids(manifest):
        keys += pq.read_table(ds / s.parquet_path, columns=["key"]).column(0).to_pylist()
    return keys


def test_flat_index_finds_each_sample_as_its_own_top_hit(chain):
    report, idx = chain["report"], chain["idx"]
    assert report["balanced"], report
    keys = dataset_keys(chain["ds"])
    stage = report["stages"]["index_vectors"]
    assert stage["in"] == len(keys) == stage["out"] and stage["dead_letter"] == 0
    manifest = json.loads((idx / "manifest.json").read_text())
    image = manifest["vectors"]["image"]
    assert image["kind"] == "flat" and image["count"] == len(keys) and image["nprobe"] is None
    assert image["recall_at_10"] == 1.0 and image["dim"] == manifest["model"]["dim"] == 188
    assert manifest["samples"] == len(keys) and "caption" not in manifest["vectors"]
    assert manifest["model"] == json.loads((chain["emb"] / "embed_model.json").read_text())
    rows = read_table(chain["emb"] / "embeddings")
    found = load_faiss(idx / "image.faiss")
    assert found.ntotal == len(keys)
    matrix = np.stack([np.asarray(r["image_embedding"], np.float32) for r in rows])
    _, hits = found.search(matrix, 1)
    assert [keys[h] for h in hits[:, 0]] == [r["key"] for r in rows]


def test_sqlite_rows_follow_the_parquet_order_and_fts_finds_captions(chain):
    path, keys = chain["idx"] / "samples.sqlite", dataset_keys(chain["ds"])
    got = sqlite_rows(path, "SELECT id, key, has_image_vector, has_caption_vector FROM samples")
    assert got == [(i, k, 1, 0) for i, k in enumerate(keys)]
    first = read_table(chain["ds"] / "parquet" / "commercial")[0]
    (row,) = sqlite_rows(
        path, "SELECT shard, tar_offset, tar_size, caption FROM samples WHERE key = ?", first["key"]
    )
    assert row == (first["shard"], first["tar_offset"], first["tar_size"], first["caption"])
    word = max((w.strip(".,;:()") for w in first["caption"].split()), key=len)
    sample_id = keys.index(first["key"])
    matched = sqlite_rows(path, "SELECT rowid FROM samples_fts WHERE samples_fts MATCH ?", word)
    assert sample_id in {r[0] for r in matched}
    assert not sqlite_rows(path, "SELECT rowid FROM samples_fts WHERE samples_fts MATCH 'zyzzyvaq'")
    manifest = json.loads((chain["idx"] / "manifest.json").read_text())
    assert manifest["keyword"]["rows"] == len(keys)
    assert chain["report"]["stages"]["index_keyword"] == {
        "balanced": True,
        "in": len(keys),
        "out": len(keys),
    }


def test_a_second_run_is_refused_unless_overwrite_and_gives_the_same_bytes(chain, tmp_path):
    code = index.main(
        [
            "--dataset",
            str(chain["ds"]),
            "--embeddings",
            str(chain["emb"]),
            "--output",
            str(chain["idx"]),
            *QUIET,
        ]
    )
    assert code == 1
    again = tmp_path / "again"
    assert run_index(chain["ds"], chain["emb"], again)["balanced"]
    for name in ("image.faiss", "samples.sqlite", "manifest.json"):
        assert (again / name).read_bytes() == (chain["idx"] / name).read_bytes(), name


def test_caption_index_when_the_model_has_a_text_tower(chain, tmp_path):
    emb = tmp_path / "emb-clip"
    model = ["--model", "open_clip:ViT-S-32", "--weights", "none", "--batch_size", "8"]
    assert embed.run(["--input", str(chain["root"] / "ext"), "--output", str(emb), *model, *QUIET])[
        "balanced"
    ]
    out = tmp_path / "idx"
    report = run_index(chain["ds"], emb, out)
    assert report["balanced"] and report["random_weights"] is True
    manifest = json.loads((out / "manifest.json").read_text())
    keys = dataset_keys(chain["ds"])
    assert set(manifest["vectors"]) == {"image", "caption"} and manifest["random_weights"]
    assert manifest["vectors"]["caption"]["count"] == len(keys)
    assert manifest["vectors"]["caption"]["file"] == "caption.faiss"
    captions = load_faiss(out / "caption.faiss")
    rows = read_table(emb / "embeddings")
    matrix = np.stack([np.asarray(r["caption_embedding"], np.float32) for r in rows])
    _, hits = captions.search(matrix, 1)
    # Identical captions are possible: each hit's vector is the query's own.
    by_id = {keys.index(r["key"]): v for r, v in zip(rows, matrix, strict=True)}
    assert all(np.allclose(by_id[h], v) for h, v in zip(hits[:, 0], matrix, strict=True))
    flags = sqlite_rows(out / "samples.sqlite", "SELECT DISTINCT has_caption_vector FROM samples")
    assert flags == [(1,)]


# ---- synthetic datasets -------------------------------------------------------------------


WORDS = ["heart", "lung", "kidney", "tumour", "neuron", "retina", "bone", "liver", "cell"]


def synthetic_dataset(root: Path, keys: list[str], per_shard: int) -> Path:
    """A dataset as the index reads it: manifest.json and the Parquet index (no tars)."""
    shards = []
    for n, start in enumerate(range(0, len(keys), per_shard)):
        chunk = keys[start : start + per_shard]
        name = f"{n:06d}"
        rows = {
            "key": chunk,
            "caption": [f"{WORDS[i % len(WORDS)]} sample {k}" for i, k in enumerate(chunk)],
            "image_context": [[f"see {k}"] for k in chunk],
            "article_title": ["A title"] * len(chunk),
            "article_year": [2020] * len(chunk),
            "image_primary_label": [["Microscopy"]] * len(chunk),
            "shard": [f"commercial/{name}.tar"] * len(chunk),
            "sample_offset": list(range(len(chunk))),
            "tar_offset": [1536 * i for i in range(len(chunk))],
            "tar_size": [1536] * len(chunk),
        }
        path = root / "parquet" / "commercial" / f"{name}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(rows), path)
        shards.append(
            {
                "group": "commercial",
                "index": n,
                "samples": len(chunk),
                "path": f"webdataset/commercial/{name}.tar",
                "parquet_path": f"parquet/commercial/{name}.parquet",
            }
        )
    (root / "manifest.json").write_text(json.dumps({"shards": shards, "groups": ["commercial"]}))
    return root


def synthetic_embeddings(root: Path, rows: list[tuple], dim: int, files: int = 2, fixed=True):
    """An embed output: embed_model.json and embeddings/*.parquet of (key, vector) rows."""
    (root / "embeddings").mkdir(parents=True)
    info = {"model_id": "synthetic-v1", "dim": dim, "caption": False, "random_weights": False}
    (root / "embed_model.json").write_text(json.dumps(info))
    schema = embedding_schema(dim, False)
    if not fixed:  # a list of any length: rows of the wrong dimension can be written
        schema = schema.set(2, pa.field("image_embedding", pa.list_(pa.float32())))
    for f in range(files):
        part = rows[f::files]
        table = pa.table(
            {
                "key": [r[0] for r in part],
                "model": ["synthetic-v1"] * len(part),
                "image_embedding": [None if r[1] is None else list(map(float, r[1])) for r in part],
            },
            schema=schema,
        )
        pq.write_table(table, root / "embeddings" / f"part-{f:05d}.parquet")
    return root


def clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, dim))
    x = centres[rng.integers(0, 40, n)] + 0.6 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("synthetic")
    n, dim = 3000, 32
    keys = [f"PMC{i:07d}_F1" for i in range(n)]
    x = clustered(n, dim)
    ds = synthetic_dataset(root / "ds", keys, 700)
    emb = synthetic_embeddings(root / "emb", list(zip(keys, x, strict=True)), dim)
    return {"root": root, "ds": ds, "emb": emb, "keys": keys, "x": x}


IVFPQ = ["--index_type", "ivfpq", "--nlist", "16", "--pq_m", "8", "--partition_size", "500"]


def test_ivfpq_reaches_the_recall_it_records(synthetic, tmp_path):
    out = tmp_path / "idx"
    report = run_index(synthetic["ds"], synthetic["emb"], out, *IVFPQ, "--recall_queries", "300")
    assert report["balanced"] and report["stages"]["index_vectors"]["out"] == 3000
    image = json.loads((out / "manifest.json").read_text())["vectors"]["image"]
    assert image["kind"] == "ivfpq" and image["factory"] == "IDMap2,IVF16,PQ8x8,Refine(SQ8)"
    assert image["recall_at_10"] >= 0.95 and image["recall_queries"] == 300
    assert image["train_samples"] == 3000 and image["nprobe"] in vectors.nprobe_candidates(16)
    found = load_faiss(out / "image.faiss")
    import faiss

    assert faiss.extract_index_ivf(found).nprobe == image["nprobe"]  # stored in the file
    # An independent check: other queries, exact search by numpy.
    x = synthetic["x"]
    queries = x[np.random.default_rng(7).choice(len(x), 200, replace=False)]
    exact = np.argsort(-(queries @ x.T), axis=1)[:, :10]
    _, got = found.search(queries, 10)
    assert vectors.recall_at_k(got, exact) >= image["recall_at_10"] - 0.05
    # A lower nprobe does worse where more lists were needed (the choice is the smallest).
    if image["nprobe"] > 1:
        faiss.extract_index_ivf(found).nprobe = image["nprobe"] // 2
        _, fewer = found.search(queries, 10)
        assert vectors.recall_at_k(fewer, exact) < vectors.recall_at_k(got, exact) + 1e-9


def test_same_bytes_in_process_and_on_two_worker_processes(synthetic, tmp_path):
    one = tmp_path / "one"
    two = tmp_path / "two"
    assert run_index(synthetic["ds"], synthetic["emb"], one, *IVFPQ)["balanced"]
    workers = ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]
    assert run_index(synthetic["ds"], synthetic["emb"], two, *IVFPQ, *workers)["balanced"]
    for name in ("image.faiss", "samples.sqlite", "manifest.json"):
        assert (one / name).read_bytes() == (two / name).read_bytes(), name


def test_dead_letters_for_missing_invalid_and_duplicate_embeddings(tmp_path):
    dim = 8
    keys = [f"K{i:03d}" for i in range(12)]
    x = clustered(12, dim, seed=3)
    ds = synthetic_dataset(tmp_path / "ds", keys, 5)
    rows = [(k, v) for k, v in zip(keys, x, strict=True) if k != "K000"]  # K000: no row
    bad = {
        "K001": np.zeros(dim),  # zero
        "K002": np.full(dim, np.nan),  # not finite
        "K003": np.ones(dim + 1),  # wrong dimension
        "K004": None,  # no vector
    }
    rows = [(k, bad.get(k, v)) for k, v in rows]
    rows += [("K005", x[5]), ("PARENT_ONLY_1", x[6]), ("PARENT_ONLY_2", x[7])]
    emb = synthetic_embeddings(tmp_path / "emb", rows, dim, files=3, fixed=False)
    out = tmp_path / "idx"
    report = run_index(ds, emb, out)
    stage = report["stages"]["index_vectors"]
    assert report["balanced"] and stage["in"] == 12 == stage["out"] + stage["dead_letter"]
    assert stage["out"] == 6 and stage["embeddings_unused"] == 2
    assert stage["dead_letter_by_reason"] == {
        "embedding_not_found": 1,
        "embedding_invalid": 4,
        "embedding_duplicate": 1,
    }
    letters = {d["key"]: d for d in read_dead_letters(out)}
    assert {k: letters[k]["reason"] for k in sorted(letters)} == {
        "K000": "embedding_not_found",
        "K001": "embedding_invalid",
        "K002": "embedding_invalid",
        "K003": "embedding_invalid",
        "K004": "embedding_invalid",
        "K005": "embedding_duplicate",
    }
    assert "zero" in letters["K001"]["detail"] and "9 values" in letters["K003"]["detail"]
    assert all(d["stage"] == "index_vectors" for d in letters.values())
    # Every sample is still in the keyword index; only those with a vector say so.
    got = sqlite_rows(out / "samples.sqlite", "SELECT key, has_image_vector FROM samples")
    assert got == [(k, int(k not in letters)) for k in keys]
    assert load_faiss(out / "image.faiss").ntotal == 6
    assert report["stages"]["index_keyword"]["out"] == 12


def test_no_vector_at_all_fails_unless_allowed(tmp_path, capsys):
    ds = synthetic_dataset(tmp_path / "ds", ["A", "B"], 5)
    emb = synthetic_embeddings(tmp_path / "emb", [("OTHER", np.ones(4))], 4, files=1)
    argv = ["--dataset", str(ds), "--embeddings", str(emb), *QUIET]
    assert index.main([*argv, "--output", str(tmp_path / "a")]) == 1
    assert "no sample has a usable vector" in capsys.readouterr().err
    assert index.main([*argv, "--output", str(tmp_path / "b"), "--allow_empty"]) == 0
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["vectors"]["image"]["count"] == 0 and manifest["keyword"]["rows"] == 2


def test_refused_before_work(tmp_path, capsys):
    ds = synthetic_dataset(tmp_path / "ds", ["A", "B"], 5)
    emb = synthetic_embeddings(tmp_path / "emb", [("A", np.ones(6))], 6, files=1)
    out = tmp_path / "idx"
    no_model = tmp_path / "bare"
    shutil.copytree(emb, no_model)
    (no_model / "embed_model.json").unlink()
    cases = [
        (["--dataset", str(emb), "--embeddings", str(emb)], "manifest.json is missing"),
        (["--dataset", str(ds), "--embeddings", str(no_model)], "embed_model.json is missing"),
        (["--dataset", str(ds), "--embeddings", str(emb), "--pq_m", "4"], "does not divide"),
        (["--dataset", str(ds), "--embeddings", str(emb), "--recall_target", "2"], "(0, 1]"),
        (["--dataset", str(ds), "--embeddings", str(emb), "--index_type", "hnsw"], "invalid"),
        (["--dataset", str(ds)], "missing --embeddings"),
    ]
    for argv, message in cases:
        assert index.main([*argv, "--output", str(out), *QUIET]) == 2, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists()
    inside = ds / "idx"
    assert (
        index.main(["--dataset", str(ds), "--embeddings", str(emb), "--output", str(inside)]) == 2
    )
    assert "lies inside --dataset" in capsys.readouterr().err and not inside.exists()


# ---- pure parts ---------------------------------------------------------------------------


def test_plan_chooses_by_size():
    assert vectors.plan(99_999, 512).kind == "flat"
    big = vectors.plan(100_000, 512)
    assert big.kind == "ivfpq" and big.factory == "IDMap2,IVF1024,PQ64x8,Refine(SQ8)"
    assert vectors.plan(24_000_000, 512).nlist == 4096  # at most --train_sample / 39
    assert [vectors.auto_pq_m(d) for d in (512, 384, 188, 32)] == [64, 48, 47, 4]
    with pytest.raises(ValueError, match="does not divide"):
        vectors.plan(10, 188, "ivfpq", pq_m=5)


def test_appending_codes_by_partition_gives_the_bytes_of_one_add():
    import faiss

    x = clustered(2000, 16, seed=1)
    ids = np.arange(2000, dtype=np.int64) * 3 + 1
    p = vectors.plan(2000, 16, "ivfpq", nlist=8, pq_m=4)
    trained = vectors.train(p, x)
    index = vectors.load(trained)
    for start in range(0, 2000, 300):
        part = slice(start, start + 300)
        vectors.append(index, vectors.encode(vectors.load(trained), x[part]), ids[part])
    vectors.finish(index)
    whole = vectors.load(trained)
    with vectors.one_thread():
        whole.add_with_ids(x, ids)
    assert vectors.serialize(index) == vectors.serialize(whole)
    assert isinstance(faiss.downcast_index(index), faiss.IndexIDMap2)


def test_merge_top_breaks_ties_by_id_whatever_the_order():
    a = (np.array([[0.9, 0.5]], np.float32), np.array([[4, 2]]))
    b = (np.array([[0.5, 0.1]], np.float32), np.array([[1, 9]]))
    for merged in (vectors.merge_top(a, b, 3), vectors.merge_top(b, a, 3)):
        assert merged[1].tolist() == [[4, 1, 2]]


def test_sqlite_build_is_byte_for_byte_repeatable(tmp_path):
    rows = [
        keyword.row_values(
            i,
            {
                "key": f"K{i}",
                "shard": "commercial/000000.tar",
                "caption": f"caption {i} heart",
                "image_context": ["a", "b"],
            },
            True,
            False,
        )
        for i in range(50)
    ]
    for name in ("a.sqlite", "b.sqlite"):
        assert keyword.build(str(tmp_path / name), rows) == 50
    assert (tmp_path / "a.sqlite").read_bytes() == (tmp_path / "b.sqlite").read_bytes()
    db = sqlite3.connect(str(tmp_path / "a.sqlite"))
    hits = db.execute("SELECT rowid FROM samples_fts WHERE samples_fts MATCH 'hearts'").fetchall()
    assert len(hits) == 50  # porter stemming: hearts finds heart
