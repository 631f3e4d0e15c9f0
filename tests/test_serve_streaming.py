"""Streaming a dataset over HTTP: shards with Range, samples by key, subsets as tars.

One synthetic corpus is extracted and sharded once (module fixture) and served by an app made
here from `server.shards.router` (with `locate` from the Parquet index), through FastAPI's
TestClient and through a real uvicorn on 127.0.0.1. webdataset (which fetches with curl) and
Hugging Face `datasets` (fsspec, ranged reads) read it from there; the bytes are compared
with the local tars. S3 (moto) and GCS (emulator) datasets are read through a counting proxy,
which shows that a range read fetches only its range.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import io
import json
import shutil
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import uvicorn
import webdataset
from conftest import free_port, gcs_emulator, moto_s3, run_extract
from fastapi import FastAPI
from fastapi.testclient import TestClient

from pipelines import shard as shard_pipeline
from server import errors
from server.byte_ranges import Unsatisfiable, parse_range
from server.dataset import DatasetFiles
from server.limits import Limits
from server.shards import merged_spans, router
from transforms.pmc.sample_corpus import generate_corpus
from transforms.shard.row_filter import FilterError, where_fields

PER_SHARD = "7"


# ---- the dataset and the servers ----------------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("stream")
    corpus, extract, dataset = root / "corpus", root / "extract", root / "dataset"
    generate_corpus(str(corpus), 16, seed=0, image_side=160)
    assert run_extract(["--source", str(corpus), "--output", str(extract)])["balanced"]
    report = shard_pipeline.run(
        ["--input", str(extract), "--output", str(dataset), "--samples_per_shard", PER_SHARD]
    )
    assert report["balanced"], report
    manifest = json.loads((dataset / "manifest.json").read_text())
    commercial = [s for s in manifest["shards"] if s["group"] == "commercial"]
    assert len(commercial) >= 3, "the tests want several shards in a group"
    return {"root": root, "dataset": dataset, "manifest": manifest}


def make_app(dataset, limits: Limits = Limits(), **storage) -> tuple[FastAPI, DatasetFiles]:
    files = DatasetFiles(str(dataset), **storage)
    app = FastAPI()
    errors.install(app)
    app.include_router(router(files, files.parquet_locator(), limits))
    return app, files


@contextlib.contextmanager
def serving(app):
    """A real uvicorn on 127.0.0.1 serving `app` in a thread: its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def served(built):
    app, files = make_app(built["dataset"])
    with serving(app) as url:
        yield {"url": url, "client": TestClient(app), "files": files, **built}


