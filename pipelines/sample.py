"""Write a synthetic PMC Cloud corpus (see transforms.pmc.sample_corpus) and print its summary.

python -m pipelines.sample --output /tmp/corpus --articles 200 --workers 2
"""

from __future__ import annotations

import json
import os
import sys

from pipelines import flags
from pipelines.runner import main_of
from transforms import storage
from transforms.pmc.sample_corpus import generate_corpus


def add_flags(parser) -> None:
    group = parser.add_argument_group("sample corpus")
    group.add_argument("--output", help="corpus root: a local folder, gs:// or s3:// URI")
    group.add_argument("--overwrite", action="store_true", help="clear a non-empty --output first")
    group.add_argument("--articles", type=int, default=50, help="articles to write")
    group.add_argument("--seed", type=int, default=0, help="same seed, same corpus")
    group.add_argument(
        "--image_side", type=int, default=1000, help="width of full figure images in pixels"
    )
    group.add_argument("--start_pmcid", type=int, default=9_000_001, help="first PMC id")
    group.add_argument("--workers", type=int, default=1, help="processes to generate with")
    flags.add_log_level(group)


def _holds_files(output: str) -> bool:
    if "://" not in output:
        if os.path.isfile(output):
            raise SystemExit(f"--output {output} is a file, not a folder")
        return os.path.isdir(output) and bool(os.listdir(output))
    return next(iter(storage.list_prefix(output)), None) is not None


def run(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = flags.parse(
        "sample",
        argv,
        add_flags,
        beam=False,
        description="Generate a deterministic synthetic corpus in the PMC Cloud layout.",
    )
    if not args.output:
        raise flags.UsageError("missing --output")
    if args.workers < 1 or args.articles < 1 or args.image_side < 1:
        raise flags.UsageError("--articles, --image_side and --workers must be at least 1")
    # Articles of an older corpus beside the new ones would be read as one corpus.
    if _holds_files(args.output):
        if not args.overwrite:
            raise SystemExit(
                f"{args.output} is not empty; pass --overwrite to clear it, or pick another folder"
            )
        storage.remove_tree(args.output)
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
    return {"balanced": True}


main = main_of(run, "sample")


if __name__ == "__main__":
    sys.exit(main())
