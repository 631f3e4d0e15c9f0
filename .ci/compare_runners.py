"""CI: the whole pipeline (`biomedica run`) on the sample corpus on three engines, compared.

    python .ci/compare_runners.py [--articles 20] [--workdir out/ci-runners]

Runs `biomedica run` (extract, enrich with the corpus's PubMed files, embed, annotate,
shard, index) on the in-process runner, on Beam's portable runner (an in-process job
service, LOOPBACK workers: the portability layer Dataflow Runner v2 and Flink use) and on a
Dask cluster (a scheduler and two worker processes on 127.0.0.1), then checks that every
run balanced and that the datasets are the same: the manifests' shard checksums, the index
files' bytes, and each stage's report counts. Exit status 0 only then; one line per
difference otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENGINES = {
    "in-process": [],
    "portable": ["--runner", "PortableRunner", "--job_endpoint", "embed"]
    + ["--environment_type", "LOOPBACK"],
    "dask": ["--runner", "DaskRunner", "--dask_npartitions", "2"],
}


def _counts(report: dict) -> dict:
    """A stage report's counts, without what names the run (paths, times)."""
    return {
        stage: {k: v for k, v in counts.items() if k != "wall_seconds"}
        for stage, counts in report.get("stages", {}).items()
    }


def _run(engine: str, corpus: Path, out: Path, argv: list[str]) -> tuple[dict, float]:
    command = [sys.executable, "-m", "pipelines.run", "--source", str(corpus)]
    command += ["--output", str(out), "--overwrite", "--log_level", "ERROR"]
    command += ["--medline", str(corpus / "pubmed" / "*.xml.gz"), "--clusters", "4"]
    command += ["--samples_per_shard", "50", *argv]
    started = time.time()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    took = time.time() - started
    if done.returncode != 0:
        raise SystemExit(f"{engine}: exit {done.returncode}: {done.stderr.strip()[-2000:]}")
    return json.loads((out / "run_report.json").read_text()), took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--articles", type=int, default=20)
    parser.add_argument("--workdir", default=str(REPO / "out" / "ci-runners"))
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from transforms.pmc.sample_corpus import generate_corpus

    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    corpus = work / "corpus"
    generate_corpus(str(corpus), args.articles, seed=1, image_side=256)
    results = {}
    for engine, argv in ENGINES.items():
        report, took = _run(engine, corpus, work / engine, argv)
        stages = {
            stage: _counts(json.loads(Path(info["report"]).read_text()))
            for stage, info in report["stages"].items()
        }
        manifest = json.loads((work / engine / "dataset" / "manifest.json").read_text())
        shards = [(s["path"], s["sha256"], s["parquet_sha256"]) for s in manifest["shards"]]
        index = {
            f.name: hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted((work / engine / "index").glob("*.*"))
            if f.suffix in (".faiss", ".sqlite")
        }
        results[engine] = {
            "balanced": report["balanced"],
            "stages": stages,
            "shards": shards,
            "index": index,
        }
        print(f"{engine}: {took:.1f} s, {len(shards)} shards, balanced {report['balanced']}")
    problems = [f"{e}: a report does not balance" for e, r in results.items() if not r["balanced"]]
    first, *others = ENGINES
    for engine in others:
        if results[engine]["shards"] != results[first]["shards"]:
            problems.append(f"{engine}: its shards differ from {first}'s")
        if results[engine]["index"] != results[first]["index"] or not results[first]["index"]:
            problems.append(f"{engine}: its index files differ from {first}'s (or none)")
        for stage, counts in results[first]["stages"].items():
            if results[engine]["stages"].get(stage) != counts:
                problems.append(f"{engine}: {stage}'s report counts differ from {first}'s")
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print(f"the same dataset on {', '.join(ENGINES)}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
