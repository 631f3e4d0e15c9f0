"""`biomedica serve`'s search: keyword, semantic and image search over a real small dataset,
`where` filters, the request bounds, facets, the page routes, and the command itself.

The dataset: a generated corpus -> extract -> embed (pixels) -> annotate -> shard
--annotations, indexed by `biomedica index`. A second index holds a tiny random OpenCLIP
model's vectors (image and caption), for semantic search.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import free_port, run_extract
from fastapi.testclient import TestClient
from PIL import Image

from pipelines import annotate, cli, embed, shard
from pipelines import index as index_pipeline
from server.app import create_app
from server.limits import MULTIPART_SLACK, Limits
from server.search import RRF_K, fuse, match_expression
from transforms.embed import files as embed_files
from transforms.index.ids import shard_ids
from transforms.pmc.sample_corpus import generate_corpus
from transforms.records import embedding_schema

REPO = Path(__file__).resolve().parents[1]
HIT_FIELDS = {
    "id",
    "key",
    "score",
    "sources",
    "caption",
    "labels",
    "article_title",
    "article_journal",
    "article_year",
    "article_license",
    "article_license_group",
    "pmcid",
    "pmc_url",
    "image_url",
    "sample_url",
}
ANSWER_FIELDS = {"query", "k", "where", "semantic", "took_ms", "total_matching", "hits"}
TINY_CLIP = "biomedica-test-tiny-clip"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    corpus, ext, emb, ann, ds = (root / n for n in ("corpus", "extract", "embed", "ann", "ds"))
    generate_corpus(str(corpus), 12, seed=3, image_side=256)
    quiet = ["--log_level", "ERROR"]
    run_extract(["--source", str(corpus), "--output", str(ext), *quiet])
    embed.run(["--input", str(ext), "--output", str(emb), *quiet])
    annotate.run(
        ["--input", str(ext), "--embeddings", str(emb), "--output", str(ann), "--clusters", "3"]
        + quiet
    )
    shard.run(
        ["--input", str(ext), "--annotations", str(ann), "--output", str(ds)]
        + ["--samples_per_shard", "10", *quiet]
    )
    build_index(ds, emb, root / "idx")
    manifest = json.loads((ds / "manifest.json").read_text())
    rows = []  # every sample, in id order
    for entry in shard_ids(manifest):
        rows += pq.read_table(ds / entry.parquet_path).to_pylist()
    figures = pq.read_table(ext / "extract" / "figures").to_pylist()
    return {
        "root": root,
        "extract": ext,
        "ds": ds,
        "idx": root / "idx",
        "rows": rows,
        "images": {r["key"]: r["image"] for r in figures},
    }


@pytest.fixture(scope="module")
def client(built):
    return TestClient(create_app(str(built["ds"]), str(built["idx"])))


def build_index(ds: Path, emb: Path, idx: Path) -> None:
    """The index of a dataset, by `biomedica index` (in-process)."""
    index_pipeline.run(
        ["--dataset", str(ds), "--embeddings", str(emb), "--output", str(idx)]
        + ["--log_level", "ERROR"]
    )


def _register_tiny_clip(folder: Path) -> str:
    """A tiny OpenCLIP architecture (as tests/test_embed.py makes one), known to open_clip
    in this process under TINY_CLIP."""
    from transforms.embed.torch_shim import ensure_torchvision

    ensure_torchvision()
    import open_clip

    config = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16},
        "text_cfg": {"context_length": 64, "vocab_size": 49408, "width": 64, "heads": 2},
    }
    config["vision_cfg"]["head_width"] = 32
    config["text_cfg"]["layers"] = 2
    path = folder / f"{TINY_CLIP}.json"
    path.write_text(json.dumps(config))
    open_clip.add_model_config(path)
    return f"open_clip:{TINY_CLIP}"


@pytest.fixture(scope="module")
def semantic(built):
    """An index of the same dataset with the tiny model's random-weight vectors."""
    from transforms.embed import models

    root = built["root"]
    model = _register_tiny_clip(root)
    embedder = models.load_embedder(model, "none", "cpu", batch_size=8)
    rows = built["rows"]
    images = embedder.embed_images([built["images"][r["key"]] for r in rows])
    captions = embedder.embed_texts([r["caption"] for r in rows])
    emb = root / "embed_clip"
    (emb / "embeddings").mkdir(parents=True)
    table = pa.Table.from_pydict(
        {
            "key": [r["key"] for r in rows],
            "model": [embedder.model_id] * len(rows),
            "image_embedding": list(images),
            "caption_embedding": list(captions),
        },
        schema=embedding_schema(embedder.dim, True),
    )
    pq.write_table(table, emb / "embeddings" / "part-00000-of-00001.parquet")
    record = embed_files.model_record(model, "none", embedder.describe(), str(built["extract"]))
    (emb / embed_files.MODEL_FILE).write_bytes(embed_files.model_json(record))
    build_index(built["ds"], emb, root / "idx_clip")
    return TestClient(create_app(str(built["ds"]), str(root / "idx_clip")))


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", (text or "").lower())


