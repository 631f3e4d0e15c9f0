"""Benchmark: shards streamed through `biomedica serve`'s shard route against read from disk.

    python bench/shard_streaming.py [--dataset DIR] [--shards 8] [--shard_mb 40] [--runs 5]

Without --dataset it writes one: tars of synthetic samples (`transforms/shard/
webdataset_tar.py`, the shard job's own writer; 150-250 KB random "jpg" payloads, never
decoded) and a manifest, a few hundred MB in all. A real uvicorn serving the streaming
router runs in a child process on 127.0.0.1; this process reads the same shards both ways,
in the same run, alternated, best of --runs:

- webdataset (what a trainer consumes, and the issue's figure): `webdataset.WebDataset(urls)`
  iterated sample by sample over the local paths (`webdataset_disk`) and over the server's
  http URLs, read by transforms/shard/http_stream.py (`webdataset_server`, what the README
  and examples/train_openclip_streaming.py use) and by webdataset's own `curl` pipe
  (`webdataset_server_curl`, the fallback);
- webdataset_pipe_disk: the local files through webdataset's pipe reader (`pipe:cat F`),
  the path curl's bytes take: what that reader costs with no server at all;
- raw bytes: each shard read whole in 1 MiB reads, by HTTP GET and from the file, warm (the
  files in the page cache, for both: the server reads them too) and cold (evicted with
  posix_fadvise before each read, either way: both read the disk).

Each run also records CPU seconds per GB moved: this process and its children (the reader,
curl) and the server process (from /proc), which do not depend on what else the machine
runs, as throughput on a shared machine does; and the load average before and after.

Run by hand; never part of the test suite.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from transforms.shard.webdataset_tar import build_shard  # noqa: E402

CHUNK = 1 << 20


def make_app():
    """The app the child uvicorn serves (`--factory`): the streaming router alone."""
    from fastapi import FastAPI

    from server import errors
    from server.dataset import DatasetFiles
    from server.shards import router

    files = DatasetFiles(os.environ["BENCH_DATASET"])
    app = FastAPI()
    errors.install(app)
    app.include_router(router(files, lambda key: None))
    return app


def write_dataset(root: Path, shards: int, shard_mb: int) -> None:
    """Synthetic shards and the manifest the server needs (no Parquet: not read here)."""
    rng = __import__("random").Random(0)
    entries = []
    for index in range(shards):
        samples, size, n = [], 0, 0
        while size < shard_mb << 20:
            image = b"\xff\xd8" + rng.randbytes(rng.randint(150_000, 250_000))
            meta = json.dumps({"key": f"s{index:03d}_{n:05d}", "caption": "x" * 300}).encode()
            samples.append((f"s{index:03d}_{n:05d}", image, meta, b"a caption " * 30))
            size += len(image) + 2048
            n += 1
        data, _ = build_shard(samples)
        path = root / "webdataset" / "commercial" / f"{index:06d}.tar"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        entries.append(
            {
                "group": "commercial",
                "index": index,
                "path": f"webdataset/commercial/{index:06d}.tar",
                "parquet_path": f"parquet/commercial/{index:06d}.parquet",
                "samples": n,
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )
    total = {
        "samples": sum(e["samples"] for e in entries),
        "bytes": sum(e["bytes"] for e in entries),
    }
    manifest = {"shards": entries, "groups": {"commercial": {**total, "shards": shards}}}
    (root / "manifest.json").write_text(json.dumps({**manifest, "totals": total}))


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(dataset: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "bench.shard_streaming:make_app", "--factory"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    env = {**os.environ, "BENCH_DATASET": str(dataset), "PYTHONPATH": str(REPO)}
    server = subprocess.Popen(command, cwd=REPO, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("HEAD", "/shards/commercial/000000.tar")
            if conn.getresponse().status == 200:
                return server, port
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit("the server did not start")


def read_webdataset(urls: list[str], opener: str = "curl") -> tuple[int, int]:
    """Samples and their bytes, as a trainer gets them; http through `opener` (curl, python)."""
    import webdataset

    from transforms.shard.http_stream import use_http_stream

    use_http_stream(opener == "python")
    samples = size = 0
    for sample in webdataset.WebDataset(urls, shardshuffle=False):
        samples += 1
        size += len(sample["jpg"]) + len(sample["json"]) + len(sample["txt"])
    return samples, size


def read_files(paths: list[str]) -> tuple[int, int]:
    size = 0
    for path in paths:
        with open(path, "rb", buffering=0) as handle:
            while data := handle.read(CHUNK):
                size += len(data)
    return len(paths), size


def read_http(port: int, paths: list[str]) -> tuple[int, int]:
    size = 0
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for path in paths:
        conn.request("GET", path)
        response = conn.getresponse()
        assert response.status == 200, response.status
        while data := response.read(CHUNK):
            size += len(data)
    conn.close()
    return len(paths), size


def evict(paths: list[str]) -> None:
    """Drop the files from the page cache, so the next read (either way) comes from disk."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def cold(paths: list[str], read):
    def run():
        evict(paths)
        return read()

    return run


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of this process and its waited-for children, or of `pid`."""
    if pid is None:
        own, children = (
            resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
        )
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def timed(read, server_pid: int) -> dict:
    reader_cpu, server_cpu = cpu_seconds(), cpu_seconds(server_pid)
    started = time.perf_counter()
    items, size = read()
    seconds = time.perf_counter() - started
    gb = size / 1e9
    return {
        "s": round(seconds, 3),
        "items": items,
        "mb_per_s": round(size / seconds / 1e6, 1),
        "reader_cpu_s_per_gb": round((cpu_seconds() - reader_cpu) / gb, 2),
        "server_cpu_s_per_gb": round((cpu_seconds(server_pid) - server_cpu) / gb, 2),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", help="a dataset folder (default: write a synthetic one)")
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--shard_mb", type=int, default=40)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    scratch = None
    if args.dataset:
        dataset = Path(args.dataset)
    else:
        scratch = tempfile.TemporaryDirectory(prefix="bench-streaming-")
        dataset = Path(scratch.name)
        write_dataset(dataset, args.shards, args.shard_mb)
    manifest = json.loads((dataset / "manifest.json").read_text())
    names = [e["path"].removeprefix("webdataset/") for e in manifest["shards"]]
    local = [str(dataset / e["path"]) for e in manifest["shards"]]
    server, port = start_server(dataset)
    try:
        urls = [f"http://127.0.0.1:{port}/shards/{n}" for n in names]
        routes = [f"/shards/{n}" for n in names]
        ways = {
            "webdataset_disk": lambda: read_webdataset(local),
            "webdataset_server": lambda: read_webdataset(urls, "python"),
            "webdataset_server_curl": lambda: read_webdataset(urls, "curl"),
            # The same files through webdataset's pipe reader (what curl feeds): its own cost.
            "webdataset_pipe_disk": lambda: read_webdataset([f"pipe:cat {p}" for p in local]),
            "bytes_disk": lambda: read_files(local),
            "bytes_server": lambda: read_http(port, routes),
            "bytes_disk_cold": cold(local, lambda: read_files(local)),
            "bytes_server_cold": cold(local, lambda: read_http(port, routes)),
        }
        read_files(local)  # into the page cache, for both
        load_before = os.getloadavg()
        runs: dict[str, list[dict]] = {name: [] for name in ways}
        for _ in range(args.runs):
            for name, read in ways.items():  # alternated: disk, server, disk, server
                runs[name].append(timed(read, server.pid))
        load_after = os.getloadavg()
    finally:
        server.terminate()
        server.wait(10)
    best = {name: max(r, key=lambda x: x["mb_per_s"]) for name, r in runs.items()}
    result = {
        "dataset": {
            "shards": len(names),
            "samples": sum(e["samples"] for e in manifest["shards"]),
            "mb": round(sum(e["bytes"] for e in manifest["shards"]) / 1e6, 1),
        },
        "runs": args.runs,
        "cores": os.cpu_count(),
        "load_average_1_5_15": {"before": load_before, "after": load_after},
        "best": best,
        "mb_per_s_of_runs": {n: [x["mb_per_s"] for x in r] for n, r in runs.items()},
        "median_cpu_s_per_gb": {
            n: {
                side: statistics.median(x[f"{side}_cpu_s_per_gb"] for x in r)
                for side in ("reader", "server")
            }
            for n, r in runs.items()
        },
    }
    median = {n: statistics.median(x["mb_per_s"] for x in r) for n, r in runs.items()}
    result["median_ratio_webdataset_server_to_webdataset_disk"] = round(
        median["webdataset_server"] / median["webdataset_disk"], 3
    )
    for server_way, disk_way in [
        ("webdataset_server", "webdataset_disk"),  # the ratio (>= 0.8)
        ("webdataset_server_curl", "webdataset_disk"),
        ("webdataset_server_curl", "webdataset_pipe_disk"),
        ("bytes_server", "bytes_disk"),
        ("bytes_server_cold", "bytes_disk_cold"),
    ]:
        ratio = best[server_way]["mb_per_s"] / best[disk_way]["mb_per_s"]
        result[f"ratio_{server_way}_to_{disk_way}"] = round(ratio, 3)
    print(json.dumps(result, indent=1))
    if scratch:
        scratch.cleanup()
    return result


if __name__ == "__main__":
    main()
