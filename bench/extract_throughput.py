"""Benchmark: figure samples per second per core through discover + extract + dedupe.

    python bench/extract_throughput.py --articles 1000 5000

For each corpus size it generates (once, cached under --workdir) a sample corpus in the PMC
Cloud layout with 1,000-px figures, runs the extract pipeline on the in-process runner with
one worker in a child process, and reports wall time, CPU time, figure samples per second
(per wall second and per CPU second, i.e. per core) and the child's peak resident memory.
The limit it is compared with: the same machine fully decoding the same JPEG figures, one
core, nothing else. Run by hand; never part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.child import cached_corpus, run_pipeline  # noqa: E402
from transforms.images.checks import decode_only  # noqa: E402


def _run_extract(corpus: Path, output: Path) -> dict:
    report, measured = run_pipeline("extract", output, "--source", str(corpus))
    figures = report["stages"]["extract_figures"]["out"]
    return {
        **measured,
        "articles_in": report["stages"]["extract_articles"]["in"],
        "figure_samples": figures,
        "after_dedupe": report["stages"]["dedupe"]["out"],
        "samples_per_wall_s": round(figures / measured["wall_s"], 1),
        "samples_per_cpu_s": round(figures / measured["cpu_s"], 1),
    }


def _decode_limit(corpus: Path, limit: int = 2000) -> dict:
    files = sorted(p for p in corpus.glob("PMC*/*.jpg"))[:limit]
    blobs = [p.read_bytes() for p in files]
    started = time.process_time()
    for blob in blobs:
        decode_only(blob)
    cpu = time.process_time() - started
    return {
        "images": len(blobs),
        "cpu_s": round(cpu, 2),
        "decodes_per_cpu_s": round(len(blobs) / cpu, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--articles", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--image_side", type=int, default=1000)
    parser.add_argument("--workdir", default=str(REPO / "bench" / "results"))
    args = parser.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    results = []
    for articles in args.articles:
        corpus = cached_corpus(workdir, articles, args.image_side)
        result = {"articles": articles, "image_side": args.image_side, "cpus": os.cpu_count()}
        result["extract"] = _run_extract(corpus, workdir / f"out-{articles}")
        result["decode_only"] = _decode_limit(corpus)
        results.append(result)
        print(json.dumps(result, indent=2), flush=True)
    (workdir / "extract_throughput.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