def _unique_caption_word(rows) -> tuple[str, str]:
    """A word that only one sample's caption, in-line references and title hold."""
    holders: dict[str, set[str]] = {}
    for r in rows:
        text = " ".join([r["caption"], *r["image_context"], r["article_title"]])
        for word in set(_words(text)):
            holders.setdefault(word, set()).add(r["key"])
    for r in rows:
        for word in _words(r["caption"]):
            if len(word) >= 6 and word.isalpha() and holders[word] == {r["key"]}:
                return word, r["key"]
    raise AssertionError("no caption word unique to one sample")


# ---- keyword search ------------------------------------------------------------------------


def test_a_caption_word_finds_its_sample_first(built, client):
    word, key = _unique_caption_word(built["rows"])
    answer = client.get("/search", params={"q": word, "k": 5}).json()
    assert set(answer) == ANSWER_FIELDS
    assert answer["hits"][0]["key"] == key
    assert answer["hits"][0]["sources"] == ["keyword"]
    assert answer["semantic"] is False and answer["query"] == word
    assert answer["total_matching"] == len(built["rows"])
    # Scores are the fusion's: one list, rank 1.
    assert answer["hits"][0]["score"] == pytest.approx(1 / (RRF_K + 1), abs=1e-6)


def test_hits_carry_every_field_of_the_contract(built, client):
    rows = {r["key"]: r for r in built["rows"]}
    answer = client.get("/search", params={"q": "figure", "k": 100}).json()
    assert answer["hits"]
    for hit in answer["hits"]:
        assert set(hit) == HIT_FIELDS
        row = rows[hit["key"]]
        assert built["rows"][hit["id"]]["key"] == hit["key"]  # ids are the shared sample ids
        assert hit["caption"] == row["caption"]
        assert hit["labels"] == {
            "primary": row["image_primary_label"],
            "secondary": row["image_secondary_label"],
            "cluster_id": row["image_cluster_id"],
        }
        for field in ("article_title", "article_journal", "article_year", "article_license"):
            assert hit[field] == row[field]
        assert hit["article_license_group"] == row["article_license_group"]
        assert hit["pmcid"] == row["article_accession_id"]
        assert hit["pmc_url"] == f"https://pmc.ncbi.nlm.nih.gov/articles/{hit['pmcid']}/"
        assert hit["image_url"] == f"/samples/{hit['key']}.jpg"
        assert hit["sample_url"] == f"/samples/{hit['key']}"
    first = answer["hits"][0]
    image = client.get(first["image_url"])
    assert image.status_code == 200 and image.content == built["images"][first["key"]]
    assert client.get(first["sample_url"]).json()["key"] == first["key"]


@pytest.mark.parametrize(
    "q",
    ['"unbalanced', "caption: NEAR(a b", "* OR AND NOT", "fig*", "a'); DROP TABLE samples;--"],
)
def test_fts_syntax_in_a_query_is_only_words(client, q):
    answer = client.get("/search", params={"q": q})
    assert answer.status_code == 200, answer.text
    assert isinstance(answer.json()["hits"], list)


