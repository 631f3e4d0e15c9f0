"""Which extract file an article's rows go to, and their order there: by content, never by
the bundle that happened to carry them. Pure, Beam-free.

An article's figures and its article row land in files of the same name
(`figures/part-00007-of-00016.parquet` and `articles/part-00007-of-00016.parquet`), chosen
by a stable hash of the article's PMCID and version; in both, rows run in article order.
So the same source and flags give the same files, byte for byte, on any runner and worker
count, and a reader of one figure file finds its articles' text in one sibling file,
in the same order.
"""

from __future__ import annotations

import hashlib
import posixpath

# Articles per file: about 7,000 figure samples (600 MB), large enough that few shards
# straddle two files, small enough that many workers share the final copy.
ARTICLES_PER_FILE = 2000
# The columns that identify an article in a figure row and in an article row alike.
ARTICLE_ID_COLUMNS = ("article_accession_id", "article_version", "source_location")


def file_count(articles: int, per_file: int = ARTICLES_PER_FILE) -> int:
    return max(1, -(-articles // per_file))


def file_name(index: int, count: int) -> str:
    return f"part-{index:05d}-of-{count:05d}.parquet"


def sortable(value) -> tuple:
    """A value that sorts beside any other of its column, None first."""
    return (0, "") if value is None else (1, value)


def article_id(accession, version, source_location) -> tuple:
    """An article's identity and place in a file's order. PMCID and version; where the XML
    named no PMCID, where it came from."""
    return (sortable(accession), sortable(version), sortable(source_location))


def file_index(article: tuple, count: int) -> int:
    """The file an article goes to: a stable hash (not Python's hash(), salted per process)."""
    accession, version, source = (part[1] for part in article)
    name = f"{accession}.{version}" if accession else f"@{source}"
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % count


def sibling(figure_file: str, table: str = "articles") -> str:
    """The file of `table` that holds the articles of a figure file (same name, sibling
    folder): `.../figures/part-00007-of-00016.parquet` -> `.../articles/part-...`."""
    folder, name = posixpath.split(figure_file)
    return posixpath.join(posixpath.dirname(folder), table, name)
