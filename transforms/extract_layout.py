"""Where an extract output keeps its tables, and how an enrich output points at figures it
did not copy. Pure, Beam-free.

An extract output holds `extract/figures/*.parquet` (the samples, images included: the bulk)
and `extract/articles/*.parquet` (one row per article, same file names). `enrich` writes new
articles files only; its `extract/figures.json` (the link) names the figures folder it
read, and the run report of the extract that wrote those figures with that report's sha256.
Every stage that takes an extract output takes an enrich output alike through `layout`:
figures from where the link points, articles from the output itself. A link whose figures
were rewritten since (another extract run into that folder) is refused: its articles would
no longer be the figures' articles.
"""

from __future__ import annotations

import json
import os
import posixpath
from dataclasses import dataclass

from transforms import storage

EXTRACT = "extract"
FIGURES = "figures"
ARTICLES = "articles"
LINK = "figures.json"
REPORT = "run_report.json"


class LinkError(ValueError):
    """An enrich output's link that cannot be followed: unreadable, or stale."""


@dataclass(frozen=True)
class Layout:
    """The tables of an extract (or enrich) output."""

    root: str  # the output folder
    figures: str  # folder of the figure Parquet files
    articles: str  # folder of the article Parquet files (same file names)
    # The run report of the extract that wrote the figures, and its sha256 when read.
    figures_report: str
    figures_report_sha256: str | None = None
    linked: bool = False  # the figures live in another output (this one is enrich's)

    @property
    def figure_glob(self) -> str:
        return storage.join(self.figures, "*.parquet")

    def articles_file(self, figure_file: str) -> str:
        """The articles file that holds the articles of a figure file (same name)."""
        return storage.join(self.articles, posixpath.basename(figure_file))


def is_output_folder(source: str) -> bool:
    """False for a figure file or glob given in place of an output folder."""
    return not (source.endswith(".parquet") or any(c in source for c in "*?["))


def link_uri(root: str) -> str:
    return storage.join(root, EXTRACT, LINK)


def _absolute(uri: str) -> str:
    """A local path that means the same from any working folder."""
    return uri if "://" in uri else os.path.abspath(uri)


def layout(source: str, s3: storage.S3Config = storage.S3Config()) -> Layout:
    """The layout of an output folder: its own tables, or, where it holds a link, the linked
    figures (checked fresh) beside its own articles."""
    root = source.rstrip("/") or source
    articles = storage.join(root, EXTRACT, ARTICLES)
    link = link_uri(root)
    if not storage.exists(link, s3):
        return Layout(
            root, storage.join(root, EXTRACT, FIGURES), articles, storage.join(root, REPORT)
        )
    try:
        data = json.loads(storage.read_bytes(link, s3, max_bytes=1 << 20))
        figures, report = data["figures"], data["figures_report"]
        recorded = data["figures_report_sha256"]
    except (OSError, ValueError, KeyError, TypeError, storage.StorageError) as err:
        raise LinkError(f"{link} cannot be read ({type(err).__name__}: {err})") from None
    current = storage.sha256_of(report, s3)
    if current != recorded:
        why = "is gone" if current is None else "changed"
        raise LinkError(
            f"{link} names the figures in {figures}, but the run report of the extract that "
            f"wrote them ({report}) {why} since: another run rewrote them; run enrich again"
        )
    return Layout(root, figures, articles, report, recorded, linked=True)


def link_for(source: Layout, s3: storage.S3Config = storage.S3Config()) -> dict:
    """The link an output made from `source` writes: to the figures `source` reads."""
    sha = source.figures_report_sha256 or storage.sha256_of(source.figures_report, s3)
    if sha is None:
        raise LinkError(
            f"{source.figures_report} is missing: --input {source.root} is not a finished "
            "extract output (its run report is how a later stage knows the figures unchanged)"
        )
    return {
        "figures": _absolute(source.figures),
        "figures_report": _absolute(source.figures_report),
        "figures_report_sha256": sha,
    }


def write_link(output: str, link: dict, s3: storage.S3Config = storage.S3Config()) -> None:
    body = (json.dumps(link, indent=2) + "\n").encode()
    storage.write_bytes(link_uri(output), body, s3)
