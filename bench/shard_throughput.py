"""Benchmark: samples per second per core written into shards, against a plain tar.

    python bench/shard_throughput.py --input bench/results/out-1000 bench/results/out-5000

Each --input is an extract output (run bench/extract_throughput.py first). The shard job
runs on the in-process runner with one worker in a child process (its start included); its
samples per CPU second are compared with references measured in this process, one core,
best of three:

- plain-tar limit: writing the same bytes (each sample's jpg, json and txt, built
  beforehand and held in memory) into one plain tar with `tarfile`;
- plain-tar job: reading the same extract Parquet, building each sample's members and
  writing them into one plain tar with `tarfile`: the whole job with nothing else done
  (no order, no plan, no Parquet index, no hashing, no runner).

It also times the parts that any shard writer pays beside the tar write (reading the input,
building the JSON, the sha256 of the shards that the manifest lists) to show which fraction
of the first limit is reachable at all; and, given two inputs, the marginal rate of the
shard job (extra samples over extra CPU seconds), which leaves out its fixed start.
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


def _read_rows(source: Path) -> list[dict]:
    rows = []
    for part in sorted((source / "extract" / "figures").glob("*.parquet")):
        for batch in pq.ParquetFile(part, pre_buffer=False).iter_batches(batch_size=256):
            rows.extend(sanitize(row) for row in batch.to_pylist())
    return rows


def _write_tar(target: Path, samples) -> None:
    with tarfile.open(target, "w") as tar:
        for key, *payloads in samples:
            for ext, data in zip(("jpg", "json", "txt"), payloads, strict=True):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, fileobj=io.BytesIO(data))


def _best_of_three(step) -> float:
    # Writing 1+ GB goes at the page cache's pace, which varies run to run.
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        step()
        best = min(best, time.process_time() - started)
    return best


def _references(source: Path, target: Path) -> dict:
    def members(rows):
        return [(r["key"], r["image"], sample_json(r), r["caption"].encode()) for r in rows]

    read_cpu = _best_of_three(lambda: _read_rows(source))
    rows = _read_rows(source)
    json_cpu = _best_of_three(lambda: members(rows))
    samples = members(rows)
    write_cpu = _best_of_three(lambda: _write_tar(target, samples))
    job_cpu = _best_of_three(lambda: _write_tar(target, members(_read_rows(source))))

    def sha256():
        with open(target, "rb") as handle:
            digest = hashlib.sha256()
            while chunk := handle.read(1 << 24):
                digest.update(chunk)

    hash_cpu = _best_of_three(sha256)
    n = sum(1 for _ in tarfile.open(target)) // 3
    # What any shard writer pays beside the tar write: read, JSON, sha256 for the manifest.
    ceiling = write_cpu / (write_cpu + read_cpu + json_cpu + hash_cpu)
    return {
        "samples": n,
        "bytes": target.stat().st_size,
        "plain_tar_limit": {
            "cpu_s": round(write_cpu, 2),
            "samples_per_cpu_s": round(n / write_cpu, 1),
        },
        "plain_tar_job": {"cpu_s": round(job_cpu, 2), "samples_per_cpu_s": round(n / job_cpu, 1)},
        "parts_cpu_s": {
            "read_and_check_parquet": round(read_cpu, 2),
            "sample_json": round(json_cpu, 2),
            "sha256_of_shards": round(hash_cpu, 2),
        },
        "reachable_fraction_of_limit": round(ceiling, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--input", nargs="+", default=[str(REPO / "bench" / "results" / "out-1000")]
    )
    parser.add_argument("--samples_per_shard", type=int, default=1000)
    args = parser.parse_args()
    results = []
    for path in args.input:
        source = Path(path)
        work = source.parent / f"{source.name}-dataset"
        result = {"input": str(source), "samples_per_shard": args.samples_per_shard}
        result["shard"] = _run_shard(source, work, args.samples_per_shard)
        result.update(_references(source, source.parent / f"{source.name}-plain.tar"))
        rate = result["shard"]["samples_per_cpu_s"]
        for name in ("plain_tar_limit", "plain_tar_job"):
            result[name]["fraction"] = round(rate / result[name]["samples_per_cpu_s"], 3)
        print(json.dumps(result, indent=2), flush=True)
        results.append(result)
    summary = {"runs": results}
    if len(results) > 1:
        first, last = results[0]["shard"], results[-1]["shard"]
        summary["marginal_samples_per_cpu_s"] = round(
            (last["samples"] - first["samples"]) / (last["cpu_s"] - first["cpu_s"]), 1
        )
        print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))
    out = REPO / "bench" / "results" / "shard_throughput.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
