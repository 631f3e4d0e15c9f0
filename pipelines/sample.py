"""Write a synthetic PMC Cloud corpus (see transforms.pmc.sample_corpus) and print its summary.

python -m pipelines.sample --output /tmp/corpus --articles 200 --workers 2
"""

from __future__ import annotations

import argparse
import json
import sys

from transforms.pmc.sample_corpus import generate_corpus


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.sample",
        description="Generate a deterministic synthetic corpus in the PMC Cloud layout.",
    )
    parser.add_argument(
        "--output", required=True, help="corpus root: a local folder, gs:// or s3:// URI"
    )
    parser.add_argument("--articles", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--image_side", type=int, default=1000, help="width of full figure images in pixels"
    )
    parser.add_argument("--start_pmcid", type=int, default=9_000_001)
    parser.add_argument("--workers", type=int, default=1, help="processes to generate with")
    args = parser.parse_args(argv)
    summary = generate_corpus(
        args.output,
        args.articles,
        seed=args.seed,
        image_side=args.image_side,
        start_pmcid=args.start_pmcid,
        workers=args.workers,
    )
    json.dump(summary, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
