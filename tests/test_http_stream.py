"""transforms/shard/http_stream.py: webdataset reads http shards in Python, resuming drops.

Against a real uvicorn serving the streaming router (test_serve_streaming's fixtures): the
samples are those of the local tars, with webdataset's curl pipe made unusable, over one
kept-alive connection. Against a small http.server that misbehaves on purpose: a body cut
off mid-shard is picked up with Range (and If-Range) and the samples are still exact; a
shard that changed meanwhile, an HTTP error and a redirect behave as documented.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import importlib
import io
import threading
from pathlib import Path

import pytest
from test_serve_streaming import built, make_app, read_webdataset, serving, tar_paths  # noqa: F401

from transforms.shard import http_stream
from transforms.shard.http_stream import HttpStream, HttpStreamError, open_http, use_http_stream

GROUP = "commercial"
GOPEN = importlib.import_module("webdataset.gopen")  # the module; webdataset.gopen is a function


@pytest.fixture
def python_opener(monkeypatch):
    """webdataset opens http with http_stream; its curl pipe would fail the test."""

    def no_curl(*args, **kw):
        raise AssertionError(f"webdataset started a pipe: {args}")

    monkeypatch.setattr(GOPEN, "Pipe", no_curl)
    use_http_stream()
    yield
    use_http_stream(False)


def test_use_http_stream_registers_and_restores():
    curl = GOPEN.gopen_schemes["http"]
    use_http_stream()
    use_http_stream()  # twice: the curl opener is still what comes back
    assert GOPEN.gopen_schemes["http"] is open_http
    assert GOPEN.gopen_schemes["https"] is open_http
    use_http_stream(False)
    assert GOPEN.gopen_schemes["http"] is curl


def test_same_samples_as_local_paths_over_one_connection(built, python_opener, monkeypatch):  # noqa: F811
    connects = []
    real_connect = http.client.HTTPConnection.connect

    def counting(self):
        connects.append((self.host, self.port))
        return real_connect(self)

    monkeypatch.setattr(http.client.HTTPConnection, "connect", counting)
    http_stream._idle.clear()
    app, _ = make_app(built["dataset"])
    shards = [s for s in built["manifest"]["shards"] if s["group"] == GROUP]
    with serving(app) as url:
        braces = f"{url}/shards/{GROUP}/{{000000..{len(shards) - 1:06d}}}.tar"
        remote = read_webdataset(braces)
    local = read_webdataset(tar_paths(built, GROUP))
    assert len(remote) == sum(s["samples"] for s in shards) == len(local) > 0
    assert remote == local  # every member's bytes
    # Kept alive: the next shard reuses the connection the last one finished with (one
    # connection in all, unless uvicorn's 5 s keep-alive ran out between two shards).
    assert len(shards) >= 3 and len(connects) < len(shards), connects


# ---- a server that misbehaves -------------------------------------------------------------------


class Flaky(http.server.ThreadingHTTPServer):
    """Serves files under `root` with Range; `cut` cuts the first body off after so many bytes
    (the connection closed, Content-Length not met); `changed` answers a resume with the
    whole file under another ETag; `fail_first` answers the first request with that status."""

    daemon_threads = True

    def __init__(self, root: Path, cut: int = 0, changed: bool = False, fail_first: int = 0):
        super().__init__(("127.0.0.1", 0), Handler)
        self.root, self.cut, self.changed, self.fail_first = root, cut, changed, fail_first
        self.seen: list[dict] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        server: Flaky = self.server
        first = not server.seen
        server.seen.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
        if self.path.startswith("/moved/"):
            self.send_response(302)
            self.send_header("Location", "/" + self.path.removeprefix("/moved/"))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if first and server.fail_first:
            self.send_error(server.fail_first)
            return
        path = server.root / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        asked = self.headers.get("Range")
        start = int(asked.removeprefix("bytes=").rstrip("-")) if asked else 0
        if asked and server.changed:
            start, status, etag = 0, 200, '"v2"'
        else:
            status, etag = (206 if asked else 200), '"v1"'
        self.send_response(status)
        self.send_header("ETag", etag)
        self.send_header("Content-Length", str(len(data) - start))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        body = data[start:]
        if first and server.cut:
            self.wfile.write(body[: server.cut])
            self.close_connection = True  # the rest never comes: the client sees EOF
            return
        self.wfile.write(body)


@contextlib.contextmanager
def flaky(built, **behaviour):  # noqa: F811
    server = Flaky(built["dataset"] / "webdataset", **behaviour)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        http_stream._idle.clear()  # no kept-alive connection to a server that is gone


def test_a_dropped_connection_resumes_with_range_and_the_samples_are_exact(
    built,  # noqa: F811
    python_opener,
):
    shard = tar_paths(built, GROUP)[0]
    cut = 12_345  # inside the first sample's image
    with flaky(built, cut=cut) as server:
        remote = read_webdataset(f"{server.url}/{GROUP}/000000.tar")
    assert remote == read_webdataset([shard]) and remote
    first, again = server.seen
    assert "range" not in first
    assert again["range"] == f"bytes={cut}-" and again["if-range"] == '"v1"'


def read_all(stream: HttpStream) -> bytes:
    with io.BufferedReader(stream, buffer_size=http_stream.READ_BUFFER) as buffered:
        return buffered.read()


def test_the_stream_reports_its_resume(built):  # noqa: F811
    size = Path(tar_paths(built, GROUP)[0]).stat().st_size
    with flaky(built, cut=4096) as server:
        stream = HttpStream(f"{server.url}/{GROUP}/000000.tar", backoff_s=0.01)
        data = read_all(stream)
    assert len(data) == size == stream.size and stream.resumed == 1
    assert data == Path(tar_paths(built, GROUP)[0]).read_bytes()


def test_a_shard_replaced_meanwhile_is_an_error_not_a_splice(built):  # noqa: F811
    with flaky(built, cut=4096, changed=True) as server:
        stream = HttpStream(f"{server.url}/{GROUP}/000000.tar", backoff_s=0.01)
        with pytest.raises(HttpStreamError, match="changed or cannot resume at 4096"):
            read_all(stream)


def test_http_errors_fail_at_open_and_5xx_is_retried(built):  # noqa: F811
    with flaky(built) as server:
        with pytest.raises(HttpStreamError, match=r"/commercial/999999.tar: HTTP 404"):
            open_http(f"{server.url}/{GROUP}/999999.tar")
    with flaky(built, fail_first=503) as server:
        stream = HttpStream(f"{server.url}/{GROUP}/000000.tar", backoff_s=0.01)
        assert read_all(stream) == Path(tar_paths(built, GROUP)[0]).read_bytes()
        assert len(server.seen) == 2 and "range" not in server.seen[1]


def test_redirects_are_followed(built):  # noqa: F811
    with flaky(built) as server:
        with open_http(f"{server.url}/moved/{GROUP}/000001.tar") as stream:
            data = stream.read()
    assert data == Path(tar_paths(built, GROUP)[1]).read_bytes()
    assert [s["path"] for s in server.seen] == [
        f"/moved/{GROUP}/000001.tar",
        f"/{GROUP}/000001.tar",
    ]


def test_retries_run_out_when_the_server_is_gone():
    from conftest import free_port

    url = f"http://127.0.0.1:{free_port()}/x.tar"  # nothing listens there
    with pytest.raises(HttpStreamError, match="gave up at byte 0 after 2 retries"):
        HttpStream(url, retries=2, backoff_s=0.01)


def test_a_forked_worker_does_not_inherit_kept_alive_connections(built):  # noqa: F811
    import multiprocessing

    with flaky(built) as server:
        with open_http(f"{server.url}/{GROUP}/000000.tar") as stream:
            stream.read()
        assert sum(len(c) for c in http_stream._idle.values()) == 1  # kept for the next shard
        context = multiprocessing.get_context("fork")
        with context.Pool(1) as pool:
            assert pool.apply(idle_connections) == 0
        assert sum(len(c) for c in http_stream._idle.values()) == 1


def idle_connections() -> int:
    return sum(len(c) for c in http_stream._idle.values())
