"""The E-utilities client against a real local HTTP server serving real MEDLINE records."""

from __future__ import annotations

import threading

import pytest
from eutils_server import EutilsServer, load_articles
from lxml import etree

from transforms.pubmed.eutils import (
    EutilsClient,
    RateLimiter,
    RecordCache,
    normalise_pmids,
    split_records,
)

EMAIL = "curator@example.org"


class FakeTime:
    """A clock that moves only when slept on: retries and the rate limit cost no real time."""

    def __init__(self):
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture(scope="module")
def articles() -> dict[str, bytes]:
    return load_articles()


@pytest.fixture
def server(articles):
    with EutilsServer(articles) as running:
        yield running


def client_of(server, fake: FakeTime | None = None, **options) -> EutilsClient:
    fake = fake or FakeTime()
    options.setdefault("email", EMAIL)
    return EutilsClient(base_url=server.base_url, clock=fake.clock, sleep=fake.sleep, **options)


def pmids_in(xml: bytes) -> list[str]:
    root = etree.fromstring(xml, etree.XMLParser(no_network=True))
    assert root.tag == "PubmedArticleSet"
    return [element.findtext("MedlineCitation/PMID") for element in root]


def test_the_slice_holds_real_medline_records(articles):
    assert sorted(articles) == ["399296", "399297", "399306", "399331"]
    record = etree.fromstring(articles["399297"])
    assert record.find("MedlineCitation/MeshHeadingList/MeshHeading/DescriptorName") is not None
    assert record.find("MedlineCitation/ChemicalList/Chemical/NameOfSubstance") is not None


def test_batches_of_at_most_200_posted_with_tool_and_email(server, articles):
    real = sorted(articles)
    unknown = [str(n) for n in range(1, 451)]
    asked = unknown + real + real[:2] + [" 399296 "]  # duplicates and spaces collapse
    batches = list(client_of(server).fetch(asked))
    seen = server.efetch_requests()
    assert server.problems == []
    assert [len(s.pmids) for s in seen] == [200, 200, 54]
    assert all(s.method == "POST" and s.fields["tool"] == "biomedica" for s in seen)
    assert all(s.fields["email"] == EMAIL and "api_key" not in s.fields for s in seen)
    assert sorted(list(b.pmids) for b in batches) == sorted(s.pmids for s in seen)
    everything = [p for b in batches for p in b.pmids]
    assert everything == sorted(set(unknown + real), key=int)  # sorted numerically, once each
    assert all(b.ok and not b.from_cache and b.attempts == 1 for b in batches)
    assert pmids_in(batches[-1].xml) == real
    assert [p for b in batches for p in b.not_found] == unknown


def test_api_key_sent_and_rate_ten(server, articles):
    client = client_of(server, api_key="k3y")
    assert all(b.ok for b in client.fetch(sorted(articles)))
    assert server.requests[0].fields["api_key"] == "k3y"
    assert client.limiter.interval < 0.11
    assert client_of(server).limiter.interval > 0.33


def test_email_required():
    with pytest.raises(ValueError, match="email"):
        EutilsClient(email=None)


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_429_and_5xx_retried_then_succeed(server, articles, status):
    fake = FakeTime()
    server.fail_next(status, 2, retry_after=7 if status == 429 else None)
    [batch] = client_of(server, fake).fetch(sorted(articles))
    assert batch.ok and batch.attempts == 3
    assert [s.status for s in server.requests] == [status, status, 200]
    assert pmids_in(batch.xml) == sorted(articles)
    backoffs = [s for s in fake.sleeps if s > 0.4]  # the limiter's own waits are ~0.34 s
    assert len(backoffs) == 2
    if status == 429:  # Retry-After honoured
        assert min(backoffs) >= 7
    else:  # exponential: about 1 s, then about 2 s (jitter 0.5x..1.5x)
        assert 0.5 <= backoffs[0] <= 1.5 and 1.0 <= backoffs[1] <= 3.0


def test_retry_after_holds_the_rate_limiter(server, articles):
    fake = FakeTime()
    server.fail_next(429, 1, retry_after=30)
    client = client_of(server, fake)
    start = fake.now
    [batch] = client.fetch(sorted(articles))
    assert batch.ok
    assert fake.now - start >= 30
    assert client.limiter._next >= start + 30


def test_persistent_500_is_a_failed_batch_with_the_reason(server, articles):
    server.fail_next(500, 100)
    [batch] = client_of(server, max_retries=3).fetch(sorted(articles))
    assert not batch.ok and batch.xml is None
    assert batch.error == "http_500"
    assert "simulated failure" in batch.detail and "after 4 attempts" in batch.detail
    assert batch.attempts == 4 and len(server.requests) == 4
    assert batch.pmids == tuple(sorted(articles))


def test_timeout_retried(server, articles):
    server.delay_next(1.5)
    [batch] = client_of(server, timeout=0.3).fetch(sorted(articles))
    assert batch.ok and batch.attempts == 2
    assert pmids_in(batch.xml) == sorted(articles)


