"""Benchmark: the whole `biomedica enrich --medline` job (parse, keyed join, articles written)
on a real MEDLINE file, for the on-paper Dataflow estimate in the README.

    python bench/enrich_join.py --medline /tmp/medline/data/pubmed20n0014.xml.gz \
        --articles 20000 --files 10

Builds an extract-shaped input of `--articles` articles (one row each, a 20 kB body text so
the articles files weigh what real ones do per row), three in four naming a PMID of the
MEDLINE file, the rest PMIDs in no file; then runs enrich in a child process on one worker
and reports wall time, CPU time, peak RSS, records per CPU second through the whole job, and
the report's status counts. Run by hand.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.child import run_pipeline  # noqa: E402
from transforms.article_files import file_name  # noqa: E402
from transforms.pubmed.medline import read_medline  # noqa: E402
from transforms.records import ARTICLE_SCHEMA, Article  # noqa: E402


def make_input(root: Path, medline: str, articles: int, files: int, seed: int) -> int:
    """An extract output of `articles` article rows; returns the MEDLINE file's records."""
    pmids = sorted({r.pmid for r in read_medline(medline) if hasattr(r, "article_mesh_terms")})
    rng = random.Random(seed)
    text = "lorem ipsum " * 1700  # ~20 kB
    folder = root / "extract" / "articles"
    folder.mkdir(parents=True)
    for f in range(files):
        rows = []
        for i in range(f, articles, files):
            pmid = rng.choice(pmids) if i % 4 else str(90_000_000 + i)
            article = Article(f"PMC{10_000_000 + i}", 1, article_pmid=pmid, article_text=text)
            rows.append(dataclasses.asdict(article))
        table = pa.Table.from_pylist(rows, schema=ARTICLE_SCHEMA)
        pq.write_table(table, folder / file_name(f, files), row_group_size=64)
    (root / "run_report.json").write_text('{"pipeline": "extract", "balanced": true}\n')
    return len(pmids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--medline", required=True, help="a real MEDLINE file (.xml.gz)")
    parser.add_argument("--articles", type=int, default=20000)
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        root = Path(work)
        records = make_input(root / "extract_out", args.medline, args.articles, args.files, 0)
        report, measured = run_pipeline(
            "enrich", root / "out", "--input", str(root / "extract_out"), "--medline", args.medline
        )
    medline = report["stages"]["medline"]
    result = {
        **measured,
        "articles": args.articles,
        "medline_records": medline.get("records", 0),
        "distinct_pmids_in_file": records,
        "records_per_cpu_s": round(medline.get("records", 0) / measured["cpu_s"]),
        "articles_per_cpu_s": round(args.articles / measured["cpu_s"]),
        "by_status": report["stages"]["enrich"]["by_status"],
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
