"""Benchmark: the whole pipeline end to end, stage by stage, at two corpus sizes.

    python bench/run_scale.py --articles 1000 5000

For each size it generates (once, cached under --workdir) a sample corpus with 1,000-px
figures and its PubMed files, then runs the stages `biomedica run` runs, each as its own
child process on the in-process runner with one worker (the command each runs is what
`biomedica run` hands it): extract, enrich (--medline), embed (pixels), annotate, shard. Per
stage: wall and CPU seconds, peak resident memory of the process, and items per CPU-second;
then how each changed from the smaller size to the larger (CPU ratio against size ratio).
Run by hand; never part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.child import cached_corpus, measure  # noqa: E402

# What each stage counts as its unit of work, from its run report.
UNITS = {
    "extract": ("extract_figures", "out", "figure samples"),
    "enrich": ("enrich", "in", "articles"),
    "embed": ("embed", "out", "figures"),
    "annotate": ("annotate", "in", "samples"),
    "shard": ("shard", "out", "samples"),
}


def _steps(corpus: Path, out: Path, clusters: int) -> list[tuple[str, list[str]]]:
    from pipelines import run as run_all

    argv = ["--source", str(corpus), "--output", str(out), "--overwrite"]
    argv += ["--medline", str(corpus / "pubmed" / "*.xml.gz"), "--clusters", str(clusters)]
    argv += ["--direct_num_workers", "1", "--log_level", "ERROR"]
    _, steps, _ = run_all.plan(argv)
    return steps


def run_size(workdir: Path, articles: int, image_side: int, clusters: int) -> dict:
    corpus = cached_corpus(workdir, articles, image_side, "corpus-run")
    out = workdir / f"run-{articles}"
    stages = {}
    for stage, argv in _steps(corpus, out, clusters):
        measured = measure([sys.executable, "-m", f"pipelines.{stage}", *argv])
        folder = argv[argv.index("--output") + 1]
        report = json.loads((Path(folder) / "run_report.json").read_text())
        name, term, unit = UNITS[stage]
        n = report["stages"][name][term]
        stages[stage] = {
            **{k: measured[k] for k in ("wall_s", "cpu_s", "peak_rss_mib")},
            "balanced": report["balanced"],
            unit: n,
            "per_cpu_s": round(n / measured["cpu_s"], 1) if measured["cpu_s"] else None,
        }
        print(f"{articles} articles, {stage}: {json.dumps(stages[stage])}", flush=True)
    return {"articles": articles, "image_side": image_side, "stages": stages}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--articles", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--image_side", type=int, default=1000)
    parser.add_argument("--clusters", type=int, default=64)
    parser.add_argument("--workdir", default=str(REPO / "bench" / "results"))
    args = parser.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    results = [run_size(workdir, n, args.image_side, args.clusters) for n in args.articles]
    if len(results) >= 2:
        small, large = results[0], results[-1]
        size = large["articles"] / small["articles"]
        results.append(
            {
                "scaling": {
                    stage: {
                        "size_ratio": round(size, 2),
                        "cpu_ratio": round(large["stages"][stage]["cpu_s"] / s["cpu_s"], 2),
                        "rss_ratio": round(
                            large["stages"][stage]["peak_rss_mib"] / s["peak_rss_mib"], 2
                        ),
                    }
                    for stage, s in small["stages"].items()
                }
            }
        )
    text = json.dumps(results, indent=2)
    print(text)
    (workdir / "run_scale.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
