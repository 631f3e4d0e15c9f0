"""Benchmark: `biomedica run` on a local Dask cluster of 1 and of 2 worker processes.

    python bench/dask_workers.py --articles 400 --image_side 500

Starts a dask.distributed cluster on 127.0.0.1 (one thread per worker process, no
dashboard), warms its workers (a first run imports Beam and torch in each), then runs the
whole pipeline on the sample corpus (cached under --workdir) and reports each stage's wall
seconds from its run report, per cluster size, and the speed-up. Run by hand.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.child import cached_corpus  # noqa: E402


def _run(corpus: Path, out: Path, address: str) -> dict:
    command = [sys.executable, "-m", "pipelines.run", "--source", str(corpus)]
    command += ["--output", str(out), "--overwrite", "--log_level", "ERROR", "--clusters", "8"]
    command += ["--medline", str(corpus / "pubmed" / "*.xml.gz")]
    command += ["--runner", "DaskRunner", "--dask_client_address", address]
    started = time.time()
    subprocess.run(command, cwd=REPO, check=True, capture_output=True)
    took = time.time() - started
    report = json.loads((out / "run_report.json").read_text())
    stages = {stage: info["wall_seconds"] for stage, info in report["stages"].items()}
    return {"wall_s": round(took, 1), "stages_wall_s": stages, "balanced": report["balanced"]}


def main() -> None:
    from distributed import LocalCluster

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--articles", type=int, default=400)
    parser.add_argument("--image_side", type=int, default=500)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--workdir", default=str(REPO / "bench" / "results"))
    args = parser.parse_args()
    workdir = Path(args.workdir)
    corpus = cached_corpus(workdir, args.articles, args.image_side, "corpus-dask")
    results = {}
    for n in args.workers:
        with LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster:
            address = cluster.scheduler_address
            _run(corpus, workdir / f"dask-warm-{n}", address)  # imports on every worker
            results[n] = _run(corpus, workdir / f"dask-{n}", address)
        print(f"{n} workers: {json.dumps(results[n])}", flush=True)
    if 1 in results and 2 in results:
        results["speed_up_2_over_1"] = round(results[1]["wall_s"] / results[2]["wall_s"], 2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
