"""Read http(s) shards for webdataset in Python, instead of through a `curl` child process.

webdataset (0.2.x) opens an http(s):// URL by starting `curl -f -s -L URL` and reading its
stdout pipe, and checks the child's status after every read (tarfile reads 10 KiB at a
time). That pipe alone costs a reader about 40% of its throughput, server or not
(README, "Streaming shards through the server"). `HttpStream` reads the response body
straight from the socket into a large buffer instead, and `use_http_stream()` makes
webdataset open http:// and https:// with it:

    from transforms.shard.http_stream import use_http_stream
    use_http_stream()   # in the process that builds the WebDataset, before iterating
    ds = webdataset.WebDataset("http://127.0.0.1:8080/shards/commercial/{000000..000009}.tar")

The registration is a module global of webdataset: DataLoader workers started by fork (the
default on Linux) inherit it; under the spawn start method call it in each worker (e.g. a
`worker_init_fn`). `use_http_stream(False)` puts webdataset's curl opener back.

What it does, as curl -f -L does: an HTTP error status fails the open (OSError naming the
URL and status); redirects are followed. Beyond curl: a connection that drops mid-body, or a
body that ends before its Content-Length, is resumed where it stopped with
`Range: bytes=<position>-` (and `If-Range: <ETag>`, so a shard replaced meanwhile is an
error, not a splice of two files), retried with backoff; 5xx and 429 answers are retried
the same way. Connections are kept alive and reused for the next shard of the same host.
"""

from __future__ import annotations

import http.client
import importlib
import io
import logging
import os
import re
import threading
import time
from urllib.parse import urljoin, urlsplit

log = logging.getLogger(__name__)

READ_BUFFER = 4 << 20  # bytes taken from the socket per refill: few Python calls a shard
TIMEOUT_S = 60.0  # a connect or a read that waits longer fails (and is retried)
RETRIES = 5  # attempts in a row that make no progress before the stream gives up
BACKOFF_S = 0.5  # first wait before a retry; doubles each time, at most BACKOFF_MAX_S
BACKOFF_MAX_S = 8.0
MAX_REDIRECTS = 5
DRAIN_ON_CLOSE = 256 << 10  # unread body this small is read off so the connection is reused
IDLE_PER_HOST = 4  # kept-alive connections held per host
SCHEMES = ("http", "https")

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
# What a dropped or refused connection raises (http.client's own, sockets', timeouts).
DROPPED = (OSError, http.client.HTTPException)


class HttpStreamError(OSError):
    """A shard URL that cannot be read (status, redirect loop, or retries used up)."""


# ---- kept-alive connections -----------------------------------------------------------------

_idle: dict[tuple[str, str, int], list[http.client.HTTPConnection]] = {}
_idle_lock = threading.Lock()


def _forget_idle_after_fork() -> None:
    """A forked child (a DataLoader worker) must not share its parent's sockets: two readers
    on one connection would interleave responses. Its copies are dropped, not closed."""
    global _idle, _idle_lock
    _idle, _idle_lock = {}, threading.Lock()


os.register_at_fork(after_in_child=_forget_idle_after_fork)


def _origin(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path with query) of an http(s) URL."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES or not parts.hostname:
        raise HttpStreamError(f"{url}: not an http(s) URL")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, parts.hostname, port, path


def _connection(scheme: str, host: str, port: int, timeout: float):
    """An idle kept-alive connection to that host, else a new one; and whether it was idle."""
    with _idle_lock:
        idle = _idle.get((scheme, host, port))
        if idle:
            return idle.pop(), True
    kind = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
    return kind(host, port, timeout=timeout), False


def _keep(scheme: str, host: str, port: int, conn: http.client.HTTPConnection) -> None:
    with _idle_lock:
        idle = _idle.setdefault((scheme, host, port), [])
        if len(idle) < IDLE_PER_HOST:
            idle.append(conn)
            return
    conn.close()


# ---- one shard ----------------------------------------------------------------------------


