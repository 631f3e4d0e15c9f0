"""Benchmark: samples per second per core written into shards, against a plain tar.

    python bench/shard_throughput.py --input bench/results/out-1000

--input is an extract output (run bench/extract_throughput.py first). The shard job runs
on the in-process runner with one worker in a child process; its samples per CPU second are
compared with the limit: this process writing the same bytes (each sample's jpg, json and
txt, built beforehand and held in memory) into one plain tar file with `tarfile`, one core,
best of three. A second reference adds what the format asks for beyond a tar, building each
sample's JSON and hashing the shards with sha256, to show how far the first limit is
reachable at all.
Run by hand; never part of the test suite.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pyarrow.parquet as pq  # noqa: E402

from bench.child import run_pipeline  # noqa: E402
from transforms.shard_samples import sample_json, sanitize  # noqa: E402


def _run_shard(source: Path, output: Path, per_shard: int) -> dict:
    report, measured = run_pipeline(
        "shard", output, "--input", str(source), "--samples_per_shard", str(per_shard)
    )
    samples = report["stages"]["shard"]["out"]
    return {
        **measured,
        "samples": samples,
        "bytes": sum(p.stat().st_size for p in output.glob("webdataset/*/*.tar")),
        "samples_per_cpu_s": round(samples / measured["cpu_s"], 1),
    }


def _plain_tar(source: Path, target: Path) -> dict:
    rows = []
    for part in sorted((source / "extract" / "figures").glob("*.parquet")):
        for batch in pq.ParquetFile(part, pre_buffer=False).iter_batches(batch_size=256):
            rows.extend(sanitize(row) for row in batch.to_pylist())
    started = time.process_time()
    samples = [(r["key"], r["image"], sample_json(r), r["caption"].encode()) for r in rows]
    json_cpu = time.process_time() - started
    # Best of three: writing 1+ GB goes at the page cache's pace, which varies run to run.
    cpu = float("inf")
    for _ in range(3):
        started = time.process_time()
        with tarfile.open(target, "w") as tar:
            for key, *payloads in samples:
                for ext, data in zip(("jpg", "json", "txt"), payloads, strict=True):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, fileobj=io.BytesIO(data))
        cpu = min(cpu, time.process_time() - started)
    # What the format asks for beyond a tar: each sample's JSON, each shard's sha256.
    started = time.process_time()
    with open(target, "rb") as handle:
        digest = hashlib.sha256()
        while chunk := handle.read(1 << 24):
            digest.update(chunk)
    hash_cpu = time.process_time() - started
    required = cpu + json_cpu + hash_cpu
    return {
        "samples": len(samples),
        "bytes": target.stat().st_size,
        "cpu_s": round(cpu, 2),
        "samples_per_cpu_s": round(len(samples) / cpu, 1),
        "json_cpu_s": round(json_cpu, 2),
        "sha256_cpu_s": round(hash_cpu, 2),
        "tar_json_sha256_samples_per_cpu_s": round(len(samples) / required, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", default=str(REPO / "bench" / "results" / "out-1000"))
    parser.add_argument("--samples_per_shard", type=int, default=1000)
    args = parser.parse_args()
    source = Path(args.input)
    work = source.parent / f"{source.name}-dataset"
    result = {"input": str(source), "samples_per_shard": args.samples_per_shard}
    result["shard"] = _run_shard(source, work, args.samples_per_shard)
    result["plain_tar_limit"] = _plain_tar(source, source.parent / f"{source.name}-plain.tar")
    rate, limit = result["shard"]["samples_per_cpu_s"], result["plain_tar_limit"]
    result["fraction_of_limit"] = round(rate / limit["samples_per_cpu_s"], 3)
    result["fraction_of_tar_json_sha256"] = round(
        rate / limit["tar_json_sha256_samples_per_cpu_s"], 3
    )
    print(json.dumps(result, indent=2))
    (source.parent / "shard_throughput.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