def test_match_expression_quotes_every_word_and_bounds_them():
    assert match_expression('He said "NEAR(x" *') == '"he" OR "said" OR "near" OR "x"'
    assert match_expression("   ,;:!  ") is None
    assert match_expression(" ".join(f"w{i}" for i in range(100)), 5).count(" OR ") == 4
    assert match_expression("p53 p53 P53") == '"p53"'


def test_samples_holding_every_word_come_first(built, client):
    import sqlite3

    db = sqlite3.connect(built["idx"] / "samples.sqlite")

    def holders(word: str) -> set[int]:
        rows = db.execute("SELECT rowid FROM samples_fts WHERE samples_fts MATCH ?", (f'"{word}"',))
        return {r[0] for r in rows}

    words = sorted({w for r in built["rows"] for w in _words(r["caption"]) if w.isalpha()})
    held = {w: holders(w) for w in words if len(w) >= 5}
    pair = next(
        (a, b)
        for a in held
        for b in held
        if a < b and 1 <= len(held[a] & held[b]) <= 3 and len(held[a] | held[b]) >= 8
    )
    both, either = held[pair[0]] & held[pair[1]], held[pair[0]] | held[pair[1]]
    hits = client.get("/search", params={"q": " ".join(pair), "k": 8}).json()["hits"]
    ids = [h["id"] for h in hits]
    assert set(ids[: len(both)]) == both and set(ids) <= either and len(ids) == 8


def test_keyword_scoring_is_bounded(built):
    bounded = TestClient(
        create_app(str(built["ds"]), str(built["idx"]), limits=Limits(max_keyword_matches=3))
    )
    answer = bounded.get("/search", params={"q": "figure", "k": 10}).json()
    assert sorted(h["id"] for h in answer["hits"]) == [0, 1, 2]  # ranked: the first 3 matches


def test_reciprocal_rank_fusion():
    fused = fuse([("keyword", [7, 3, 9]), ("semantic", [3, 8]), ("semantic", [3])], 3)
    assert [s for s, _, _ in fused] == [3, 7, 8]
    assert fused[0][1] == pytest.approx(1 / (RRF_K + 2) + 2 / (RRF_K + 1))
    assert fused[0][2] == ["keyword", "semantic"] and fused[1][2] == ["keyword"]
    # equal scores: the smaller id first
    assert [s for s, _, _ in fuse([("a", [5]), ("b", [2])], 2)] == [2, 5]


def test_filtered_ivf_search_probes_more_lists_until_k_pass():
    """An IVF index searched under a sparse filter: its nprobe lists hold too few samples
    that pass, so it is searched again with more, and ends as exact as a flat search."""
    import faiss
    import numpy as np

    from server.index_files import Vectors
    from server.search import vector_search

    rng = np.random.default_rng(0)
    data = rng.normal(size=(4000, 16)).astype(np.float32)
    faiss.normalize_L2(data)
    ids = np.arange(4000, dtype=np.int64) * 3  # ids are not row numbers
    ivf = faiss.index_factory(16, "IVF32,Flat", faiss.METRIC_INNER_PRODUCT)
    ivf.train(data)
    ivf.add_with_ids(data, ids)
    mask = np.zeros(12000, dtype=bool)
    mask[ids[rng.choice(4000, 25, replace=False)]] = True
    info = {"nprobe": 1}
    found = vector_search(
        Vectors("image", ivf, info, faiss.extract_index_ivf(ivf)), data[7], 10, mask
    )
    admitted = ids[mask[ids]]
    rows = data[mask[ids]]
    exact = admitted[np.argsort(-(rows @ data[7]), kind="stable")[:10]]
    assert [i for i, _ in found] == exact.tolist()
    unfiltered = vector_search(
        Vectors("image", ivf, info, faiss.extract_index_ivf(ivf)), data[7], 10, None
    )
    assert unfiltered[0][0] == ids[7] and len(unfiltered) == 10


