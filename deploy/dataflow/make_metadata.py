"""Write deploy/dataflow/metadata/<pipeline>.json for every pipeline of
pipelines.options.OPTIONS_OF, from its options classes (pipelines.template_metadata).

    python deploy/dataflow/make_metadata.py          # write them (and remove stale ones)
    python deploy/dataflow/make_metadata.py --check  # exit 1 if a committed file differs

Run it after changing a pipeline's flags; tests/test_dataflow_deploy.py fails until then.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDER = Path(__file__).resolve().parent / "metadata"


def expected() -> dict[str, str]:
    """File name -> text, for every pipeline."""
    sys.path.insert(0, str(ROOT))  # the checkout's pipelines package, run from anywhere
    from pipelines.options import OPTIONS_OF
    from pipelines.template_metadata import metadata_text

    return {f"{name}.json": metadata_text(name) for name in OPTIONS_OF}


def drift(want: dict[str, str]) -> list[str]:
    """What differs between the committed files and `want`, one line each."""
    have = {p.name: p.read_text() for p in FOLDER.glob("*.json")}
    lines = [f"missing: {n}" for n in sorted(set(want) - set(have))]
    lines += [f"stale: {n}" for n in sorted(set(have) - set(want))]
    lines += [f"differs: {n}" for n in sorted(set(want) & set(have)) if want[n] != have[n]]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare, write nothing")
    args = parser.parse_args(argv)
    want = expected()
    if args.check:
        lines = drift(want)
        for line in lines:
            print(f"deploy/dataflow/metadata: {line}", file=sys.stderr)
        return 1 if lines else 0
    FOLDER.mkdir(exist_ok=True)
    for stale in FOLDER.glob("*.json"):
        if stale.name not in want:
            stale.unlink()
    for name, text in want.items():
        (FOLDER / name).write_text(text)
    print(f"wrote {len(want)} files in {FOLDER.relative_to(ROOT)}: {', '.join(sorted(want))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
