"""Write a synthetic PMC Cloud corpus (see transforms.pmc.sample_corpus) and print its summary.

python -m pipelines.sample --output /tmp/corpus --articles 200 --workers 2
"""

from __future__ import annotations

import json
import os
import re
import sys

from pipelines import flags
from pipelines.runner import main_of
from transforms import storage
from transforms.pmc.sample_corpus import MANIFEST_NAME, generate_corpus


def add_flags(parser) -> None:
    group = parser.add_argument_group("sample corpus")
    group.add_argument("--output", help="corpus root: a local folder, gs:// or s3:// URI")
    group.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the sample corpus in --output (any other content is refused)",
    )
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


# What a sample corpus holds at its top (transforms.pmc.sample_corpus): nothing else is ours.
_ARTICLE = re.compile(r"PMC\d+\.\d+")
_CORPUS_FOLDERS = ("metadata", "inventory-reports", "pubmed")


def _entries(output: str) -> dict[str, bool]:
    """The top-level names in `output`, each with whether it is a folder."""
    if "://" not in output:
        return {name: os.path.isdir(os.path.join(output, name)) for name in os.listdir(output)}
    base = output.rstrip("/") + "/"
    found: dict[str, bool] = {}
    for info in storage.list_prefix(output):
        name, slash, _ = info.uri[len(base) :].partition("/")
        found[name] = found.get(name, False) or bool(slash)
    return found


def clear_corpus(output: str) -> None:
    """--overwrite: remove an older sample corpus, and refuse any other folder (`--output .`
    must never wipe a working directory)."""
    entries = _entries(output)
    foreign = sorted(
        name
        for name, folder in entries.items()
        if name != MANIFEST_NAME
        and not (folder and (name in _CORPUS_FOLDERS or _ARTICLE.fullmatch(name)))
    )
    if MANIFEST_NAME not in entries or foreign:
        shown = foreign or sorted(entries)
        listed = ", ".join(shown[:5]) + (f" and {len(shown) - 5} more" if len(shown) > 5 else "")
        why = f"no {MANIFEST_NAME}" if MANIFEST_NAME not in entries else "not only a corpus"
        raise SystemExit(
            f"--overwrite clears only a sample corpus: {output} holds {listed} ({why});"
            " pick another folder or empty it yourself"
        )
    for name in entries:  # the corpus's own entries: the folder itself stays
        storage.remove(storage.join(output, name))


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
        clear_corpus(args.output)
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