# ---- where ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "where, test",
    [
        (
            "article_license_group == 'noncommercial'",
            lambda r: r["article_license_group"] == "noncommercial",
        ),
        ("article_year >= 2025", lambda r: (r["article_year"] or 0) >= 2025),
        ("'Microscopy' in image_primary_label", lambda r: "Microscopy" in r["image_primary_label"]),
    ],
)
def test_where_filters_every_search(built, client, where, test):
    rows = built["rows"]
    wanted = [r["key"] for r in rows if test(r)]
    assert 0 < len(wanted) < len(rows)  # the filter means something on this dataset
    browse = client.get("/search", params={"where": where, "k": 100}).json()
    # no words: the first k matching samples in id order
    assert [h["key"] for h in browse["hits"]] == wanted
    assert browse["total_matching"] == len(wanted) and browse["where"] == where
    assert all(h["sources"] == ["filter"] for h in browse["hits"])
    few = client.get("/search", params={"where": where, "k": 2}).json()
    assert [h["key"] for h in few["hits"]] == wanted[:2]
    # keyword hits are filtered too, and not just cut from the unfiltered top k
    answer = client.get("/search", params={"q": "figure", "where": where, "k": 3}).json()
    assert answer["hits"] and {h["key"] for h in answer["hits"]} <= set(wanted)
    key = wanted[-1]
    image = client.post(
        "/search/image",
        params={"where": where, "k": 3},
        files={"file": ("probe.jpg", built["images"][key], "image/jpeg")},
    ).json()
    assert image["hits"][0]["key"] == key and {h["key"] for h in image["hits"]} <= set(wanted)


def test_filtered_image_search_never_returns_the_filtered_out(built, client):
    key = built["rows"][0]["key"]
    group = built["rows"][0]["article_license_group"]
    answer = client.post(
        "/search/image",
        params={"where": f"article_license_group != '{group}'", "k": 100},
        files={"file": ("probe.jpg", built["images"][key], "image/jpeg")},
    ).json()
    others = [r for r in built["rows"] if r["article_license_group"] != group]
    assert len(answer["hits"]) == len(others)
    assert all(h["article_license_group"] != group for h in answer["hits"])


@pytest.mark.parametrize(
    "where, words",
    [
        ("article_year >=", "not a valid filter"),
        ("no_such_field == 1", "no_such_field"),
        ("article_year >= '2020'", "article_year"),
        ("__import__('os').system('true')", ""),
        ("x" * 2001, "at most 2000"),
    ],
)
def test_invalid_where_is_400_json(client, where, words):
    answer = client.get("/search", params={"q": "figure", "where": where})
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "invalid_where" and error["status"] == 400
    assert words in error["message"] and "\n" not in error["message"]


# ---- bounds --------------------------------------------------------------------------------


@pytest.mark.parametrize("k, status", [(0, 400), (-3, 400), (101, 400), (1, 200), (100, 200)])
def test_k_bounds(client, k, status):
    answer = client.get("/search", params={"q": "figure", "k": k})
    assert answer.status_code == status
    if status == 400:
        assert answer.json()["error"]["code"] == "k_out_of_range"
    else:
        assert 1 <= len(answer.json()["hits"]) <= k


def test_long_query_refused(client):
    assert client.get("/search", params={"q": "a" * 512}).status_code == 200
    answer = client.get("/search", params={"q": "a" * 513})
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "query_too_long"


def test_not_a_number_is_json_too(client):
    answer = client.get("/search", params={"q": "x", "k": "many"})
    assert answer.status_code == 422 and answer.json()["error"]["code"] == "invalid_request"


# ---- image search --------------------------------------------------------------------------


