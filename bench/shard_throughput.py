"""Benchmark: samples per second per core written into shards, against a plain tar.

    python bench/shard_throughput.py --input bench/results/out-1000 bench/results/out-5000

Each --input is an extract output (run bench/extract_throughput.py first). Measured for
each, one core, best of three:

- shard: the shard job on the in-process runner with one worker, in a child process;
- plain-tar job (bench/plain_tar_job.py): the same job done the plainest way, in a child
  process: read the same Parquet, build the same members, write them into one plain tar
  with `tarfile`;
- plain-tar write: this process writing the same bytes, built beforehand and held in
  memory, into one plain tar with `tarfile`; beside it, what any shard writer pays and that
  write does not (reading the input Parquet, the sha256 of the shards for the manifest),
  which bounds the fraction of it that any writer can reach.

CPU time and peak RSS of children come from wait4, so process start and imports count for
both jobs. Given two inputs it also reports marginal rates (extra samples over extra CPU
seconds), which leave out what a run pays once. Run by hand; never part of the test suite.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pyarrow.parquet as pq  # noqa: E402

from bench.child import measure, run_pipeline  # noqa: E402
from bench.plain_tar_job import members, rows_of, write_tar  # noqa: E402

RUNS = 3


def _best(runs: list[dict]) -> dict:
    best = min(runs, key=lambda r: r["cpu_s"])
    return {**best, "cpu_s_of_runs": [r["cpu_s"] for r in runs]}


def _shard(source: Path, output: Path, per_shard: int) -> dict:
    runs = []
    for _ in range(RUNS):
        report, measured = run_pipeline(
            "shard", output, "--input", str(source), "--samples_per_shard", str(per_shard)
        )
        runs.append({**measured, "samples": report["stages"]["shard"]["out"]})
    best = _best(runs)
    best["bytes"] = sum(p.stat().st_size for p in output.glob("webdataset/*/*.tar"))
    best["samples_per_cpu_s"] = round(best["samples"] / best["cpu_s"], 1)
    return best


def _plain_job(source: Path, target: Path, samples: int) -> dict:
    command = [sys.executable, "bench/plain_tar_job.py", "--input", str(source)]
    best = _best([measure([*command, "--output", str(target)]) for _ in range(RUNS)])
    best["samples_per_cpu_s"] = round(samples / best["cpu_s"], 1)
    return best


def _cpu_best_of(step) -> float:
    best = float("inf")
    for _ in range(RUNS):
        started = time.process_time()
        step()
        best = min(best, time.process_time() - started)
    return best


def _write_cpu(source: Path, target: Path) -> float:
    samples = list(members(rows_of(source)))
    return _cpu_best_of(lambda: write_tar(target, samples))


def _plain_write(source: Path, target: Path) -> dict:
    write_cpu = _write_cpu(source, target)

    def read():
        for part in sorted((source / "extract" / "figures").glob("*.parquet")):
            for _ in pq.ParquetFile(part, pre_buffer=False).iter_batches(batch_size=256):
                pass

    def sha256():
        with open(target, "rb") as handle:
            digest = hashlib.sha256()
            while chunk := handle.read(1 << 24):
                digest.update(chunk)

    read_cpu, hash_cpu = _cpu_best_of(read), _cpu_best_of(sha256)
    return {
        "cpu_s": round(write_cpu, 2),
        "read_parquet_cpu_s": round(read_cpu, 2),
        "sha256_cpu_s": round(hash_cpu, 2),
        # No writer that reads the input and hashes its shards gets above this.
        "ceiling": round(write_cpu / (write_cpu + read_cpu + hash_cpu), 3),
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
        source = Path(path).resolve()
        tar = source.parent / f"{source.name}-plain.tar"
        result = {"input": str(path), "samples_per_shard": args.samples_per_shard}
        shard = _shard(source, source.parent / f"{source.name}-dataset", args.samples_per_shard)
        result["shard"] = shard
        result["plain_tar_job"] = _plain_job(source, tar, shard["samples"])
        result["plain_tar_write"] = _plain_write(source, tar)
        result["plain_tar_write"]["samples_per_cpu_s"] = round(
            shard["samples"] / result["plain_tar_write"]["cpu_s"], 1
        )
        for name in ("plain_tar_job", "plain_tar_write"):
            result[name]["fraction"] = round(
                shard["samples_per_cpu_s"] / result[name]["samples_per_cpu_s"], 3
            )
        print(json.dumps(result, indent=2), flush=True)
        results.append(result)
    summary: dict = {"runs": results}
    if len(results) > 1:
        first, last = results[0], results[-1]
        extra = last["shard"]["samples"] - first["shard"]["samples"]
        marginal = {
            name: round(extra / (last[name]["cpu_s"] - first[name]["cpu_s"]), 1)
            for name in ("shard", "plain_tar_job", "plain_tar_write")
        }
        marginal["fraction_of_plain_tar_job"] = round(
            marginal["shard"] / marginal["plain_tar_job"], 3
        )
        marginal["fraction_of_plain_tar_write"] = round(
            marginal["shard"] / marginal["plain_tar_write"], 3
        )
        summary["marginal_samples_per_cpu_s"] = marginal
        print(json.dumps(marginal, indent=2))
    out = REPO / "bench" / "results" / "shard_throughput.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
