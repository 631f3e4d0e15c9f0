"""What an article gets from PubMed, decided for one PMID at a time. Pure, Beam-free.

The enrich stage groups, under each PMID, the articles that name it and every version of its
record it found (MEDLINE records and deletions from any file, or E-utilities' answer); this
module settles which version stands and what each article's PubMed columns become.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa

from transforms.pubmed.medline import latest
from transforms.records import ARTICLE_SCHEMA, PUBMED_ARTICLE_FIELDS, PubmedDeletion, PubmedRecord

_PMID = re.compile(r"[0-9]{1,12}")


def parse_pmid(value) -> tuple[str | None, str]:
    """(the PMID in PubMed's form, "") or (None, why not: no_pmid | invalid_pmid).

    JATS `<article-id pub-id-type="pmid">` holds digits, now and then with spaces or leading
    zeros; anything else (a DOI in the wrong element, "0") is not a PMID."""
    text = "" if value is None else str(value).strip()
    if not text:
        return None, "no_pmid"
    if _PMID.fullmatch(text) and int(text) > 0:
        return str(int(text)), ""
    return None, "invalid_pmid"


@dataclass(frozen=True)
class FetchFailure:
    """E-utilities could not answer for a PMID (after its retries): why, for the articles."""

    pmid: str
    reason: str
    detail: str = ""


def resolve(
    versions: Iterable[PubmedRecord | PubmedDeletion | FetchFailure],
    failed_files: set[str] = frozenset(),
) -> tuple[str, PubmedRecord | None]:
    """(article_pubmed_status, the record that stands or None) for one PMID.

    Versions from a MEDLINE file that failed to parse are dropped (the file is a dead letter,
    and what it held before the error cannot be trusted to be its last word on the PMID).
    Where no version stands and some file failed, the PMID is `source_failed`, not
    `not_found`: the failed file may have held it past the point it broke."""
    failures = []

    def usable():  # streamed: a PMID with a million versions costs no list of them
        for version in versions:
            if isinstance(version, FetchFailure):
                failures.append(version)
            elif version.source_file not in failed_files:
                yield version

    standing = latest(usable())
    if isinstance(standing, PubmedRecord):
        return "matched", standing
    if isinstance(standing, PubmedDeletion):
        return "deleted", None
    if failures:
        return "fetch_failed", None
    return ("source_failed" if failed_files else "not_found"), None


def columns(status: str, record: PubmedRecord | None = None) -> dict:
    """An article's PubMed columns (PUBMED_COLUMNS): the record's fields, or all empty, and
    the status."""
    values = {}
    for field, column in PUBMED_ARTICLE_FIELDS.items():
        if record is not None:
            value = getattr(record, field)
            values[column] = list(value) if isinstance(value, list) else value
        else:
            values[column] = [] if pa.types.is_list(ARTICLE_SCHEMA.field(column).type) else ""
    values["article_pubmed_status"] = status
    return values
