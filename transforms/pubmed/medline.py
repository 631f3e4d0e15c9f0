"""MEDLINE/PubMed bulk XML (`pubmed25n0001.xml.gz`, ...): streamed into PubMed records.

NLM publishes PubMed as a yearly baseline and daily update files, all named
`pubmed<yy>n<nnnn>.xml.gz` and numbered in one sequence. A file is a `<PubmedArticleSet>` of
`<PubmedArticle>` elements and, in update files, `<DeleteCitation>` lists of PMIDs that leave
PubMed. A PMID's latest version is the one in the file that comes last in that sequence.

Contract for a malformed file: `parse_medline` yields as it goes and raises `MedlineError`
where the file turns out unreadable (bad gzip, malformed XML, not a PubmedArticleSet). The
whole file is then a dead letter: the caller must drop every item it already had from it (in
Beam: key the items by source file and filter out the failed files, a small side input).
Parsing it twice, once to check and once to yield, would cost twice the CPU for a rare case.

Pure and Beam-free: the enrich pipeline wraps it.
"""

from __future__ import annotations

import gzip
import posixpath
import re
import zlib
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from lxml import etree

from transforms.records import PubmedDeletion, PubmedRecord
from transforms.storage import S3Config, StorageError, open_stream

ARTICLE_SET = "PubmedArticleSet"
ARTICLE = "PubmedArticle"
DELETE = "DeleteCitation"

_MONTHS = {
    m: n
    for n, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}
_FILE_NUMBER = re.compile(r"pubmed(\d+)n(\d+)", re.IGNORECASE)
# Reads of this size keep the gzip and XML layers' per-call overhead small.
_READ_SIZE = 1 << 20
# XML read without a record or deletion ending: past this, one element is no MEDLINE record
# (the largest real ones, thousands of authors, are a few MB) and would hold its whole tree.
MAX_RECORD_BYTES = 32 << 20


class MedlineError(Exception):
    """A MEDLINE file that cannot be read to its end: the whole file is a dead letter."""

    def __init__(self, source_file: str, reason: str, detail: str = ""):
        super().__init__(f"{source_file}: {reason}" + (f": {detail}" if detail else ""))
        self.source_file = source_file
        # unreadable | gzip_corrupt | xml_malformed | not_medline | record_too_large
        self.reason = reason
        self.detail = detail


def file_order_key(name: str) -> tuple:
    """Where a MEDLINE file stands in PubMed's sequence: by release year, then file number
    (`pubmed25n1275` after `pubmed25n0001`, and after every `pubmed24n*`). Names without
    that pattern sort by plain name, before every NLM-named file."""
    base = posixpath.basename(name)
    found = _FILE_NUMBER.search(base)
    if found is None:
        return (0, 0, 0, base)
    return (1, int(found.group(1)), int(found.group(2)), base)


def latest(
    versions: Iterable[PubmedRecord | PubmedDeletion],
) -> PubmedRecord | PubmedDeletion | None:
    """The version of one PMID that stands: the highest PMID version (a versioned citation's
    current one), then the one from the latest file (`file_order_key`), and in one file the
    later element. A `PubmedDeletion` returned means the PMID was deleted; None means no
    versions. The order is total, so any grouping order gives the same answer."""
    return max(
        versions,
        key=lambda v: (
            v.pmid_version,
            file_order_key(v.source_file),
            v.source_position,
            isinstance(v, PubmedDeletion),
            repr(v),  # the same file given twice: still one answer
        ),
        default=None,
    )


def _text(element) -> str:
    # The DTD gives these elements text only; `itertext` covers a stray inline element.
    text = "".join(element.itertext()) if len(element) else element.text
    return text.strip() if text else ""


def _version(pmid) -> int:
    version = pmid.get("Version", "1")
    return int(version) if version.isdigit() else 1


def _date(element) -> str:
    year = month = day = ""
    for part in element.iterchildren("Year", "Month", "Day"):
        tag = part.tag
        if tag == "Year":
            year = _text(part)
        elif tag == "Month":
            month = _text(part)
        else:
            day = _text(part)
    if not year.isdigit():
        return ""
    month = int(month) if month.isdigit() else _MONTHS.get(month[:3].lower(), 0)
    if not 1 <= month <= 12:
        return year
    if not day.isdigit() or not 1 <= int(day) <= 31:
        return f"{year}-{month:02d}"
    return f"{year}-{month:02d}-{int(day):02d}"


def _mesh(headings, record: PubmedRecord) -> None:
    # One pass over the names, no MeshHeading objects: a heading is a DescriptorName
    # followed by its QualifierNames (the DTD's order).
    name = ui = ""
    major = False
    for part in headings.iter("DescriptorName", "QualifierName"):
        text = _text(part)
        if part.tag == "DescriptorName":
            if major:
                record.mesh_major_topics.append(name)
            name, ui = text, part.get("UI", "")
            major = part.get("MajorTopicYN") == "Y"
            record.article_mesh_terms.append(name)
            record.mesh_descriptor_ids.append(ui)
        else:
            record.mesh_qualifiers.append(f"{name}/{text}")
            record.mesh_qualifier_ids.append(f"{ui}/{part.get('UI', '')}")
            major = major or part.get("MajorTopicYN") == "Y"
    if major:
        record.mesh_major_topics.append(name)


_CITATION_PARTS = ("PMID", "DateRevised", "MeshHeadingList", "ChemicalList", "Article")


