"""NCBI E-utilities efetch client for PubMed records: rate-limited, retried, cached.

Pure Python (stdlib + lxml), no Beam: the enrich pipeline wraps it. It hands back the raw efetch
XML of each batch; parsing the records is the MEDLINE parser's job (transforms/pubmed/medline.py).

NCBI's rules (https://www.ncbi.nlm.nih.gov/books/NBK25497/): at most 3 requests a second from
one client without an API key, 10 with one; `tool` and `email` on every request; long id lists
POSTed. The limit holds for every request this process sends to one server with one key, retries
included, whatever the number of threads or clients, because clients share one limiter.
"""

from __future__ import annotations

import collections
import contextlib
import email.utils
import io
import logging
import os
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from lxml import etree

from transforms.pubmed.join import parse_pmid

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://eutils.ncbi.nlm.nih.gov/entrez/eutils/"
MAX_IDS = 200  # ids per efetch POST
RATE_WITHOUT_KEY = 3.0  # requests per second
RATE_WITH_KEY = 10.0
# A little slack between request starts: NCBI counts arrivals, and network delays vary.
RATE_MARGIN = 0.03
MAX_RESPONSE_BYTES = 256 << 20  # 200 records are a few MB; anything past this is not efetch
MAX_RETRY_AFTER = 300.0  # seconds; a longer Retry-After fails the batch rather than stall a worker
RECORD_TAGS = ("PubmedArticle", "PubmedBookArticle")

DOCUMENT_HEAD = b'<?xml version="1.0" encoding="UTF-8"?>\n<PubmedArticleSet>\n'
DOCUMENT_TAIL = b"</PubmedArticleSet>\n"


@dataclass(frozen=True)
class Batch:
    """One efetch call's worth of PMIDs and what came of it.

    `xml` is a `<PubmedArticleSet>` document: the server's bytes as sent, or, from the cache, the
    cached records assembled into one. `not_found` are PMIDs asked for that have no record (the
    server returned none, now or in an earlier run). A failed batch has `error` (a short reason)
    and `detail`, and no xml.
    """

    pmids: tuple[str, ...]
    xml: bytes | None = None
    from_cache: bool = False
    not_found: tuple[str, ...] = ()
    error: str | None = None
    detail: str = ""
    attempts: int = 0  # requests sent for it

    @property
    def ok(self) -> bool:
        return self.error is None


class RateLimiter:
    """At most `rate` starts a second: each acquire() takes the next slot, at least 1/rate after
    the one before, and sleeps until it comes (outside the lock, so threads queue in order)."""

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        margin: float = RATE_MARGIN,
    ):
        if rate <= 0:
            raise ValueError(f"rate must be positive, not {rate}")
        self.interval = (1.0 + margin) / rate
        self.clock, self.sleep = clock, sleep
        self._lock = threading.Lock()
        self._next = float("-inf")
        self._refused_until = float("-inf")

    def acquire(self) -> None:
        with self._lock:
            now = self.clock()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            self.sleep(slot - now)

    def hold(self, seconds: float) -> None:
        """No start before `seconds` from now (a server's Retry-After holds every thread)."""
        with self._lock:
            self._next = max(self._next, self.clock() + seconds)

    def refuse_for(self, seconds: float) -> None:
        """A server asked for a wait longer than a worker may stall: no request until then;
        the batches meant for that time fail at once instead (see `refusing`)."""
        with self._lock:
            self._refused_until = max(self._refused_until, self.clock() + seconds)

    def refusing(self) -> float:
        """Seconds left of a wait `refuse_for` set (0: none)."""
        with self._lock:
            return max(0.0, self._refused_until - self.clock())


_limiters: dict[tuple[str, str | None], RateLimiter] = {}
_limiters_lock = threading.Lock()