def test_persistent_timeout_fails_with_timeout(server, articles):
    server.delay_next(1.0, 2)
    [batch] = client_of(server, timeout=0.2, max_retries=1).fetch(["399296"])
    assert batch.error == "timeout" and batch.attempts == 2


def test_connection_refused_retried_then_fails(articles):
    from conftest import free_port

    dead_url = f"http://127.0.0.1:{free_port()}/entrez/eutils/"
    fake = FakeTime()
    client = EutilsClient(dead_url, email=EMAIL, clock=fake.clock, sleep=fake.sleep, max_retries=2)
    [batch] = client.fetch(["399296"])
    assert batch.error == "connection" and batch.attempts == 3


def test_400_not_retried(server, articles):
    server.fail_next(400, 5)
    [batch] = client_of(server).fetch(sorted(articles))
    assert batch.error == "http_400" and batch.attempts == 1
    assert len(server.requests) == 1


def test_invalid_pmids_are_a_failed_batch_without_a_request(server):
    batches = list(client_of(server).fetch(["PMC123", "", "399296"]))
    assert batches[0].error == "invalid_pmid" and batches[0].pmids == ("", "PMC123")
    assert batches[1].ok and batches[1].pmids == ("399296",)
    assert [s.pmids for s in server.requests] == [["399296"]]


def test_cache_second_run_asks_only_for_what_is_missing(server, articles, tmp_path):
    real = sorted(articles)
    cache = str(tmp_path / "cache")
    first = list(client_of(server, cache_dir=cache).fetch(real[:3] + ["11", "12"]))
    assert [b.from_cache for b in first] == [False]
    assert first[0].not_found == ("11", "12")
    assert sorted((tmp_path / "cache" / "articles").rglob("*.xml")) != []
    assert (tmp_path / "cache" / "not_found.txt").read_text() == "11\n12\n"
    assert not list((tmp_path / "cache").rglob("*.inprogress"))

    server.requests.clear()
    second = list(client_of(server, cache_dir=cache).fetch(real + ["11", "12", "13"]))
    assert [s.pmids for s in server.requests] == [["13", real[3]]]  # only what is missing
    cached, fetched = second
    assert cached.from_cache and cached.ok
    assert cached.pmids == ("11", "12", *real[:3]) and cached.not_found == ("11", "12")
    assert pmids_in(cached.xml) == real[:3]
    # The cached records are the server's records, whole.
    for element in etree.fromstring(cached.xml):
        pmid = element.findtext("MedlineCitation/PMID")
        assert etree.tostring(element).strip() == etree.tostring(etree.fromstring(articles[pmid]))
    assert not fetched.from_cache and fetched.not_found == ("13",)
    assert pmids_in(fetched.xml) == [real[3]]

    server.requests.clear()
    third = list(client_of(server, cache_dir=cache).fetch(real + ["11", "12", "13"]))
    assert server.requests == []  # everything answered, found or not, from the cache
    assert [b.from_cache for b in third] == [True]
    assert third[0].not_found == ("11", "12", "13")


def test_cache_in_an_object_store(server, articles, monkeypatch):
    from conftest import moto_s3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with moto_s3() as (endpoint, owner):
        owner.create_bucket(Bucket="cache")
        from transforms.storage import S3Config

        s3 = S3Config(endpoint_url=endpoint, anonymous=False)
        for run in range(2):
            server.requests.clear()
            cache = RecordCache("s3://cache/eutils", s3)
            batches = list(client_of(server, cache_dir=cache).fetch(sorted(articles) + ["7"]))
            assert all(b.ok for b in batches)
            assert [p for b in batches for p in b.not_found] == ["7"]
            assert len(server.requests) == (1 if run == 0 else 0)
            assert [b.from_cache for b in batches] == [run == 1]
        keys = [o["Key"] for o in owner.list_objects_v2(Bucket="cache")["Contents"]]
        assert "eutils/not_found.txt" in keys and len(keys) == 5


def test_failed_batch_caches_nothing(server, articles, tmp_path):
    server.fail_next(500, 10)
    cache = str(tmp_path / "cache")
    [batch] = client_of(server, cache_dir=cache, max_retries=1).fetch(sorted(articles))
    assert not batch.ok
    assert not (tmp_path / "cache" / "not_found.txt").exists()
    assert not list((tmp_path / "cache").rglob("*.xml"))


def test_a_damaged_cache_entry_is_fetched_again(server, articles, tmp_path):
    cache = tmp_path / "cache"
    list(client_of(server, cache_dir=str(cache)).fetch(["399296"]))
    [entry] = cache.rglob("399296.xml")
    entry.write_bytes(b"")
    server.requests.clear()
    [batch] = client_of(server, cache_dir=str(cache)).fetch(["399296"])
    assert not batch.from_cache and [s.pmids for s in server.requests] == [["399296"]]


