"""Benchmark: the whole `biomedica enrich --medline` job (parse, keyed join, articles written)
on a real MEDLINE file, for the on-paper Dataflow estimate in the README.

    python bench/enrich_join.py --medline /tmp/medline/data/pubmed20n0014.xml.gz \
        --articles 6500 --files 4 --copies 1 3

Builds an extract-shaped input of `--articles` articles (one row each, a 20 kB body text so
the articles files weigh what real ones do per row), three in four naming a PMID of the
MEDLINE file, the rest PMIDs in no file; then runs enrich in a child process on one worker
and reports wall time, CPU time, peak RSS and the report's status counts. `--copies 1 3` runs
it with the MEDLINE file once and then under three names (later updates of the same
records): the difference is the job's cost per MEDLINE file, without the fixed cost of
starting a Beam job (imports, pipeline construction), which a Dataflow job pays once. Run by
hand.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import shutil
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
    parser.add_argument("--articles", type=int, default=6500)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--copies", type=int, nargs="+", default=[1, 3])
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as work:
        root = Path(work)
        records = make_input(root / "extract_out", args.medline, args.articles, args.files, 0)
        for copies in args.copies:
            folder = root / f"medline{copies}"
            folder.mkdir()
            for n in range(copies):  # pubmed20n0014, then 0015, ...: later files, same records
                shutil.copy(args.medline, folder / f"pubmed99n{n + 1:04d}.xml.gz")
            report, measured = run_pipeline(
                "enrich",
                root / f"out{copies}",
                "--input",
                str(root / "extract_out"),
                "--medline",
                str(folder / "*.xml.gz"),
            )
            medline = report["stages"]["medline"]
            results.append(
                {
                    **measured,
                    "medline_files": copies,
                    "medline_records": medline.get("records", 0),
                    "records_not_wanted": medline.get("not_wanted", 0),
                    "by_status": report["stages"]["enrich"]["by_status"],
                }
            )
    summary = {"articles": args.articles, "distinct_pmids_in_file": records, "runs": results}
    if len(results) >= 2:
        first, last = results[0], results[-1]
        extra = last["medline_records"] - first["medline_records"]
        cpu = last["cpu_s"] - first["cpu_s"]
        summary["marginal_records_per_cpu_s"] = round(extra / cpu) if cpu > 0 else None
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