class HttpStream(io.RawIOBase):
    """The body of GET `url` as a raw, read-only stream that resumes after a dropped connection.

    The first request is made here, so a missing shard (404) or a refused connection fails at
    open, as webdataset's curl opener does. Wrap it in `io.BufferedReader` for small reads
    (`open_http` does).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = TIMEOUT_S,
        retries: int = RETRIES,
        backoff_s: float = BACKOFF_S,
    ):
        super().__init__()
        self.url, self.timeout, self.retries, self.backoff_s = url, timeout, retries, backoff_s
        self.position = 0  # bytes of the body handed out so far
        self.size: int | None = None  # the whole body's length, once a response tells it
        self.resumed = 0  # how many times the body was picked up again after a failure
        self._etag: str | None = None
        self._target = url  # after redirects: where the body is
        self._conn: http.client.HTTPConnection | None = None
        self._response: http.client.HTTPResponse | None = None
        self._origin = _origin(url)
        self._with_retries(self._request, None)

    def __repr__(self) -> str:
        return f"<HttpStream {self.url} at {self.position}>"

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while True:
            failure: BaseException | str
            try:
                n = self._response.readinto(buffer) if self._response is not None else 0
            except DROPPED as err:
                failure = err
            else:
                if n:
                    self.position += n
                    return n
                if not len(buffer) or self.size is None or self.position >= self.size:
                    self._finish()
                    return 0  # the whole body (or an unknown length that ended cleanly)
                failure = f"the body ended at byte {self.position} of {self.size}"
            self._drop()
            self._with_retries(self._request, failure)

    def close(self) -> None:
        if not self.closed:
            self._release()
        super().close()

    # ---- requests -----------------------------------------------------------------------------

    def _with_retries(self, attempt, failure) -> None:
        """Run `attempt` until it succeeds; `failure` (why we are here) counts as the first."""
        tries = 0
        while True:
            if failure is not None:
                tries += 1
                if tries > self.retries:
                    raise HttpStreamError(
                        f"{self.url}: gave up at byte {self.position} after {self.retries} "
                        f"retries ({failure})"
                    )
                wait = min(BACKOFF_MAX_S, self.backoff_s * 2 ** (tries - 1))
                log.warning("%s: %s; retrying at byte %d in %.1fs", self.url, failure,
                            self.position, wait)  # fmt: skip
                time.sleep(wait)
                self.resumed += 1 if self.position else 0
            try:
                attempt()
                return
            except HttpStreamError:
                raise
            except _Retryable as err:
                failure = str(err)
            except DROPPED as err:
                failure = f"{type(err).__name__}: {err}"
            self._drop()

    def _request(self) -> None:
        """GET the body from `position` on (following redirects); leaves `_response` set."""
        target = self._target
        for _ in range(MAX_REDIRECTS + 1):
            scheme, host, port, path = _origin(target)
            response = self._send(scheme, host, port, path)
            if response.status in (301, 302, 303, 307, 308):
                location = response.getheader("Location")
                self._drop()
                if not location:
                    raise HttpStreamError(f"{self.url}: HTTP {response.status} without Location")
                target = urljoin(target, location)
                continue
            self._target = target
            self._accept(response)
            return
        raise HttpStreamError(f"{self.url}: more than {MAX_REDIRECTS} redirects")

    def _send(self, scheme: str, host: str, port: int, path: str) -> http.client.HTTPResponse:
        headers = {"Accept-Encoding": "identity"}
        if self.position:
            headers["Range"] = f"bytes={self.position}-"
            if self._etag and not self._etag.startswith("W/"):
                headers["If-Range"] = self._etag
        while True:
            conn, reused = _connection(scheme, host, port, self.timeout)
            self._conn, self._origin = conn, (scheme, host, port, path)
            try:
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
            except DROPPED:
                conn.close()
                self._conn = None
                if reused:
                    continue  # a kept-alive connection the server had closed: not a failure
                raise
            self._response = response
            return response

    def _accept(self, response: http.client.HTTPResponse) -> None:
        """Check an answer to `_send` (status, where the body starts) and adopt it."""
        status = response.status
        if status in RETRY_STATUS:
            raise _Retryable(f"HTTP {status}")
        if status == 206 and self.position:
            match = CONTENT_RANGE.fullmatch(response.getheader("Content-Range") or "")
            if not match or int(match.group(1)) != self.position:
                raise HttpStreamError(
                    f"{self.url}: asked for bytes {self.position}- and got "
                    f"{response.getheader('Content-Range')!r}"
                )
            if match.group(3) != "*":
                self._expect_size(int(match.group(3)))
            return
        if status != 200:
            raise HttpStreamError(f"{self.url}: HTTP {status} {response.reason}".rstrip())
        etag = response.getheader("ETag")
        length = response.getheader("Content-Length")
        if self.position:
            # The server sent the whole body again: no Range support, or (If-Range) it changed.
            if self._etag is None or etag != self._etag:
                raise HttpStreamError(f"{self.url}: changed or cannot resume at {self.position}")
            self._skip(response, self.position)
        else:
            self._etag = etag
        if length is not None and length.isdigit():
            self._expect_size(int(length))

    def _expect_size(self, size: int) -> None:
        if self.size is not None and size != self.size:
            raise HttpStreamError(f"{self.url}: was {self.size} bytes, now {size}")
        self.size = size

    def _skip(self, response: http.client.HTTPResponse, count: int) -> None:
        scratch = bytearray(min(count, READ_BUFFER))
        while count:
            n = response.readinto(memoryview(scratch)[: min(count, len(scratch))])
            if not n:
                raise _Retryable(f"the body ended while skipping to byte {self.position}")
            count -= n

    # ---- connections --------------------------------------------------------------------------

    def _finish(self) -> None:
        """The body is read: the connection goes back to the idle pool."""
        conn, response = self._conn, self._response
        self._conn = self._response = None
        if conn is None:
            return
        if response is not None and response.isclosed() and not response.will_close:
            _keep(*self._origin[:3], conn)
        else:
            conn.close()

    def _release(self) -> None:
        """Closed early: a short rest of the body is read off to keep the connection."""
        response = self._response
        if response is not None and not response.isclosed():
            left = None if self.size is None else self.size - self.position
            if left is not None and left <= DRAIN_ON_CLOSE:
                try:
                    while response.read(left or 1):
                        pass
                except DROPPED:
                    self._drop()
                    return
        self._finish()

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = self._response = None


class _Retryable(Exception):
    """An answer worth asking again for (5xx, 429, a body cut short while skipping)."""


# ---- webdataset ---------------------------------------------------------------------------


def open_http(url: str, mode: str = "rb", bufsize: int = 8192, **_) -> io.BufferedReader:
    """webdataset's opener signature (`gopen_schemes` values): a buffered `HttpStream`.

    `bufsize` (webdataset passes 8192) is ignored: the buffer is READ_BUFFER, so tarfile's
    10 KiB reads are served from memory and the socket is read in large pieces.
    """
    if not mode.startswith("r"):
        raise ValueError(f"{url}: http shards are read-only here (mode {mode!r})")
    return io.BufferedReader(HttpStream(url), buffer_size=READ_BUFFER)


_curl_openers: dict[str, object] = {}


def use_http_stream(enable: bool = True) -> None:
    """Make webdataset open http:// and https:// URLs with `open_http` in this process
    (enable=False: back to the openers it had, webdataset's `curl` pipe)."""
    # The module (`from webdataset import gopen` is the function of that name).
    gopen = importlib.import_module("webdataset.gopen")
    for scheme in SCHEMES:
        if enable:
            if gopen.gopen_schemes.get(scheme) is not open_http:
                _curl_openers[scheme] = gopen.gopen_schemes.get(scheme)
            gopen.gopen_schemes[scheme] = open_http
        elif scheme in _curl_openers:
            gopen.gopen_schemes[scheme] = _curl_openers.pop(scheme)
