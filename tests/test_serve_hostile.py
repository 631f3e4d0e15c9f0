"""`biomedica serve` under hostile requests: an IVF-PQ index searched with and without a
filter, odd queries and uploads, many image queries at once, and the command's failures
(port in use, unknown host) in one line.

The dataset is synthetic (a manifest and Parquet index, no tars: search reads neither), its
vectors random 188-number "pixels-v1" vectors, so the app loads the real pixels model for
uploads; every seventh sample has no vector, so the positions inside the faiss index differ
from the sample ids.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import free_port
from fastapi.testclient import TestClient
from PIL import Image
from test_index import QUIET, clustered, synthetic_dataset, synthetic_embeddings

from pipelines import index as index_pipeline
from server.app import create_app
from server.index_files import IndexFiles
from server.limits import Limits
from server.search import vector_search

REPO = Path(__file__).resolve().parents[1]
N, DIM = 2400, 188  # the pixels model's dimension
PIXELS = {"model": "pixels", "model_id": "pixels-v1", "dim": DIM, "caption": False}


def pixels_embeddings(root: Path, rows: list[tuple]) -> Path:
    emb = synthetic_embeddings(root, rows, DIM, files=2)
    info = json.loads((emb / "embed_model.json").read_text())
    (emb / "embed_model.json").write_text(json.dumps({**info, **PIXELS, "weights": "none"}))
    return emb


@pytest.fixture(scope="module")
def ivf(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("hostile")
    keys = [f"PMC{i:07d}_F1" for i in range(N)]
    x = clustered(N, DIM, seed=5)
    ds = synthetic_dataset(root / "ds", keys, 500)
    with_vector = [i for i in range(N) if i % 7]
    emb = pixels_embeddings(root / "emb", [(keys[i], x[i]) for i in with_vector])
    # synthetic_embeddings names its own model on each row: these are pixels-v1 rows.
    for part in sorted((emb / "embeddings").glob("*.parquet")):
        table = pq.read_table(part)
        table = table.set_column(1, "model", [["pixels-v1"] * len(table)])
        pq.write_table(table, part)
    idx = root / "idx"
    index_pipeline.run(
        ["--dataset", str(ds), "--embeddings", str(emb), "--output", str(idx), *QUIET]
        + ["--index_type", "ivfpq", "--nlist", "16", "--partition_size", "500"]
    )
    manifest = json.loads((idx / "manifest.json").read_text())
    assert manifest["vectors"]["image"]["factory"].endswith("Refine(SQ8)")
    return {"root": root, "ds": ds, "idx": idx, "x": x, "with_vector": with_vector}


@pytest.fixture(scope="module")
def client(ivf):
    return TestClient(create_app(str(ivf["ds"]), str(ivf["idx"])), raise_server_exceptions=False)


def exact(x: np.ndarray, have: list[int], query: np.ndarray, k: int, mask=None) -> list[int]:
    ids = np.asarray([i for i in have if mask is None or mask[i]])
    order = np.argsort(-(x[ids] @ query), kind="stable")
    return [int(i) for i in ids[order[:k]]]


def png(mode: str = "RGB", size=(64, 48), seed: int = 0, fmt: str = "PNG", **kw) -> bytes:
    rng = np.random.default_rng(seed)
    image = Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype("uint8"))
    buffer = io.BytesIO()
    image.convert(mode).save(buffer, fmt, **kw)
    return buffer.getvalue()


# ---- IVF-PQ with re-ranking, searched by the server -------------------------------------------


def test_ivfpq_refine_index_is_searched_with_and_without_a_filter(ivf):
    """IndexRefine refuses SearchParametersIVF: every semantic or image search of an
    IVF-PQ index (the default above 100k samples) failed with a 500."""
    vectors = IndexFiles(str(ivf["idx"])).vectors["image"]
    x, have = ivf["x"], ivf["with_vector"]
    mask = np.zeros(N, bool)
    mask[1000:1400] = True
    recall = []
    for q in have[::97]:
        got = [i for i, _ in vector_search(vectors, x[q], 10, None)]
        assert got[0] == q and q % 7
        recall.append(len(set(got) & set(exact(x, have, x[q], 10))) / 10)
        filtered = [i for i, _ in vector_search(vectors, x[q], 10, mask)]
        assert len(filtered) == 10 and all(mask[i] and i % 7 for i in filtered), filtered
        recall.append(len(set(filtered) & set(exact(x, have, x[q], 10, mask))) / 10)
    assert np.mean(recall) >= 0.8


def test_image_search_over_an_ivfpq_index(client):
    answer = client.post("/search/image", files={"file": ("a.png", png(), "image/png")})
    assert answer.status_code == 200, answer.text
    hits = answer.json()["hits"]
    assert len(hits) == 20 and all(h["id"] % 7 for h in hits)
    where = "article_year == 2020 and key >= 'PMC0001000'"
    answer = client.post(
        "/search/image", params={"where": where, "k": 5}, files={"file": ("a.png", png(), "x")}
    )
    assert answer.status_code == 200, answer.text
    assert all(h["id"] >= 1000 for h in answer.json()["hits"])


# ---- odd requests: always an answer, a JSON 4xx where it is the client's fault ---------------


@pytest.mark.parametrize(
    "q",
    [
        '"a" NEAR( b* ) caption: OR AND NOT ^x {col}: -',
        "heart\x00lung",
        "ﬁgure 🧬 İstanbul ß \u0301 ＦＩＧＵＲＥ",
        "_",
        " ".join(["heart"] * 80),
        "x_" * 250,
    ],
)
def test_odd_queries_answer(client, q):
    answer = client.get("/search", params={"q": q, "k": 5})
    assert answer.status_code == 200, answer.text
    assert answer.json()["query"] == q.strip()


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"q": "heart", "k": 10**30}, 400, "k_out_of_range"),
        ({"q": "heart", "k": "many"}, 422, "invalid_request"),
        ({"q": " ".join(f"w{i}" for i in range(10_000))}, 400, "query_too_long"),
        ({"where": "article_year == 2020\x00"}, 400, "invalid_where"),
        ({"where": "(" * 300 + "article_year == 1" + ")" * 300}, 400, "invalid_where"),
        ({"where": " or ".join(["article_year == 1"] * 200)}, 400, "invalid_where"),
    ],
)
def test_bad_requests_are_json_4xx(client, params, status, code):
    answer = client.get("/search", params=params)
    assert answer.status_code == status and answer.json()["error"]["code"] == code


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "image_undecodable"),
        (png()[:400], "image_undecodable"),
        (b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>', "image_undecodable"),
        (None, "image_too_large"),  # a 40000x40000 PNG of a few kB
    ],
)
def test_bad_uploads_are_json_4xx(client, data, code):
    if data is None:
        buffer = io.BytesIO()
        Image.new("1", (40_000, 40_000)).save(buffer, "PNG")
        data = buffer.getvalue()
    answer = client.post("/search/image", files={"file": ("f", data, "image/png")})
    assert answer.status_code == 400 and answer.json()["error"]["code"] == code, answer.text


@pytest.mark.parametrize("mode", ["CMYK", "I;16", "LA", "P", "1"])
def test_uploads_of_any_mode_are_searched(client, mode):
    fmt = "JPEG" if mode == "CMYK" else ("TIFF" if mode == "I;16" else "PNG")
    answer = client.post("/search/image", files={"file": ("f", png(mode, fmt=fmt), "image/x")})
    assert answer.status_code == 200, answer.text


def test_animated_gif_of_many_frames_is_searched_by_its_first(client):
    frames = [Image.new("P", (64, 64), i) for i in range(200)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    answer = client.post("/search/image", files={"file": ("a.gif", buffer.getvalue(), "x")})
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize(
    "send",
    [
        {"data": {"other": "field"}},
        {"files": {"image": ("a.png", png(), "image/png")}},
        {"content": b"not multipart", "headers": {"content-type": "text/plain"}},
    ],
)
def test_upload_without_the_file_field(client, send):
    answer = client.post("/search/image", **send)
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "image_undecodable"


@pytest.mark.parametrize(
    "path",
    [
        "/page/..%2Fapp.py",
        "/page/../app.py",
        "/shards/..%2F..%2Fmanifest.json.tar",
        "/shards/commercial/..%2F..%2Fmanifest.json.tar",
        "/samples/..%2F..%2Fmanifest.json",
        "/samples/" + "k" * 5000 + ".jpg",
    ],
)
def test_nothing_outside_the_dataset_is_reachable(client, path):
    answer = client.get(path)
    assert answer.status_code == 404 and "error" in answer.json()


def test_every_route_is_read_only(client):
    """No route but the image search takes a body, and none writes (a POST, PUT, DELETE
    or PATCH anywhere else is 405)."""
    methods = {
        (route.path, method)
        for route in client.app.routes
        for method in getattr(route, "methods", ()) or ()
    }
    assert {m for _, m in methods} <= {"GET", "HEAD", "POST"}
    assert {p for p, m in methods if m == "POST"} == {"/search/image"}
    for method in ("put", "delete", "patch"):
        assert getattr(client, method)("/search").status_code == 405


# ---- load: image queries at once ------------------------------------------------------------


def test_image_queries_are_embedded_a_bounded_number_at_a_time(ivf):
    """An upload within max_pixels can decode to ~1 GB: a crowd of them at once must wait
    their turn (Limits.max_concurrent_embeds), and past embed_wait_seconds get a 503."""
    limits = Limits(max_concurrent_embeds=2, embed_wait_seconds=30)
    app = create_app(str(ivf["ds"]), str(ivf["idx"]), limits=limits)
    searcher, state = app.state.searcher, {"now": 0, "most": 0}
    lock, real = threading.Lock(), searcher.embedder.embed_images

    def slow(images):
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        time.sleep(0.3)
        with lock:
            state["now"] -= 1
        return real(images)

    searcher.embedder.embed_images = slow
    client = TestClient(app)
    codes = []

    def one(seed):
        sent = {"file": ("a.png", png(seed=seed), "image/png")}
        codes.append(client.post("/search/image", files=sent).status_code)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [200] * 8 and state["most"] == 2

    impatient = create_app(
        str(ivf["ds"]),
        str(ivf["idx"]),
        limits=Limits(max_concurrent_embeds=1, embed_wait_seconds=0.05),
    )
    impatient.state.searcher.embedder.embed_images = slow
    client = TestClient(impatient)
    codes.clear()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [200, 503, 503]


# ---- the command ----------------------------------------------------------------------------


def serve(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipelines.serve", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_port_in_use_and_unknown_host_are_one_line(ivf):
    import socket

    port = free_port()
    with socket.socket() as held:
        held.bind(("127.0.0.1", port))
        held.listen()
        done = serve("--dataset", str(ivf["ds"]), "--index", str(ivf["idx"]), "--port", str(port))
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"biomedica serve: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
    done = serve("--dataset", "x", "--index", "y", "--host", "no.such.host.invalid")
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1
    assert done.stderr.startswith("biomedica serve: error: --host no.such.host.invalid")


def test_missing_index_files_are_one_line(ivf, tmp_path):
    import shutil

    for name in ("samples.sqlite", "image.faiss", "manifest.json"):
        broken = tmp_path / name
        shutil.copytree(ivf["idx"], broken)
        (broken / name).unlink()
        done = serve(
            "--dataset", str(ivf["ds"]), "--index", str(broken), "--port", str(free_port())
        )
        assert done.returncode == 1, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and name in done.stderr, done.stderr
