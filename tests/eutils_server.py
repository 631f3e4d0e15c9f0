"""A local stand-in for NCBI's efetch: real MEDLINE records, NCBI's rules checked, faults on demand.

    with EutilsServer(load_articles(SLICE)) as server:
        client = EutilsClient(base_url=server.base_url, email="a@b.org")
        server.fail_next(429, 2, retry_after=1)   # the next two requests answer 429
        ...
        assert server.problems == []               # every request kept NCBI's rules

It records every request (arrival time on the monotonic clock, PMIDs, form fields), answers
efetch POSTs with the records it holds for the ids asked (unknown ids are left out, as efetch
does), and notes a problem (and answers 400) for a request without `tool` or `email`, with more
than 200 ids, not POSTed, or not db=pubmed / retmode=xml.
"""

from __future__ import annotations

import gzip
import random
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from conftest import free_port
from lxml import etree

DATA = Path(__file__).resolve().parent / "data" / "eutils"
SLICE = DATA / "pubmed20n0014-slice.xml.gz"
MAX_IDS = 200
HEAD = (
    b'<?xml version="1.0" ?>\n<!DOCTYPE PubmedArticleSet PUBLIC "-//NLM//DTD PubMedArticle, '
    b'1st January 2025//EN" "https://dtd.nlm.nih.gov/ncbi/pubmed/out/pubmed_250101.dtd">\n'
    b"<PubmedArticleSet>\n"
)
TAIL = b"</PubmedArticleSet>\n"


def load_articles(path: Path = SLICE) -> dict[str, bytes]:
    """PMID -> `<PubmedArticle>` bytes of a (gzipped) MEDLINE file."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as handle:
        root = etree.parse(handle, etree.XMLParser(no_network=True)).getroot()
    return {
        element.findtext("MedlineCitation/PMID"): etree.tostring(element, encoding="UTF-8").strip()
        for element in root.iter("PubmedArticle")
    }


@dataclass
class Seen:
    at: float  # time.monotonic() on arrival
    method: str
    path: str
    fields: dict[str, str]
    pmids: list[str]
    status: int = 0


@dataclass
class _Faults:
    queued: list[tuple[int, float | None, float]] = field(default_factory=list)
    sometimes: tuple[int, float, random.Random] | None = None


class EutilsServer:
    def __init__(self, articles: dict[str, bytes], port: int | None = None):
        self.articles = dict(articles)
        self.requests: list[Seen] = []
        self.problems: list[str] = []
        self._faults = _Faults()
        self._lock = threading.Lock()
        self.port = port or free_port()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/entrez/eutils/"

    def __enter__(self) -> EutilsServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    # Faults. A queued fault is used by one request each, in order.
    def fail_next(self, status: int, count: int = 1, retry_after: float | None = None) -> None:
        with self._lock:
            self._faults.queued.extend([(status, retry_after, 0.0)] * count)

    def delay_next(self, seconds: float, count: int = 1) -> None:
        """The next requests answer normally, but only after `seconds` (a client times out)."""
        with self._lock:
            self._faults.queued.extend([(200, None, seconds)] * count)

    def fail_sometimes(self, status: int, fraction: float, seed: int = 0) -> None:
        with self._lock:
            self._faults.sometimes = (status, fraction, random.Random(seed))

    def max_in_window(self, window: float = 1.0) -> int:
        """The most requests that arrived within any `window` seconds (half-open)."""
        times = sorted(seen.at for seen in self.requests)
        best, first = 0, 0
        for last, moment in enumerate(times):
            while moment - times[first] >= window:
                first += 1
            best = max(best, last - first + 1)
        return best

    def efetch_requests(self) -> list[Seen]:
        return [seen for seen in self.requests if seen.path.endswith("/efetch.fcgi")]

    def _next_fault(self) -> tuple[int, float | None, float]:
        with self._lock:
            if self._faults.queued:
                return self._faults.queued.pop(0)
            if self._faults.sometimes is not None:
                status, fraction, rng = self._faults.sometimes
                if rng.random() < fraction:
                    return status, 1.0 if status == 429 else None, 0.0
        return 200, None, 0.0

    def _check(self, seen: Seen) -> str | None:
        if seen.method != "POST":
            return f"{seen.method} instead of POST"
        if not seen.path.endswith("/efetch.fcgi"):
            return f"unknown path {seen.path}"
        for name in ("tool", "email"):
            if not seen.fields.get(name):
                return f"no {name}"
        if seen.fields.get("db") != "pubmed" or seen.fields.get("retmode") != "xml":
            return f"db={seen.fields.get('db')} retmode={seen.fields.get('retmode')}"
        if not seen.pmids:
            return "no id"
        if len(seen.pmids) > MAX_IDS:
            return f"{len(seen.pmids)} ids > {MAX_IDS}"
        return None

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet tests
                pass

            def do_GET(self):
                self._serve(b"")

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                self._serve(self.rfile.read(length))

            def _serve(self, body: bytes):
                arrived = time.monotonic()
                query = urllib.parse.urlsplit(self.path).query
                fields = dict(urllib.parse.parse_qsl(query))
                fields.update(urllib.parse.parse_qsl(body.decode("ascii", "replace")))
                pmids = [p for p in fields.get("id", "").split(",") if p]
                path = urllib.parse.urlsplit(self.path).path
                seen = Seen(arrived, self.command, path, fields, pmids)
                with server._lock:
                    server.requests.append(seen)
                problem = server._check(seen)
                if problem:
                    with server._lock:
                        server.problems.append(problem)
                    return self._answer(seen, 400, b"<ERROR>" + problem.encode() + b"</ERROR>")
                status, retry_after, delay = server._next_fault()
                if delay:
                    time.sleep(delay)
                if status == 429:
                    body = b'{"error":"API rate limit exceeded","count":"4"}'
                    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
                    return self._answer(seen, 429, body, headers, "application/json")
                if status != 200:
                    return self._answer(seen, status, b"<ERROR>simulated failure</ERROR>")
                records = [server.articles[p] for p in pmids if p in server.articles]
                document = HEAD + b"".join(r + b"\n" for r in records) + TAIL
                self._answer(seen, 200, document)

            def _answer(self, seen, status, body, headers=None, kind="text/xml; charset=UTF-8"):
                seen.status = status
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", kind)
                    self.send_header("Content-Length", str(len(body)))
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (a timeout test)

        return Handler
