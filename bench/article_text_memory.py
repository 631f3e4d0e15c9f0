"""Benchmark: peak memory of extract + shard on one article with many figures and a long body.

    python bench/article_text_memory.py --figures 1000 --body_mb 4

Generates (under --workdir) a folder corpus of one article: a JATS XML whose body holds
about `--body_mb` MB of text and `--figures` figures, each with its own small JPEG. Then runs
the extract job and the shard job on it, each in a child process with one worker, and
prints their wall time, CPU time and peak RSS. An article's text is stored once, so the peak
should not grow with figures x body. Run by hand; never part of the test suite.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.child import run_pipeline  # noqa: E402

PMCID = "PMC9000001"


def _jpeg(seed: int) -> bytes:
    from PIL import Image

    rng = random.Random(seed)
    image = Image.frombytes("L", (64, 64), bytes(rng.randrange(256) for _ in range(64 * 64)))
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=80)
    return out.getvalue()


def article_xml(figures: int, body_bytes: int) -> bytes:
    paragraph = "<p>" + "The cells were imaged under the microscope and counted. " * 16 + "</p>"
    body = [paragraph] * max(1, body_bytes // len(paragraph))
    figs = [
        f'<fig id="F{n}"><label>Figure {n}</label><caption><p>Panel {n} of the study.</p>'
        f'</caption><graphic xlink:href="f{n}"/></fig>'
        f'<p>As <xref ref-type="fig" rid="F{n}">Figure {n}</xref> shows.</p>'
        for n in range(1, figures + 1)
    ]
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<article xmlns:xlink="http://www.w3.org/1999/xlink" article-type="research-article">'
        "<front><journal-meta><journal-title-group><journal-title>J Bench</journal-title>"
        "</journal-title-group></journal-meta><article-meta>"
        f'<article-id pub-id-type="pmc">{PMCID.removeprefix("PMC")}</article-id>'
        "<title-group><article-title>Many figures</article-title></title-group>"
        '<permissions><license xlink:href="https://creativecommons.org/licenses/by/4.0/">'
        "<license-p>CC BY</license-p></license></permissions>"
        f"</article-meta></front><body><sec>{''.join(body)}{''.join(figs)}</sec></body></article>"
    ).encode()


def corpus(root: Path, figures: int, body_mb: float) -> Path:
    folder = root / f"corpus-{figures}-{body_mb}" / PMCID
    if not (folder / f"{PMCID}.xml").exists():
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(1, figures + 1):
            (folder / f"f{n}.jpg").write_bytes(_jpeg(n))
        (folder / f"{PMCID}.xml").write_bytes(article_xml(figures, int(body_mb * 1e6)))
    return folder.parent


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--figures", type=int, default=1000)
    parser.add_argument("--body_mb", type=float, default=4.0)
    parser.add_argument("--workdir", default=str(REPO / "bench" / "results"))
    args = parser.parse_args(argv)
    root = Path(args.workdir)
    source = corpus(root, args.figures, args.body_mb)
    xml_mb = (source / PMCID / f"{PMCID}.xml").stat().st_size / 1e6
    out, dataset = root / "text-once-extract", root / "text-once-dataset"
    shutil.rmtree(dataset, ignore_errors=True)
    results = {"figures": args.figures, "xml_mb": round(xml_mb, 2)}
    report, results["extract"] = run_pipeline("extract", out, "--source", str(source))
    results["samples"] = report["stages"]["dedupe"]["out"]
    _, results["shard"] = run_pipeline("shard", dataset, "--input", str(out))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
