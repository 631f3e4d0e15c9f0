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
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from transforms.images import decode_only  # noqa: E402
from transforms.sample_corpus import generate_corpus  # noqa: E402


def _corpus(workdir: Path, articles: int, image_side: int) -> Path:
    root = workdir / f"corpus-{articles}-{image_side}"
    done = root / ".complete"
    if not done.exists():
        started = time.time()
        generate_corpus(str(root), articles, seed=0, image_side=image_side, workers=os.cpu_count())
        done.write_text(f"{time.time() - started:.1f}\n")
    return root


def _run_extract(corpus: Path, output: Path) -> dict:
    command = [
        sys.executable,
        "-m",
        "pipelines.extract",
        "--source",
        str(corpus),
        "--output",
        str(output),
        "--overwrite",
        "--direct_num_workers",
        "1",
    ]
    started = time.time()
    child = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.time() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"extract failed: {' '.join(command)}")
    report = json.loads((output / "run_report.json").read_text())
    figures = report["stages"]["extract_figures"]["out"]
    cpu = usage.ru_utime + usage.ru_stime
    return {
        "command": " ".join(command),
        "articles_in": report["stages"]["extract_articles"]["in"],
        "figure_samples": figures,
        "after_dedupe": report["stages"]["dedupe"]["out"],
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "samples_per_wall_s": round(figures / wall, 1),
        "samples_per_cpu_s": round(figures / cpu, 1),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "balanced": report["balanced"],
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
        corpus = _corpus(workdir, articles, args.image_side)
        result = {"articles": articles, "image_side": args.image_side, "cpus": os.cpu_count()}
        result["extract"] = _run_extract(corpus, workdir / f"out-{articles}")
        result["decode_only"] = _decode_limit(corpus)
        results.append(result)
        print(json.dumps(result, indent=2), flush=True)
    (workdir / "extract_throughput.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