def test_an_image_of_the_dataset_finds_its_own_sample_first(built, client):
    for row in built["rows"][::7]:
        answer = client.post(
            "/search/image",
            params={"k": 5},
            files={"file": ("figure.jpg", built["images"][row["key"]], "image/jpeg")},
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert set(body) == ANSWER_FIELDS and body["query"] == "figure.jpg"
        assert body["hits"][0]["key"] == row["key"]
        assert body["hits"][0]["score"] == pytest.approx(1.0, abs=1e-4)  # cosine with itself
        assert body["hits"][0]["sources"] == ["image"]
        assert [h["score"] for h in body["hits"]] == sorted(
            (h["score"] for h in body["hits"]), reverse=True
        )
        assert set(body["hits"][0]) == HIT_FIELDS


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels and holds none (a decompression bomb's
    header: decoding would allocate width * height * 3 bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [10_000, 100_000])  # over our bound; over Pillow's own too
def test_a_decompression_bomb_is_refused_from_its_header(client, side):
    started = time.perf_counter()
    answer = client.post("/search/image", files={"file": ("bomb.png", _png_header(side, side))})
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "image_too_large"
    assert time.perf_counter() - started < 5  # nothing was decoded


@pytest.mark.parametrize(
    "data", [b"not an image at all", b"\xff\xd8\xff\xe0 truncated jpeg", b"GIF89a"]
)
def test_garbage_uploads_are_400(client, data):
    answer = client.post("/search/image", files={"file": ("x.jpg", data, "image/jpeg")})
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "image_undecodable"


def test_a_truncated_image_is_400(built, client):
    whole = built["images"][built["rows"][0]["key"]]
    answer = client.post("/search/image", files={"file": ("cut.jpg", whole[: len(whole) // 3])})
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "image_undecodable"


def test_no_file_field_is_400(client):
    answer = client.post("/search/image", data={"other": "x"})
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "image_undecodable"
    answer = client.post(
        "/search/image", content=b"raw bytes", headers={"content-type": "image/jpeg"}
    )
    assert answer.status_code == 400


def test_oversize_uploads_are_refused(built):
    limits = Limits(max_upload_bytes=40_000)
    small = TestClient(create_app(str(built["ds"]), str(built["idx"]), limits=limits))
    image = io.BytesIO()
    Image.effect_noise((300, 300), 80).convert("RGB").save(image, "JPEG", quality=95)
    image = image.getvalue()
    assert 40_000 < len(image) < 40_000 + MULTIPART_SLACK  # measured as a file, not a body
    answer = small.post("/search/image", files={"file": ("big.jpg", image)})
    assert answer.status_code == 413 and answer.json()["error"]["code"] == "upload_too_large"
    # A body past the bound by its Content-Length: refused before it is read.
    huge = b"\xff" * (40_000 + MULTIPART_SLACK + 1)
    answer = small.post("/search/image", files={"file": ("huge.jpg", huge)})
    assert answer.status_code == 413 and answer.json()["error"]["code"] == "upload_too_large"

    # Without a Content-Length (chunked): refused once the bytes pass the bound.
    def chunks():
        boundary = b'--b\r\nContent-Disposition: form-data; name="file"; filename="c"\r\n\r\n'
        yield boundary
        for _ in range(20):
            yield b"\0" * 10_000

    answer = small.post(
        "/search/image",
        content=chunks(),
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    assert answer.status_code == 413 and answer.json()["error"]["code"] == "upload_too_large"


# ---- facets, page, service -----------------------------------------------------------------


def test_facets_count_what_the_parquet_holds(built, client):
    rows = built["rows"]
    facets = client.get("/facets").json()
    assert facets["license_groups"] == dict(Counter(r["article_license_group"] for r in rows))
    assert facets["years"] == dict(
        Counter(str(r["article_year"]) for r in rows if r["article_year"] is not None)
    )
    labels = Counter(label for r in rows for label in r["image_primary_label"])
    assert labels and facets["labels"] == dict(labels)
    assert facets["samples"] == len(rows)
    assert facets["semantic"] is False and facets["model"] == "pixels-v1"
    assert facets["random_weights"] is False


def test_service_routes(built, client):
    assert client.get("/healthz").json() == {"status": "ok", "samples": len(built["rows"])}
    manifest = client.get("/api/manifest").json()
    assert manifest["index"]["samples"] == len(built["rows"])
    assert len(manifest["dataset"]["shards"]) == 4
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert client.get("/page/app.js").headers["content-type"].startswith("text/javascript")
    for path in ("/page/../app.py", "/page/..%2Fapp.py", "/page/errors.py", "/nowhere"):
        answer = client.get(path)
        assert answer.status_code == 404 and answer.json()["error"]["status"] == 404, path
    missing = client.get("/samples/PMC0_F9.jpg")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "sample_not_found"


def test_openapi_and_read_only_by_construction(client):
    schema = client.get("/openapi.json").json()
    assert {"/search", "/search/image", "/facets", "/healthz"} <= set(schema["paths"])
    upload = schema["paths"]["/search/image"]["post"]["requestBody"]["content"]
    assert "file" in upload["multipart/form-data"]["schema"]["properties"]
    assert client.get("/docs").status_code == 200
    writes = {
        (route.path, method)
        for route in client.app.routes
        for method in getattr(route, "methods", ()) or ()
        if method not in ("GET", "HEAD")
    }
    assert writes == {("/search/image", "POST")}


# ---- semantic ------------------------------------------------------------------------------


def test_semantic_search_with_a_text_tower(built, semantic):
    facets = semantic.get("/facets").json()
    assert facets["semantic"] is True and facets["random_weights"] is True
    assert facets["model"] == f"open_clip:{TINY_CLIP}"
    row = built["rows"][5]
    answer = semantic.get("/search", params={"q": row["caption"], "k": 5}).json()
    assert answer["semantic"] is True
    top = answer["hits"][0]
    # the caption's own vector is the nearest caption vector, and its words match: both lists
    assert top["key"] == row["key"]
    assert top["sources"] == ["keyword", "semantic"]
    assert top["score"] > 2 / (RRF_K + 1)
    off = semantic.get("/search", params={"q": row["caption"], "k": 5, "semantic": "false"})
    assert off.json()["semantic"] is False
    assert all(h["sources"] == ["keyword"] for h in off.json()["hits"])
    # words no caption holds: only the semantic lists answer
    only = semantic.get("/search", params={"q": "zzqx", "k": 3}).json()
    assert only["hits"] and all(h["sources"] == ["semantic"] for h in only["hits"])
    where = "article_license_group == 'commercial'"
    filtered = semantic.get("/search", params={"q": "zzqx", "k": 50, "where": where}).json()
    assert filtered["hits"]
    assert all(h["article_license_group"] == "commercial" for h in filtered["hits"])
    image = semantic.post(
        "/search/image", files={"file": ("x.jpg", built["images"][row["key"]], "image/jpeg")}
    ).json()
    assert image["hits"][0]["key"] == row["key"]


# ---- the command ---------------------------------------------------------------------------


def _serve(*argv: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines.serve", *argv],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_serve_command_over_http(built):
    port = free_port()
    server = _serve(
        "--dataset", str(built["ds"]), "--index", str(built["idx"]), "--port", str(port)
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                assert _get(f"{base}/healthz")["status"] == "ok"
                break
            except (urllib.error.URLError, ConnectionError):
                assert server.poll() is None, server.communicate()[1]
                assert time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.5)
        word, key = _unique_caption_word(built["rows"])
        assert _get(f"{base}/search?q={word}&k=3")["hits"][0]["key"] == key
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{base}/search?q=x&k=1000", timeout=10)
        assert refused.value.code == 400
        assert json.loads(refused.value.read())["error"]["code"] == "k_out_of_range"
    finally:
        server.send_signal(signal.SIGINT)
        _, err = server.communicate(timeout=60)
    assert server.returncode == 0, err
    assert f"at http://127.0.0.1:{port}/" in err


def _main(argv, capsys) -> tuple[int, str]:
    try:
        code = cli.main(argv)
    except SystemExit as stop:
        code = stop.code
    return code, capsys.readouterr().err


def test_serve_flags_are_strict(built, capsys):
    code, err = _main(["serve", "--dataset", str(built["ds"]), "--indx", "x"], capsys)
    assert code == 2 and "did you mean --index?" in err and len(err.strip().splitlines()) == 1
    code, err = _main(["serve", "--dataset", str(built["ds"])], capsys)
    assert code == 2 and "missing --index" in err
    code, err = _main(["serve", "--dataset", "d", "--index", "i", "--port", "70000"], capsys)
    assert code == 2 and "--port" in err
    assert "serve" in cli.PIPELINES


def test_serve_help_lists_every_flag(capsys):
    try:
        cli.main(["serve", "--help"])
    except SystemExit as stop:
        assert stop.code == 0
    out = capsys.readouterr().out
    for flag in ("--dataset", "--index", "--host", "--port", "--log_level", "--s3_endpoint_url"):
        assert flag in out
    assert "(default: 8080)" in out and "(default: 127.0.0.1)" in out


def test_an_index_of_another_dataset_is_refused(built, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(built["ds"], other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["parameters"]["note"] = "another version"
    (other / "manifest.json").write_text(json.dumps(manifest))
    code, err = _main(["serve", "--dataset", str(other), "--index", str(built["idx"])], capsys)
    assert code == 1 and "was built for another dataset" in err
    assert len(err.strip().splitlines()) == 1


def test_an_index_missing_a_file_is_refused(built, tmp_path, capsys):
    broken = tmp_path / "idx"
    shutil.copytree(built["idx"], broken)
    (broken / "samples.sqlite").unlink()
    code, err = _main(["serve", "--dataset", str(built["ds"]), "--index", str(broken)], capsys)
    assert code == 1 and "samples.sqlite is missing" in err
    assert len(err.strip().splitlines()) == 1
    code, err = _main(["serve", "--dataset", str(built["ds"]), "--index", str(tmp_path)], capsys)
    assert code == 1 and "is not an index" in err


@pytest.mark.parametrize("refine", ["sq8", "none", "flat-index"])
def test_vector_search_with_a_filter_on_every_index_shape_index_writes(refine):
    """Flat, IVF-PQ and IVF-PQ with re-ranking (what `biomedica index` writes above
    --exact_below): a where mask keeps only admitted ids, and with no mask an id's own
    vector is its nearest. Sample ids are not positions: every third id has no vector."""
    import faiss

    from server.index_files import vectors_of
    from server.search import vector_search
    from transforms.index import vectors as index_vectors

    rng = np.random.default_rng(0)
    dim, count = 16, 3000
    data = rng.normal(size=(count, dim)).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    ids = np.array([i for i in range(count * 3 // 2) if i % 3 != 2][:count], dtype=np.int64)
    if refine == "flat-index":
        p = index_vectors.plan(count, dim, "flat")
    else:
        p = index_vectors.plan(count, dim, "ivfpq", nlist=8, pq_m=4, refine=refine)
    index = index_vectors.load(index_vectors.train(p, data))
    index_vectors.append(index, index_vectors.encode(index, data), ids)
    index_vectors.finish(index)
    index_vectors.set_nprobe(index, 8 if p.kind == "ivfpq" else None)
    index = faiss.deserialize_index(faiss.serialize_index(index))  # as serve reads it
    vectors = vectors_of("image", index, {"nprobe": 8} if p.kind == "ivfpq" else {})
    for i in range(0, count, 97):
        # PQ codes alone (refine none) are approximate: the own vector is among the nearest.
        near = [h for h, _ in vector_search(vectors, data[i], 10 if refine == "none" else 1, None)]
        assert int(ids[i]) in near, (i, near)
    mask = np.zeros(int(ids.max()) + 1, dtype=bool)
    admitted = ids[::7]
    mask[admitted] = True
    for i in range(0, count, 301):
        hits = vector_search(vectors, data[i], 10, mask)
        assert len(hits) == 10 and all(mask[h] for h, _ in hits), hits
    near = [h for h, _ in vector_search(vectors, data[7], 10, mask)]
    assert int(ids[7]) in near


def test_keyword_under_a_mask_walks_further_when_the_first_page_falls_short(built):
    """Under a filter the keyword index is asked first for a few more hits than the mask's
    share needs; when the admitted ones rank lower than that, a second, longer walk finds
    them (and the answer is the one an unbounded walk gives)."""
    from server.index_files import IndexFiles

    index = IndexFiles(str(built["idx"]))
    conn = index.conn()
    counts: Counter = Counter()
    for row in built["rows"]:
        counts.update(set(_words(row["caption"])))
    word = next(w for w, n in counts.most_common() if n >= 10 and len(w) > 3)
    expression = match_expression(word, 32)
    ranked = index.keyword(expression, 100, None, 20_000, 100_000)
    assert len(ranked) >= 10
    mask = np.ones(len(built["rows"]), dtype=bool)
    mask[ranked] = False  # every sample admitted but those the word matches ...
    mask[ranked[-1]] = True  # ... and the match ranked last
    assert index.keyword(expression, 1, mask, 20_000, 100_000) == [ranked[-1]]
    conn.close()