def shared_limiter(base_url: str, api_key: str | None) -> RateLimiter:
    """The process's limiter for one server and key: NCBI counts per key (or per address)."""
    key = (base_url, api_key)
    with _limiters_lock:
        if key not in _limiters:
            _limiters[key] = RateLimiter(RATE_WITH_KEY if api_key else RATE_WITHOUT_KEY)
        return _limiters[key]


class _Retryable(Exception):
    def __init__(self, reason: str, detail: str, retry_after: float | None = None):
        super().__init__(detail)
        self.reason, self.detail, self.retry_after = reason, detail, retry_after


class _Final(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def normalise_pmids(pmids: Iterable[str]) -> tuple[list[str], list[str]]:
    """(valid PMIDs deduplicated and sorted numerically, the invalid ones sorted)."""
    valid, invalid = set(), set()
    for raw in pmids:
        pmid, _ = parse_pmid(raw)
        if pmid is None:
            invalid.add(str(raw).strip())
        else:
            valid.add(pmid)
    return sorted(valid, key=int), sorted(invalid)


def split_records(xml: bytes) -> tuple[str, list[tuple[str, bytes]]]:
    """(root tag, [(PMID, the record element's bytes)]) of an efetch document.

    iterparse only cuts the document into records (memory: one record at a time); reading the
    fields is the MEDLINE parser's job. Raises etree.XMLSyntaxError on malformed XML.
    """
    records: list[tuple[str, bytes]] = []
    # Only the record elements' ends reach Python; lxml walks the rest in C.
    parser = etree.iterparse(
        io.BytesIO(xml),
        events=("end",),
        tag=RECORD_TAGS,
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
    )
    for _, element in parser:
        parent = element.getparent()
        if parent is None or parent.getparent() is not None:
            continue  # a record's tag, but not a child of the root
        pmid = element.findtext("MedlineCitation/PMID") or element.findtext("BookDocument/PMID")
        if pmid and pmid.strip():
            record = etree.tostring(element, encoding="UTF-8", xml_declaration=False)
            records.append((pmid.strip(), record.strip()))
        element.clear()
        while element.getprevious() is not None:
            del parent[0]
    return parser.root.tag, records


def assemble(records: Iterable[bytes]) -> bytes:
    """A `<PubmedArticleSet>` document of record elements."""
    parts = [DOCUMENT_HEAD]
    for record in records:
        parts.extend((record, b"\n"))
    parts.append(DOCUMENT_TAIL)
    return b"".join(parts)


class RecordCache:
    """One file per PMID (`articles/<last 2 digits>/<pmid>.xml`, the record element's bytes)
    and `not_found.txt` (PMIDs efetch returned no record for), under a local folder or a
    gs:// / s3:// prefix. Files are written aside and renamed: a reader never sees half of one.
    An unreadable or empty entry counts as missing, so it is fetched again."""

    NOT_FOUND = "not_found.txt"

    def __init__(self, root: str, s3=None):
        self.root = root
        self.s3 = s3  # a storage.S3Config for s3:// caches on a given endpoint
        self.remote = "://" in root
        self._lock = threading.Lock()
        self._not_found: set[str] | None = None
        self._folders: set[str] = set()

    def _path(self, *parts: str) -> str:
        if self.remote:
            return "/".join([self.root.rstrip("/"), *parts])
        return os.path.join(self.root, *parts)

    def _article_path(self, pmid: str) -> str:
        return self._path("articles", pmid[-2:].zfill(2), f"{pmid}.xml")

    def _read(self, path: str) -> bytes | None:
        try:
            if self.remote:
                from transforms import storage  # Beam's filesystems: only for remote caches

                s3 = self.s3 or storage.S3Config()
                if not storage.exists(path, s3):
                    return None
                return storage.read_bytes(path, s3)
            with open(path, "rb") as handle:
                return handle.read()
        except Exception:  # missing, unreadable, or storage's own errors: fetch it again
            return None

    def _write(self, path: str, data: bytes) -> None:
        if self.remote:
            from transforms import storage

            storage.atomic_write(path, [data], self.s3 or storage.S3Config())
            return
        folder, name = os.path.split(path)
        if folder not in self._folders:
            os.makedirs(folder, exist_ok=True)
            self._folders.add(folder)
        # Named for this process and thread: no two writers share an aside file.
        aside = os.path.join(folder, f".{name}.{os.getpid()}.{threading.get_ident()}.inprogress")
        try:
            with open(aside, "wb") as out:
                out.write(data)
            os.replace(aside, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(aside)
            raise

    def get(self, pmid: str) -> bytes | None:
        data = self._read(self._article_path(pmid))
        if not data or not data.lstrip().startswith(b"<Pubmed"):
            return None
        return data

    def put(self, pmid: str, record: bytes) -> None:
        self._write(self._article_path(pmid), record)

    def not_found(self) -> set[str]:
        with self._lock:
            if self._not_found is None:
                data = self._read(self._path(self.NOT_FOUND)) or b""
                self._not_found = {
                    line.strip() for line in data.decode("ascii", "replace").splitlines()
                }
                self._not_found.discard("")
            return set(self._not_found)

    def add_not_found(self, pmids: Iterable[str]) -> None:
        new = set(pmids)
        if not new:
            return
        self.not_found()  # loaded
        with self._lock:
            # Reread first: another client (or process) may have added some since.
            data = self._read(self._path(self.NOT_FOUND)) or b""
            on_disk = {line.strip() for line in data.decode("ascii", "replace").splitlines()}
            merged = (self._not_found | on_disk | new) - {""}
            if merged == on_disk:
                self._not_found = merged
                return
            body = "".join(f"{p}\n" for p in sorted(merged, key=int)).encode("ascii")
            self._write(self._path(self.NOT_FOUND), body)
            self._not_found = merged


def _retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """Seconds from a Retry-After header: a number, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - now())


class EutilsClient:
    """efetch PubMed records for PMIDs, in batches of at most 200, within NCBI's rate limit.

    `fetch(pmids)` yields Batches: first those the cache answers wholly, then one per request.
    Inject `clock` and `sleep` (both for the limiter and the backoff) to test without waiting.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        tool: str = "biomedica",
        email: str | None = None,
        cache_dir: str | RecordCache | None = None,
        timeout: float = 30.0,
        max_retries: int = 5,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
        seed: int = 0,
        batch_size: int = MAX_IDS,
        backoff_base: float = 1.0,
        backoff_cap: float = 60.0,
        limiter: RateLimiter | None = None,
        workers: int = 1,
    ):
        if not email or "@" not in email:
            raise ValueError("NCBI asks every E-utilities request to carry a contact email")
        if not tool:
            raise ValueError("NCBI asks every E-utilities request to name its tool")
        if not 1 <= batch_size <= MAX_IDS:
            raise ValueError(f"batch_size must be 1..{MAX_IDS}, not {batch_size}")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.api_key, self.tool, self.email = api_key, tool, email
        self.timeout, self.max_retries, self.batch_size = timeout, max_retries, batch_size
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self.sleep = sleep or time.sleep
        if limiter is None:
            if clock is None and sleep is None:
                limiter = shared_limiter(self.base_url, api_key)
            else:  # a test's own time: its own limiter
                rate = RATE_WITH_KEY if api_key else RATE_WITHOUT_KEY
                limiter = RateLimiter(rate, clock or time.monotonic, self.sleep)
        self.limiter = limiter
        if isinstance(cache_dir, str):
            cache_dir = RecordCache(cache_dir)
        self.cache = cache_dir
        self._random = random.Random(seed)
        self._random_lock = threading.Lock()
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.workers = workers
        self._cache_warned = False

    @property
    def efetch_url(self) -> str:
        return self.base_url + "efetch.fcgi"

    def form(self, pmids: list[str]) -> dict[str, str]:
        fields = {
            "db": "pubmed",
            "retmode": "xml",
            "id": ",".join(pmids),
            "tool": self.tool,
            "email": self.email,
        }
        if self.api_key:
            fields["api_key"] = self.api_key
        return fields

    def fetch(self, pmids: Iterable[str]) -> Iterator[Batch]:
        valid, invalid = normalise_pmids(pmids)
        if invalid:
            yield Batch(
                tuple(invalid),
                error="invalid_pmid",
                detail="not a PMID: " + ", ".join(invalid[:20]),
            )
        wanted = valid
        if self.cache is not None:
            not_found = self.cache.not_found()
            wanted = []
            group: list[tuple[str, bytes | None]] = []  # one batch's hits: bounded memory
            for pmid in valid:
                if pmid in not_found:
                    group.append((pmid, None))
                elif (record := self.cache.get(pmid)) is not None:
                    group.append((pmid, record))
                else:
                    wanted.append(pmid)
                if len(group) == self.batch_size:
                    yield _cached_batch(group)
                    group = []
            if group:
                yield _cached_batch(group)
        groups = [
            wanted[start : start + self.batch_size]
            for start in range(0, len(wanted), self.batch_size)
        ]
        if self.workers == 1 or len(groups) < 2:
            for group in groups:
                yield self.fetch_batch(group)
            return
        # A request's transfer and cache writes overlap the next ones' waits for their slot; the
        # limiter still spaces the starts. At most 2 x workers batches are held at once, and
        # they come out in order.
        with ThreadPoolExecutor(self.workers, thread_name_prefix="efetch") as pool:
            pending: collections.deque = collections.deque()
            for group in groups:
                if len(pending) >= 2 * self.workers:
                    yield pending.popleft().result()
                pending.append(pool.submit(self.fetch_batch, group))
            while pending:
                yield pending.popleft().result()

    def fetch_batch(self, pmids: list[str]) -> Batch:
        """One efetch POST for at most batch_size PMIDs, retried; the cache is filled from it."""
        if len(pmids) > self.batch_size:
            raise ValueError(f"{len(pmids)} PMIDs in one batch > {self.batch_size}")
        asked = tuple(pmids)
        body = urllib.parse.urlencode(self.form(list(pmids))).encode("ascii")
        attempt = 0
        while True:
            wait = self.limiter.refusing()
            if wait > 0:
                detail = f"not asked: the server asked to wait {wait:.0f} s more (Retry-After)"
                return self._failed(asked, "http_429", detail, attempt)
            attempt += 1
            self.limiter.acquire()
            try:
                xml = self._post(body)
                root_tag, records = split_records(xml)
                if root_tag == "eFetchResult":  # efetch's own error document
                    message = _efetch_error(xml)
                    raise _Final("efetch_error", message)
                if root_tag != "PubmedArticleSet":
                    raise _Retryable("bad_response", f"root element <{root_tag}>")
            except etree.XMLSyntaxError as error:
                failure = _Retryable("bad_response", f"malformed XML: {error}")
            except _Retryable as error:
                failure = error
            except _Final as error:
                return self._failed(asked, error.reason, error.detail, attempt)
            else:
                returned = {pmid for pmid, _ in records}
                not_found = tuple(p for p in asked if p not in returned)
                self._remember(records, not_found)
                return Batch(asked, xml=xml, not_found=not_found, attempts=attempt)
            if attempt > self.max_retries:
                detail = f"{failure.detail} (after {attempt} attempts)"
                return self._failed(asked, failure.reason, detail, attempt)
            delay = self._backoff(attempt)
            if failure.retry_after is not None:
                if failure.retry_after > MAX_RETRY_AFTER:
                    detail = f"{failure.detail}; Retry-After {failure.retry_after:.0f} s too long"
                    self.limiter.refuse_for(failure.retry_after)
                    return self._failed(asked, failure.reason, detail, attempt)
                delay = max(delay, failure.retry_after)
                self.limiter.hold(failure.retry_after)
            self.sleep(delay)

    def _remember(self, records: list[tuple[str, bytes]], not_found: tuple[str, ...]) -> None:
        """Fill the cache; one that cannot be written costs reruns, not this run."""
        if self.cache is None:
            return
        try:
            for pmid, record in records:
                self.cache.put(pmid, record)
            self.cache.add_not_found(not_found)
        except Exception as error:  # noqa: BLE001 (any storage failure)
            if not self._cache_warned:
                self._cache_warned = True
                root = self.cache.root
                log.warning("the E-utilities cache %s cannot be written: %s", root, error)

    def _failed(self, asked: tuple, reason: str, detail: str, attempts: int) -> Batch:
        """A failed batch; its detail (server text included) never carries the API key."""
        if self.api_key:
            detail = detail.replace(self.api_key, "<api_key>")
        return Batch(asked, error=reason, detail=detail, attempts=attempts)

    def _backoff(self, attempt: int) -> float:
        """Exponential, capped, with seeded jitter (0.5x to 1.5x) so clients do not align."""
        with self._random_lock:
            jitter = 0.5 + self._random.random()
        return min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1)) * jitter

    def _post(self, body: bytes) -> bytes:
        request = urllib.request.Request(
            self.efetch_url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept-Encoding": "gzip",
                "User-Agent": f"{self.tool} ({self.email})",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                data = response.read(MAX_RESPONSE_BYTES + 1)
                encoding = response.headers.get("Content-Encoding", "")
        except urllib.error.HTTPError as error:
            status = error.code
            text = _snippet(error)
            if status == 429:
                after = _retry_after(error.headers.get("Retry-After"))
                raise _Retryable("http_429", f"HTTP 429: {text}", after) from None
            if status >= 500:
                raise _Retryable(f"http_{status}", f"HTTP {status}: {text}") from None
            raise _Final(f"http_{status}", f"HTTP {status}: {text}") from None
        except TimeoutError as error:
            raise _Retryable("timeout", f"no answer within {self.timeout} s: {error}") from None
        except urllib.error.URLError as error:
            if isinstance(error.reason, TimeoutError):
                raise _Retryable("timeout", f"no answer within {self.timeout} s") from None
            raise _Retryable("connection", f"connection failed: {error.reason}") from None
        except (ConnectionError, OSError) as error:  # reset mid-body, and the like
            raise _Retryable("connection", f"connection failed: {error}") from None
        if len(data) > MAX_RESPONSE_BYTES:
            raise _Final("too_large", f"response over {MAX_RESPONSE_BYTES} bytes")
        if encoding.lower() == "gzip":
            data = _gunzip(data, MAX_RESPONSE_BYTES)
        return data


def _gunzip(data: bytes, limit: int) -> bytes:
    """A gzip body inflated to at most `limit` bytes: a small body may inflate to gigabytes."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as error:
        raise _Retryable("bad_response", f"bad gzip body: {error}") from None
    if len(out) > limit:
        raise _Final("too_large", f"response inflates to over {limit} bytes")
    if not inflater.eof:
        raise _Retryable("bad_response", "bad gzip body: truncated")
    return out


def _cached_batch(group: list[tuple[str, bytes | None]]) -> Batch:
    return Batch(
        tuple(p for p, _ in group),
        xml=assemble(r for _, r in group if r is not None),
        from_cache=True,
        not_found=tuple(p for p, r in group if r is None),
    )


def _snippet(error: urllib.error.HTTPError) -> str:
    try:
        text = error.read(300).decode("utf-8", "replace")
    except Exception:
        text = ""
    return " ".join(text.split())[:200] or (error.reason or "")


def _efetch_error(xml: bytes) -> str:
    try:
        root = etree.fromstring(xml, etree.XMLParser(resolve_entities=False, no_network=True))
        return " ".join((root.findtext("ERROR") or "unspecified").split())[:200]
    except etree.XMLSyntaxError:
        return "unspecified"
