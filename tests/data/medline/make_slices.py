"""Rebuild the MEDLINE test slices from NLM's files (see README.md here).

python tests/data/medline/make_slices.py DIR   # DIR holds pubmed20n0014.xml.gz and
                                               # pubmed21n1298.xml.gz
"""

from __future__ import annotations

import gzip
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BASELINE = ("399296", "399307", "399309", "400955")
UPDATE = ("30271887", "31294756", "31594832", "31647768")
EDITED = "399307"  # carried into the update slice, edited (no real PMID is in both files)
DELETED = "399309"  # added to the update slice's real DeleteCitation
KEPT_DELETIONS = 3  # of the update file's real DeleteCitation PMIDs


def _articles(text: str) -> list[tuple[str, str]]:
    found = re.findall(r"  <PubmedArticle>.*?</PubmedArticle>\n", text, re.S)
    return [(re.search(r"<PMID Version=\"\d+\">(\d+)</PMID>", a).group(1), a) for a in found]


def _head(text: str) -> str:
    return text[: text.index("<PubmedArticleSet>") + len("<PubmedArticleSet>\n")]


def _write(name: str, text: str) -> None:
    # mtime=0: the same bytes on every rebuild.
    (HERE / name).write_bytes(gzip.compress(text.encode(), mtime=0))


def main(folder: str) -> None:
    base = gzip.open(Path(folder) / "pubmed20n0014.xml.gz").read().decode()
    update = gzip.open(Path(folder) / "pubmed21n1298.xml.gz").read().decode()
    base_articles = [(p, a) for p, a in _articles(base) if p in BASELINE]
    _write(
        "pubmed20n0014-slice.xml.gz",
        _head(base) + "".join(a for _, a in base_articles) + "</PubmedArticleSet>\n",
    )
    edited = dict(base_articles)[EDITED]
    # The edit: a later revision date, and "Membranes/enzymology" made a major topic.
    revised = (
        "<DateRevised>\n        <Year>{}</Year>\n        <Month>{}</Month>\n        <Day>{}</Day>"
    )
    edited = edited.replace(revised.format(2000, 12, 18), revised.format(2021, "06", "05"))
    edited = edited.replace(
        '<QualifierName UI="Q000201" MajorTopicYN="N">enzymology</QualifierName>',
        '<QualifierName UI="Q000201" MajorTopicYN="Y">enzymology</QualifierName>',
    )
    assert edited.count("2021") == 1 and edited != dict(base_articles)[EDITED]
    picked = [a for p, a in _articles(update) if p in UPDATE]
    deletions = re.search(r"<DeleteCitation>\n(.*?)</DeleteCitation>", update, re.S).group(1)
    kept = "".join(deletions.splitlines(keepends=True)[:KEPT_DELETIONS])
    kept += f'<PMID Version="1">{DELETED}</PMID>\n'
    _write(
        "pubmed21n1298-slice.xml.gz",
        _head(update)
        + "".join(picked)
        + edited
        + f"<DeleteCitation>\n{kept}</DeleteCitation>\n</PubmedArticleSet>\n",
    )


if __name__ == "__main__":
    main(sys.argv[1])
