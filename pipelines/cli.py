"""`biomedica <pipeline> [flags]`: one subcommand per pipeline.

Flags a pipeline does not know go to Beam's PipelineOptions (--runner, --project, ...).
"""

from __future__ import annotations

import difflib
import importlib
import sys

PIPELINES = {
    "run": (
        "pipelines.run",
        "the whole pipeline: extract, enrich, embed, annotate, shard, index, each under --output",
    ),
    "extract": (
        "pipelines.extract",
        "PMC source -> figure samples (Parquet), dead letters, report",
    ),
    "enrich": (
        "pipelines.enrich",
        "extract output -> its articles with MeSH and more from PubMed (MEDLINE or E-utilities)",
    ),
    "shard": ("pipelines.shard", "extract output -> WebDataset shards + Parquet per license group"),
    "embed": (
        "pipelines.embed",
        "extract output -> image (and caption) embeddings per figure file",
    ),
    "subset": ("pipelines.subset", "a dataset -> a new dataset of the samples matching --where"),
    "annotate": (
        "pipelines.annotate",
        "embeddings -> clusters (faiss), labels per sample, cluster summary, gallery",
    ),
    "index": (
        "pipelines.index",
        "dataset + embeddings -> faiss vector indexes and an SQLite FTS5 keyword index",
    ),
    "sample": ("pipelines.sample", "write a generated sample corpus in the PMC Cloud layout"),
    "serve": (
        "pipelines.serve",
        "a dataset and its index -> an HTTP search and streaming service (not a Beam job)",
    ),
}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in PIPELINES:
        module = importlib.import_module(PIPELINES[argv[0]][0])
        return module.main(argv[1:]) or 0
    if argv and argv[0] not in ("-h", "--help"):
        close = difflib.get_close_matches(argv[0], PIPELINES, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        print(f"biomedica: error: unknown pipeline {argv[0]!r}{hint}", file=sys.stderr)
        return 2
    print("usage: biomedica <pipeline> [flags]\n\npipelines:")
    for name, (_, text) in PIPELINES.items():
        print(f"  {name:<10} {text}")
    print("\n`biomedica <pipeline> --help` lists a pipeline's flags.")
    return 0 if argv else 2


if __name__ == "__main__":
    sys.exit(main())