def raw_get(base: str, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    """A request whose path goes out byte for byte (no client normalises `..` or `%2f`)."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def tar_paths(built, group: str) -> list[str]:
    return [
        str(built["dataset"] / s["path"])
        for s in built["manifest"]["shards"]
        if s["group"] == group
    ]


def shard_urls(base: str, built, group: str) -> list[str]:
    return [
        f"{base}/shards/{s['path'].removeprefix('webdataset/')}"
        for s in built["manifest"]["shards"]
        if s["group"] == group
    ]


def read_webdataset(urls) -> dict[str, dict]:
    """{key: {extension: bytes}} of shards as webdataset reads them (files or URLs)."""
    samples = {}
    for sample in webdataset.WebDataset(urls, shardshuffle=False):
        key = sample["__key__"]
        assert key not in samples
        samples[key] = {ext: sample[ext] for ext in ("jpg", "json", "txt")}
    return samples


def members_of(tar_bytes: bytes) -> list[tuple[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar]


def local_members(built) -> dict[str, bytes]:
    """{member name: bytes} of every local shard."""
    found = {}
    for entry in built["manifest"]["shards"]:
        found.update(members_of((built["dataset"] / entry["path"]).read_bytes()))
    return found


def index_rows(built) -> list[dict]:
    """Every Parquet index row in sample-id order (manifest shard order, rows as they lie)."""
    rows = []
    for entry in built["manifest"]["shards"]:
        rows += pq.read_table(built["dataset"] / entry["parquet_path"]).to_pylist()
    return rows


# ---- webdataset and Hugging Face read straight from the server ----------------------------------


def test_webdataset_reads_every_sample_from_the_server(served):
    url = served["url"]
    for group in served["manifest"]["groups"]:
        shards = [s for s in served["manifest"]["shards"] if s["group"] == group]
        braces = f"{url}/shards/{group}/{{000000..{len(shards) - 1:06d}}}.tar"
        remote = read_webdataset(braces)
        local = read_webdataset(tar_paths(served, group))
        assert len(remote) == sum(s["samples"] for s in shards) == len(local)
        assert remote == local  # every member's bytes


def test_hugging_face_streams_from_the_server(served, tmp_path):
    from datasets import load_dataset, load_dataset_builder

    dataset = served["dataset"]
    # The tar loader guesses the JSON's types from five samples; the card's features do not.
    features = load_dataset_builder(str(dataset), "commercial").info.features
    streamed = load_dataset(
        "webdataset",
        data_files={"train": shard_urls(served["url"], served, "commercial")},
        split="train",
        streaming=True,
        features=features,
        cache_dir=str(tmp_path / "hf"),
    )
    local = read_webdataset(tar_paths(served, "commercial"))
    seen = []
    for sample in streamed:
        key = sample["__key__"]
        seen.append(key)
        assert sample["txt"] == local[key]["txt"].decode("utf-8")
        assert sample["json"]["key"] == key
        assert sample["json"]["caption"] == json.loads(local[key]["json"])["caption"]
        assert sample["jpg"].size == tuple(json.loads(local[key]["json"])["image_size"])
    assert sorted(seen) == sorted(local) and len(seen) == len(set(seen))


# ---- HTTP ranges --------------------------------------------------------------------------------


def test_parse_range_unit():
    size = 1000
    assert parse_range(None, size) is None
    assert parse_range("bytes=0-99", size) == (0, 100)
    assert parse_range("bytes=500-", size) == (500, 500)
    assert parse_range("bytes=-10", size) == (990, 10)
    assert parse_range("bytes=-5000", size) == (0, 1000)
    assert parse_range("bytes=900-5000", size) == (900, 100)  # clamped to the end
    assert parse_range("bytes=999-999", size) == (999, 1)
    for ignored in ("bytes=5-2", "items=0-1", "bytes=0-1,5-6", "bytes=x-y", "bytes=-"):
        assert parse_range(ignored, size) is None, ignored
    for bad in ("bytes=1000-", "bytes=5000-6000", "bytes=-0"):
        with pytest.raises(Unsatisfiable):
            parse_range(bad, size)
    with pytest.raises(Unsatisfiable):
        parse_range("bytes=0-", 0)


def test_range_requests(served):
    client = served["client"]
    entry = served["manifest"]["shards"][1]
    data = (served["dataset"] / entry["path"]).read_bytes()
    size = len(data)
    path = f"/shards/{entry['path'].removeprefix('webdataset/')}"
    etag = f'"{entry["sha256"]}"'

    whole = client.get(path)
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["accept-ranges"] == "bytes" and whole.headers["etag"] == etag
    assert whole.headers["content-length"] == str(size)
    assert whole.headers["content-type"] == "application/x-tar"
    cases = {
        "bytes=0-511": (0, 512),  # first
        "bytes=1000-2999": (1000, 2000),  # middle
        f"bytes={size - 700}-": (size - 700, 700),  # open end
        "bytes=-100": (size - 100, 100),  # suffix
        f"bytes={size - 10}-{size + 5000}": (size - 10, 10),  # past the end: cut
    }
    for header, (start, length) in cases.items():
        response = client.get(path, headers={"Range": header})
        assert response.status_code == 206, header
        assert response.content == data[start : start + length], header
        assert response.headers["content-range"] == f"bytes {start}-{start + length - 1}/{size}"
        assert response.headers["content-length"] == str(length)
    for header in (f"bytes={size}-", f"bytes={size + 1}-{size + 9}", "bytes=-0"):
        response = client.get(path, headers={"Range": header})
        assert response.status_code == 416, header
        assert response.headers["content-range"] == f"bytes */{size}"
        assert response.json()["error"]["code"] == "range_not_satisfiable"
    # Not a single byte range, or a stale If-Range: the whole shard.
    for headers in (
        {"Range": "bytes=5-2"},
        {"Range": "bytes=0-1,4-5"},
        {"Range": "bytes=0-9", "If-Range": '"old"'},
    ):
        response = client.get(path, headers=headers)
        assert response.status_code == 200 and response.content == data, headers
    assert client.get(path, headers={"Range": "bytes=0-9", "If-Range": etag}).status_code == 206
    head = client.head(path, headers={"Range": "bytes=10-19"})
    assert head.status_code == 206 and head.content == b""
    assert head.headers["content-length"] == "10" and head.headers["etag"] == etag

    # Over the wire of a real server too: what a streaming reader sees.
    status, headers, body = raw_get(served["url"], path, {"Range": "bytes=-4096"})
    assert status == 206 and body == data[-4096:] and headers["content-length"] == "4096"
    status, headers, body = raw_get(served["url"], path)
    assert status == 200 and body == data


@pytest.mark.parametrize(
    "path",
    [
        "/shards/../manifest.json",
        "/shards/commercial/../../manifest.json",
        "/shards/commercial/..%2f..%2fmanifest.json.tar",
        "/shards/..%2fmanifest.json.tar",
        "/shards/%2e%2e/manifest.tar",
        "/shards/commercial/%2Fetc%2Fpasswd.tar",
        "/shards//etc/passwd.tar",
        "/shards/%2Fetc/passwd.tar",
        "/shards/webdataset/commercial.tar",
        "/shards/commercial/000000.json.tar",
        "/shards/commercial/..%5c..%5cmanifest.tar",
        "/samples/..%2fmanifest.json",
        "/samples/../manifest.json",
    ],
)
def test_paths_outside_the_manifest_are_404_json(served, path):
    status, headers, body = raw_get(served["url"], path)
    assert status == 404, (path, status, body[:200])
    assert headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert error["status"] == 404 and error["code"] in (
        "shard_not_found",
        "not_found",
        "sample_not_found",
    )
    assert b"shards" not in body or b"groups" not in body  # never the manifest's content


def test_dataset_names_shards_only_from_the_manifest(served):
    files = served["files"]
    assert files.shard_uri("commercial", "000000") == str(
        served["dataset"] / "webdataset/commercial/000000.tar"
    )
    assert files.shard_uri("commercial", "000000.tar") == files.shard_uri("commercial", "000000")
    for group, name in [
        ("..", "manifest.json"),
        ("commercial", "../000000"),
        ("commercial/..", "000000"),
        ("/etc", "passwd"),
        ("commercial", "999999"),
    ]:
        with pytest.raises(errors.ApiError) as caught:
            files.shard_uri(group, name)
        assert caught.value.status == 404 and caught.value.code == "shard_not_found"


# ---- samples by key -----------------------------------------------------------------------------


def test_samples_by_key_are_their_tar_members(served):
    client = served["client"]
    members = local_members(served)
    keys = [row["key"] for row in index_rows(served)]
    assert len(keys) == served["manifest"]["totals"]["samples"]
    for key in keys:
        image = client.get(f"/samples/{key}.jpg")
        assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
        assert image.content == members[f"{key}.jpg"]
        meta = client.get(f"/samples/{key}")
        assert meta.status_code == 200 and meta.json() == json.loads(members[f"{key}.json"])
    for missing in ("PMC0_F0", "PMC0_F0.jpg", "x" * 600):
        response = client.get(f"/samples/{missing}")
        assert (
            response.status_code == 404 and response.json()["error"]["code"] == "sample_not_found"
        )
    status, _, body = raw_get(served["url"], f"/samples/{keys[0]}.jpg")
    assert status == 200 and body == members[f"{keys[0]}.jpg"]


# ---- subsets ------------------------------------------------------------------------------------


def test_subset_tar_holds_exactly_the_selected_samples(served):
    client = served["client"]
    rows = index_rows(served)
    members = local_members(served)
    years = sorted({r["article_year"] for r in rows})
    year = years[len(years) // 2]
    where = f"article_year >= {year} and article_license_group == 'commercial'"
    wanted = [
        r["key"]
        for r in rows
        if r["article_year"] >= year and r["article_license_group"] == "commercial"
    ]
    assert 0 < len(wanted) < len(rows)
    response = client.get("/subset", params={"where": where})
    assert response.status_code == 200 and response.headers["content-type"] == "application/x-tar"
    assert 'filename="subset.tar"' in response.headers["content-disposition"]
    assert (
        response.headers["x-subset-samples"]
        == response.headers["x-subset-matching"]
        == str(len(wanted))
    )
    assert int(response.headers["content-length"]) == len(response.content)
    got = members_of(response.content)
    assert [name for name, _ in got] == [f"{k}.{e}" for k in wanted for e in ("jpg", "json", "txt")]
    assert all(data == members[name] for name, data in got)
    # Through webdataset, over a real server, like a shard.
    assert set(read_webdataset(f"{served['url']}/subset?where=article_year%20%3E%3D%20{year}")) == {
        r["key"] for r in rows if r["article_year"] >= year
    }

    # limit: the first N in id order; everything without a filter.
    limited = members_of(client.get("/subset", params={"where": where, "limit": 2}).content)
    assert [n for n, _ in limited] == [
        f"{k}.{e}" for k in wanted[:2] for e in ("jpg", "json", "txt")
    ]
    everything = client.get("/subset")
    assert [n for n, _ in members_of(everything.content)][::3] == [f"{r['key']}.jpg" for r in rows]
    nothing = client.get("/subset", params={"where": "article_year < 0"})
    assert nothing.status_code == 200 and members_of(nothing.content) == []
    for params, code in [
        ({"where": "no_such_field == 1"}, "invalid_where"),
        ({"where": "__import__('os').system('true')"}, "invalid_where"),
        ({"where": "x" * 2001}, "invalid_where"),
        ({"limit": 0}, "limit_out_of_range"),
        ({"limit": 100001}, "limit_out_of_range"),
    ]:
        response = client.get("/subset", params=params)
        assert response.status_code == 400 and response.json()["error"]["code"] == code, params


def test_subset_limit_is_bounded_by_limits(built):
    app, _ = make_app(built["dataset"], Limits(max_subset_samples=5))
    client = TestClient(app)
    response = client.get("/subset")
    assert response.status_code == 200 and response.headers["x-subset-samples"] == "5"
    assert len(members_of(response.content)) == 15
    assert (
        client.get("/subset", params={"limit": 6}).json()["error"]["code"] == "limit_out_of_range"
    )


def test_adjacent_ranges_are_read_once():
    places = [
        ("a.tar", 0, 10),
        ("a.tar", 10, 5),
        ("a.tar", 30, 5),
        ("b.tar", 35, 5),
        ("b.tar", 40, 1),
    ]
    assert merged_spans(places) == [("a.tar", 0, 15), ("a.tar", 30, 5), ("b.tar", 35, 6)]


# ---- filters ------------------------------------------------------------------------------------


def test_where_fields_unit():
    assert where_fields("article_year >= 2020 and 'x' in lower(caption)") == [
        "article_year",
        "caption",
    ]
    assert where_fields("any_of(image_primary_label, ['A']) or not article_retracted") == [
        "article_retracted",
        "image_primary_label",
    ]
    assert where_fields("1 == 1") == []
    with pytest.raises(FilterError):
        where_fields("article_year >")


def test_matching_reads_only_named_columns_and_is_cached(built, monkeypatch):
    files = DatasetFiles(str(built["dataset"]))
    rows = index_rows(built)
    read = []
    original = pq.ParquetFile.read

    def recording(self, columns=None, **kwargs):
        read.append(tuple(columns or ()))
        return original(self, columns=columns, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read", recording)
    years = sorted(r["article_year"] for r in rows)
    year, words = years[len(years) // 3], rows[-1]["caption"][:15]
    where = f"{words!r} in caption or article_year < {year}"
    mask = files.matching(where)
    assert mask.dtype == bool and mask.shape == (len(rows),)
    expected = [words in r["caption"] or r["article_year"] < year for r in rows]
    assert mask.tolist() == expected and 0 < sum(expected) < len(rows)
    assert set(read) == {("article_year", "caption")} and len(read) == len(files.shards)
    assert files.matching(where) is mask and len(read) == len(files.shards)  # cached
    assert not mask.flags.writeable
    assert files.matching(None).all() and files.matching("").all()
    assert files.matching("1 == 1").all() and not files.matching("1 == 2").any()
    with pytest.raises(errors.ApiError) as caught:
        files.matching("article_year >= '2020'")
    assert caught.value.status == 400 and caught.value.code == "invalid_where"
    assert "compare it with 2020" in caught.value.message


# ---- damage: that request fails, the others work ------------------------------------------------


def test_missing_and_damaged_files_fail_only_their_requests(built, tmp_path):
    dataset = tmp_path / "dataset"
    shutil.copytree(built["dataset"], dataset)
    shards = built["manifest"]["shards"]
    commercial = [s for s in shards if s["group"] == "commercial"]
    good, cut, gone = commercial[0], commercial[1], commercial[2]
    cut_path = dataset / cut["path"]
    cut_path.write_bytes(cut_path.read_bytes()[: cut["bytes"] // 2])
    (dataset / gone["path"]).unlink()
    broken_index = next(s for s in shards if s["group"] != "commercial")
    keys = {
        s["path"]: pq.read_table(built["dataset"] / s["parquet_path"]).column("key").to_pylist()
        for s in shards
    }

    app, _ = make_app(dataset)
    with serving(app) as url:

        def name(entry):
            return "/shards/" + entry["path"].removeprefix("webdataset/")

        for _ in range(2):  # the server is still there the second time
            status, _, body = raw_get(url, name(cut))
            assert status == 502 and json.loads(body)["error"]["code"] == "shard_unreadable"
            assert cut["path"].removeprefix("webdataset/") in json.loads(body)["error"]["message"]
            status, _, body = raw_get(url, name(gone))
            assert status == 404 and json.loads(body)["error"]["code"] == "shard_missing"
            status, _, body = raw_get(url, name(gone), {"Range": "bytes=0-9"})
            assert status == 404
            status, _, body = raw_get(url, name(good))
            assert status == 200 and body == (dataset / good["path"]).read_bytes()

            status, _, body = raw_get(url, f"/samples/{keys[gone['path']][0]}.jpg")
            assert status == 404 and json.loads(body)["error"]["code"] == "shard_missing"
            status, _, body = raw_get(url, f"/samples/{keys[cut['path']][0]}.jpg")
            assert status == 502
            status, _, body = raw_get(url, f"/samples/{keys[good['path']][0]}.jpg")
            assert status == 200 and body[:2] == b"\xff\xd8"

            # A subset that needs the gone shard fails before it sends a byte.
            status, _, body = raw_get(
                url, "/subset?where=article_license_group%20%3D%3D%20%27commercial%27"
            )
            error = json.loads(body)["error"]
            assert status == 502 and error["code"] == "shard_unreadable"
            assert cut["path"].removeprefix("webdataset/") in error["message"]
            only_gone = f"/subset?where=key%20%3D%3D%20%27{keys[gone['path']][1]}%27"
            status, _, body = raw_get(url, only_gone)
            error = json.loads(body)["error"]
            assert status == 404 and error["code"] == "shard_missing"
            assert gone["path"].removeprefix("webdataset/") in error["message"]
            (dataset / broken_index["parquet_path"]).write_bytes(b"PAR1 not really")
            # The broken index: a filter over every shard names it.
            status, _, body = raw_get(url, "/subset?where=article_year%20%3E%200")
            error = json.loads(body)["error"]
            assert status == 502 and error["code"] == "shard_unreadable"
            assert broken_index["path"].removeprefix("webdataset/") in error["message"]
            key = keys[good["path"]][0]
            status, _, body = raw_get(url, f"/subset?where=key%20%3D%3D%20%27{key}%27")
            assert status == 502  # the filter still has to read the broken index
        # webdataset still reads the good shards.
        assert len(read_webdataset(f"{url}{name(good)}")) == good["samples"]


# ---- object stores: a range read fetches its range ----------------------------------------------


@contextlib.contextmanager
def counting_proxy(target: str):
    """An HTTP proxy to `target` that records (method, path, Range, response body bytes)."""
    host, port = target.removeprefix("http://").split(":")
    log: list[tuple[str, str, str | None, int]] = []

    class Forward(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def forward(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            upstream = http.client.HTTPConnection(host, int(port), timeout=30)
            headers = {
                k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")
            }
            upstream.request(self.command, self.path, body=body, headers=headers)
            response = upstream.getresponse()
            data = response.read()
            upstream.close()
            log.append((self.command, self.path, self.headers.get("Range"), len(data)))
            self.send_response(response.status)
            for name, value in response.getheaders():
                if name.lower() in ("transfer-encoding", "connection", "content-length"):
                    continue
                self.send_header(name, value)
            if self.command == "HEAD":
                self.send_header("Content-Length", response.getheader("Content-Length", "0"))
            else:
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = forward

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Forward)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", log
    finally:
        server.shutdown()
        server.server_close()


def dataset_files(built) -> list[tuple[str, Path]]:
    root = built["dataset"]
    files = ["manifest.json"] + [
        s[k] for s in built["manifest"]["shards"] for k in ("path", "parquet_path")
    ]
    return [(name, root / name) for name in files]


def check_remote(built, app, files: DatasetFiles, log: list, is_shard_data) -> None:
    """Ranges of a remote dataset: only their bytes travel; the routes serve it."""
    entry = built["manifest"]["shards"][0]
    local = (built["dataset"] / entry["path"]).read_bytes()
    shard = entry["path"].removeprefix("webdataset/")
    row = pq.read_table(built["dataset"] / entry["parquet_path"]).to_pylist()[3]
    log.clear()
    assert (
        files.read_range(shard, row["tar_offset"], row["tar_size"])
        == local[row["tar_offset"] : row["tar_offset"] + row["tar_size"]]
    )
    fetched = sum(n for method, path, _, n in log if method == "GET" and is_shard_data(path))
    assert fetched == row["tar_size"], log  # the sample's bytes, not the shard's
    assert row["tar_size"] < len(local) / 3

    client = TestClient(app)
    log.clear()
    image = client.get(f"/samples/{row['key']}.jpg")
    assert image.status_code == 200
    assert image.content == members_of(local)[3 * 3][1]
    assert (
        sum(n for method, path, _, n in log if method == "GET" and is_shard_data(path))
        == row["tar_size"]
    )

    response = client.get(f"/shards/{shard}", headers={"Range": "bytes=1024-3071"})
    assert response.status_code == 206 and response.content == local[1024:3072]
    assert client.get(f"/shards/{shard}").content == local
    mask = files.matching("article_license_group == 'commercial'")
    assert mask.tolist() == [r["article_license_group"] == "commercial" for r in index_rows(built)]


def test_s3_dataset_reads_only_its_ranges(built, monkeypatch):
    from transforms.storage import S3Config

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    with moto_s3() as (endpoint, owner), counting_proxy(endpoint) as (proxy, log):
        owner.create_bucket(Bucket="data")
        for name, path in dataset_files(built):
            owner.put_object(
                Bucket="data", Key=f"ds/{name}", Body=path.read_bytes(), ACL="public-read"
            )
        config = S3Config(endpoint_url=proxy, anonymous=True)
        app, files = make_app("s3://data/ds", s3=config)
        check_remote(built, app, files, log, lambda path: path.startswith("/data/ds/webdataset/"))
        # Gone from the bucket: that request fails, the others work.
        gone = built["manifest"]["shards"][1]["path"]
        owner.delete_object(Bucket="data", Key=f"ds/{gone}")
        client = TestClient(app)
        response = client.get(f"/shards/{gone.removeprefix('webdataset/')}")
        assert response.status_code == 404 and response.json()["error"]["code"] == "shard_missing"
        first = built["manifest"]["shards"][0]["path"].removeprefix("webdataset/")
        assert client.get(f"/shards/{first}").status_code == 200


def test_gcs_dataset_reads_only_its_ranges(built, monkeypatch, no_credential_retries):
    from google.cloud.storage import Blob

    # The emulator's media links name its own address, so downloads bypass a proxy: count
    # what the client asks for and gets instead.
    log = []
    download = Blob.download_as_bytes

    def counted(self, *args, **kwargs):
        data = download(self, *args, **kwargs)
        log.append(("GET", f"{self.name}?alt=media", kwargs.get("start"), len(data)))
        return data

    monkeypatch.setattr(Blob, "download_as_bytes", counted)
    with gcs_emulator("stream-test") as client:
        bucket = client.bucket("stream-test")
        for name, path in dataset_files(built):
            bucket.blob(f"ds/{name}").upload_from_filename(str(path))
        app, files = make_app("gs://stream-test/ds")
        check_remote(built, app, files, log, lambda path: path.startswith("ds/webdataset/"))
        gone = built["manifest"]["shards"][1]["path"]
        bucket.blob(f"ds/{gone}").delete()
        response = TestClient(app).get(f"/shards/{gone.removeprefix('webdataset/')}")
        assert response.status_code == 404 and response.json()["error"]["code"] == "shard_missing"


def test_mask_length_and_ids_agree_with_the_index(served):
    files = served["files"]
    rows = index_rows(served)
    assert files.samples == len(rows)
    ids = np.flatnonzero(files.matching("article_license_group == 'noncommercial'"))
    places = files.placements(ids)
    assert [(p[1], p[2]) for p in places] == [
        (rows[i]["tar_offset"], rows[i]["tar_size"]) for i in ids
    ]
    assert {p[0] for p in places} == {
        r["shard"] for r in rows if r["article_license_group"] == "noncommercial"
    }