def _record(article, source_file: str, position: int) -> PubmedRecord | None:
    # Only the children needed, found in C (`iterchildren` by tag), and no path searches:
    # this runs 36 million times over PubMed.
    citation = next(article.iterchildren("MedlineCitation"), None)
    if citation is None:
        return None
    record = PubmedRecord(pmid="", source_file=source_file, source_position=position)
    for child in citation.iterchildren(*_CITATION_PARTS):
        tag = child.tag
        if tag == "PMID":
            # MedlineCitation/PMID only: PMIDs also appear in comments and references.
            record.pmid = _text(child)
            record.pmid_version = _version(child)
        elif tag == "DateRevised":
            record.date_revised = _date(child)
        elif tag == "MeshHeadingList":
            _mesh(child, record)
        elif tag == "ChemicalList":
            record.chemicals = [_text(name) for name in child.iter("NameOfSubstance")]
        else:
            for types in child.iterchildren("PublicationTypeList"):
                record.publication_types = [_text(t) for t in types.iterchildren("PublicationType")]
    return record if record.pmid else None


def parse_medline(stream: BinaryIO, source_file: str) -> Iterator[PubmedRecord | PubmedDeletion]:
    """The records and deletions of one (decompressed) MEDLINE XML stream, in file order.

    Memory stays flat: each element is dropped, with the ones before it, once read. A
    `<PubmedArticle>` without MedlineCitation/PMID cannot be keyed and is skipped. Raises
    `MedlineError` where the stream turns out unreadable; see the module's contract.
    """
    counted = _Counted(stream)
    events = etree.iterparse(
        counted,
        events=("end",),
        tag=(ARTICLE, DELETE),
        remove_blank_text=True,
        remove_comments=True,
        remove_pis=True,
        resolve_entities=False,  # no external entities, and the DTD is never fetched
        no_network=True,
        collect_ids=False,
    )
    position = 0
    try:
        for _, element in events:
            counted.mark = counted.total
            parent = element.getparent()
            if parent is None or parent.getparent() is not None:
                # Not a child of the document's root (wrapped in something else): no record
                # of this file, as E-utilities' reader (eutils.split_records) sees it too.
                element.clear(keep_tail=False)
                continue
            if element.tag == ARTICLE:
                record = _record(element, source_file, position)
                if record is not None:
                    yield record
            else:
                for pmid in element.iterchildren("PMID"):
                    if _text(pmid):
                        yield PubmedDeletion(_text(pmid), _version(pmid), source_file, position)
            position += 1
            element.clear(keep_tail=False)
            while element.getprevious() is not None:
                del parent[0]
        root = events.root
    except _RecordTooLarge:
        raise MedlineError(
            source_file,
            "record_too_large",
            f"over {MAX_RECORD_BYTES} bytes of XML without a record ending",
        ) from None
    except etree.XMLSyntaxError as err:
        raise MedlineError(source_file, "xml_malformed", str(err)) from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise MedlineError(source_file, "gzip_corrupt", f"{type(err).__name__}: {err}") from None
    except (OSError, StorageError) as err:
        raise MedlineError(source_file, "unreadable", f"{type(err).__name__}: {err}") from None
    if root is None or root.tag != ARTICLE_SET:
        tag = "nothing" if root is None else f"<{root.tag}>"
        raise MedlineError(source_file, "not_medline", f"{tag} where {ARTICLE_SET} belongs")


def open_medline(uri: str, s3: S3Config = S3Config()) -> BinaryIO:
    """A forward-only stream of a MEDLINE file's XML (local, gs://, s3://), decompressed as
    it is read where the name ends in .gz. Closing it closes the underlying stream."""
    raw = open_stream(uri, s3)
    if not uri.lower().endswith(".gz"):
        return raw
    return _GzipStream(raw)


class _GzipStream(gzip.GzipFile):
    """gzip over a storage stream, closing that stream too (GzipFile leaves it open)."""

    def __init__(self, raw):
        super().__init__(fileobj=raw, mode="rb")
        self._raw = raw

    def close(self):
        try:
            super().close()
        finally:
            self._raw.close()


def read_medline(uri: str, s3: S3Config = S3Config()) -> Iterator[PubmedRecord | PubmedDeletion]:
    """`parse_medline` of the file at `uri`, named by its base name; `MedlineError` also where
    the file cannot be opened. Same contract: on error, drop what it yielded."""
    name = posixpath.basename(uri.rstrip("/"))
    try:
        stream = open_medline(uri, s3)
    except StorageError as err:
        raise MedlineError(name, "unreadable", str(err)) from None
    with stream:
        yield from parse_medline(_Chunked(stream), name)


class _RecordTooLarge(Exception):
    pass


class _Counted:
    """The stream, counting what the parser read; refuses to read on past MAX_RECORD_BYTES
    since the last element ended (`mark`)."""

    def __init__(self, stream):
        self._stream = stream
        self.total = self.mark = 0

    def read(self, size: int = -1) -> bytes:
        if self.total - self.mark > MAX_RECORD_BYTES:
            raise _RecordTooLarge
        data = self._stream.read(size)
        self.total += len(data)
        return data


class _Chunked:
    """Large reads for the XML parser (lxml asks for 32 KiB at a time)."""

    def __init__(self, stream):
        self._stream = stream

    def read(self, size: int = -1) -> bytes:
        return self._stream.read(max(size, _READ_SIZE) if size and size > 0 else size)