def test_split_records_and_efetch_error_document():
    root, records = split_records(
        b"<PubmedArticleSet><PubmedArticle><MedlineCitation><PMID Version='1'>5</PMID>"
        b"</MedlineCitation></PubmedArticle><PubmedBookArticle><BookDocument><PMID>6</PMID>"
        b"</BookDocument></PubmedBookArticle></PubmedArticleSet>"
    )
    assert root == "PubmedArticleSet" and [p for p, _ in records] == ["5", "6"]
    assert records[1][1].startswith(b"<PubmedBookArticle>")
    root, records = split_records(b"<eFetchResult><ERROR>Empty id list</ERROR></eFetchResult>")
    assert root == "eFetchResult" and records == []


def test_normalise_pmids():
    assert normalise_pmids(["10", "9", "009", " 10", "x", "0"]) == (["9", "10"], ["0", "x"])


def test_rate_limiter_spaces_starts_across_threads():
    fake = FakeTime()
    lock = threading.Lock()
    limiter = RateLimiter(3, fake.clock, lambda s: None)
    slots = []

    def take():
        for _ in range(10):
            with lock:  # record the slot the acquire gave: the time it would wake at
                before = limiter._next
                limiter.acquire()
                slots.append(max(before, fake.now))

    threads = [threading.Thread(target=take) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    slots.sort()
    assert len(slots) == 30
    assert all(b - a >= 1 / 3 for a, b in zip(slots[1:], slots[2:], strict=False))


@pytest.mark.parametrize("api_key,limit", [(None, 3), ("k3y", 10)])
def test_real_time_rate_never_exceeded_even_with_retries(articles, api_key, limit):
    """10 batches from two threads with two clients (one process limiter), with 500s now and
    then: the server never sees more than the limit in any one-second window."""
    with EutilsServer(articles) as server:
        server.fail_sometimes(500, 0.3, seed=1)
        pmids = [str(n) for n in range(1, 2001)]
        results = []

        def run(part):
            client = EutilsClient(
                server.base_url, api_key=api_key, email=EMAIL, backoff_base=0.01, max_retries=8
            )
            results.extend(client.fetch(part))

        threads = [threading.Thread(target=run, args=(pmids[i::2],)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(results) == 10 and all(b.ok for b in results)
    assert any(s.status == 500 for s in server.requests)  # retries happened
    assert len(server.requests) > 10
    assert server.max_in_window(1.0) <= limit
    assert server.problems == []


class _Hostile:
    """A one-handler HTTP server on 127.0.0.1 answering every POST with `answer(body)`."""

    def __init__(self, answer):
        import http.server

        from conftest import free_port

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status, headers, data = answer(body)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.port = free_port()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.base_url = f"http://127.0.0.1:{self.port}/"

    def __enter__(self):
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,))
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def test_a_gzip_bomb_answer_is_refused_in_bounded_memory(monkeypatch):
    import gzip

    from transforms.pubmed import eutils

    monkeypatch.setattr(eutils, "MAX_RESPONSE_BYTES", 1 << 20)
    bomb = gzip.compress(b"<PubmedArticleSet>" + b" " * (64 << 20), 9)
    assert len(bomb) < 1 << 20  # passes the bound on what is read, not on what it inflates to
    with _Hostile(lambda body: (200, {"Content-Encoding": "gzip"}, bomb)) as server:
        fake = FakeTime()
        client = EutilsClient(
            base_url=server.base_url, email=EMAIL, clock=fake.clock, sleep=fake.sleep
        )
        (batch,) = client.fetch(["399296"])
    assert batch.error == "too_large" and "inflates" in batch.detail


def test_the_api_key_never_reaches_a_failed_batch():
    key = "SECRETKEY0123456789"

    def echo(body):  # an error page that quotes the request, key and all
        return 400, {"Content-Type": "text/plain"}, b"bad request: " + body

    with _Hostile(echo) as server:
        fake = FakeTime()
        client = EutilsClient(
            base_url=server.base_url,
            email=EMAIL,
            api_key=key,
            clock=fake.clock,
            sleep=fake.sleep,
        )
        (batch,) = client.fetch(["399296"])
    assert batch.error == "http_400" and "bad request" in batch.detail
    assert key not in batch.detail and "<api_key>" in batch.detail


def test_a_retry_after_too_long_to_wait_fails_the_later_batches_unasked(server, articles):
    fake = FakeTime()
    server.fail_next(429, 1, retry_after=3600)
    client = client_of(server, fake, batch_size=1)
    batches = list(client.fetch(sorted(articles)))
    assert [b.error for b in batches] == ["http_429"] * len(articles)
    assert "too long" in batches[0].detail and "not asked" in batches[1].detail
    assert len(server.requests) == 1  # the server's wish kept: nothing more was sent
    fake.now += 3601
    [later] = client.fetch(sorted(articles)[:1])
    assert later.ok and len(server.requests) == 2


def test_an_unwritable_cache_costs_reruns_not_this_run(server, articles, tmp_path, caplog):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    client = client_of(server, cache_dir=str(blocker / "cache"))
    [batch] = client.fetch(sorted(articles))
    assert batch.ok and not batch.not_found
    assert "cannot be written" in caplog.text
