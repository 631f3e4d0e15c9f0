"""Legacy PMC archives users already hold: oa_package tar.gz files, oa_bulk XML packages,
and their file lists. Pure and Beam-free.

Packages are read as streams and never extracted to disk: a member with an absolute path or
`..` marks a tampered package and refuses the whole of it; a truncated archive keeps what was
read before the damage, and says so.
"""

from __future__ import annotations

import csv
import gzip
import io
import posixpath
import re
import tarfile
import tempfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from transforms.errors import Rejected
from transforms.jats.media import IMAGE_EXTENSIONS

XML_EXTENSIONS = (".nxml", ".xml")
_PMCID = re.compile(r"PMC\d+")


class PackageError(Rejected):
    """A package that cannot be trusted or read at all."""


# The longest value a file-list field may hold. Real citations run to a few hundred
# characters and every other field is an id, a date or a code; a longer value is not a real
# row, and cutting it would ship a wrong value silently.
MAX_CITATION_CHARS = 4096
MAX_FIELD_CHARS = 1024


@dataclass
class FileListRow:
    path: str  # "oa_package/08/e0/PMC13900.tar.gz" or "PMC006xxxxxx/PMC6908519.xml"
    citation: str
    accession: str  # "PMC13900"
    last_updated: str
    pmid: str
    license_code: str
    retracted: bool
    invalid: str = ""  # why this row cannot be trusted (its article is a dead letter), or ""


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


class _Lines:
    """The lines of a text, remembering the last one handed out (to name a row csv refused)."""

    def __init__(self, text: str):
        self._lines = iter(io.StringIO(text))
        self.last = ""

    def __iter__(self):
        return self

    def __next__(self) -> str:
        self.last = next(self._lines)
        return self.last


def _csv_rows(text: str) -> Iterator[tuple[list[str] | None, str]]:
    """(row, "") per CSV row, or (None, why) for a row the csv module refuses (a field over
    its own 128 KiB bound), with the rest of the file still read."""
    lines = _Lines(text)
    reader = csv.reader(lines)
    while True:
        try:
            yield next(reader), ""
        except StopIteration:
            return
        except csv.Error as err:
            match = _PMCID.search(lines.last)
            yield None, f"{match.group() if match else ''}: {err}"


def _field_limit(name: str) -> int:
    return MAX_CITATION_CHARS if name == "citation" else MAX_FIELD_CHARS


def parse_file_list(data: bytes) -> list[FileListRow]:
    """Rows of an oa_file_list.csv or an oa_bulk *.filelist.csv, with or without header.

    A row with a field over its bound comes back with `invalid` set, never cut short.
    """
    rows = list(_csv_rows(_decode(data)))
    if not rows:
        return []
    header = [c.strip().lower() for c in rows[0][0] or []]
    has_header = any(h.startswith(("file", "article file", "accession")) for h in header)
    names = header if has_header else []

    def col(options: tuple[str, ...], default: int) -> int:
        for i, name in enumerate(names):
            if name.startswith(options):
                return i
        return default

    at_path = col(("file", "article file"), 0)
    at_cite = col(("article citation",), 1)
    at_acc = col(("accession",), 2)
    at_date = col(("last updated", "lastupdated"), 3)
    at_pmid = col(("pmid",), 4)
    at_lic = col(("license",), 5)
    at_retr = col(("retracted",), 6)
    out = []
    for row, refused in rows[1:] if has_header else rows:
        if row is None:
            accession, _, why = refused.partition(": ")
            if accession:
                out.append(FileListRow("", "", accession, "", "", "", False, f"row: {why}"))
            continue
        if len(row) < 3 or not any(row):
            continue

        def get(i: int, row=row) -> str:
            return row[i].strip() if i < len(row) else ""

        accession = get(at_acc)
        match = _PMCID.search(accession) or _PMCID.search(get(at_path))
        if not match:
            continue
        fields = {
            "path": get(at_path),
            "citation": get(at_cite),
            "last_updated": get(at_date),
            "pmid": get(at_pmid),
            "license_code": get(at_lic),
        }
        retracted = get(at_retr)
        invalid = [
            f"field {name}: {len(value)} characters > limit {_field_limit(name)}"
            for name, value in [*fields.items(), ("accession", accession), ("retracted", retracted)]
            if len(value) > _field_limit(name)
        ]
        if invalid:  # nothing of it is used: carry only what names the article
            out.append(FileListRow("", "", match.group(), "", "", "", False, "; ".join(invalid)))
            continue
        out.append(
            FileListRow(
                **fields,
                accession=match.group(),
                retracted=retracted.lower() in ("yes", "y", "true", "1", "retracted"),
            )
        )
    return out


def pmcid_from_path(path: str) -> str:
    match = _PMCID.search(posixpath.basename(path))
    return match.group() if match else ""


def _unsafe(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    return (
        name.startswith(("/", "\\")) or ".." in parts or re.match(r"^[A-Za-z]:", name) is not None
    )


# Bounds on what one package may cost. Real oa_packages run from kilobytes to a few hundred
# MB (video supplements); every byte of a tar.gz must be decompressed to reach the next member,
# so the total is what bounds the time a package takes (1 GiB: a few seconds of zlib).
DEFAULT_MAX_ARCHIVE_BYTES = 1 << 30
DEFAULT_MAX_XML_BYTES = 64 << 20  # = jats.parse's bound
DEFAULT_MAX_IMAGE_BYTES = 64 << 20  # = images.checks' bound
# Every member costs a name held and looked at by each figure's href; real packages have at
# most a few hundred. Past this a package of empty members is refused, however small.
MAX_MEMBERS = 20_000
_CHUNK = 1 << 20


class MemberTooLarge(Exception):
    """A package member over its size bound: it was counted, never read."""

    def __init__(self, name: str, size: int, limit: int):
        super().__init__(f"{name}: {size} bytes > limit {limit}")
        self.name, self.size, self.limit = name, size, limit


class _ArchiveTooLarge(Exception):
    pass


class _BoundedTar(io.RawIOBase):
    """The uncompressed tar inside a gzip stream; _ArchiveTooLarge past `limit` bytes.

    Decompressing here (rather than tarfile's "r|gz") counts every byte, those of the
    members tarfile skips included.
    """

    def __init__(self, raw, limit: int | None):
        self._gzip = gzip.GzipFile(fileobj=raw, mode="rb")
        self.limit, self.count = limit, 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self.limit is not None:
            left = self.limit - self.count + 1  # one byte past the limit proves it is passed
            size = left if size is None or size < 0 else min(size, left)
        data = self._gzip.read(size)
        self.count += len(data)
        if self.limit is not None and self.count > self.limit:
            raise _ArchiveTooLarge()
        return data


class _Spilled(Mapping):
    """Image members by name, spilled to an unlinked temporary file: a package's images are
    held on disk, and one is read into memory only when a figure asks for it by name."""

    def __init__(self):
        self._file = None
        self._at: dict[str, tuple[int, int]] = {}  # name -> (offset, size) in the file
        self.too_large: dict[str, MemberTooLarge] = {}

    def add(self, name: str, handle, size: int) -> None:
        """Copy a member in pieces; EOFError if the archive ends inside it."""
        if self._file is None:
            self._file = tempfile.TemporaryFile()  # deleted when closed or collected
        offset = self._file.seek(0, io.SEEK_END)
        copied = 0
        while chunk := handle.read(_CHUNK):
            self._file.write(chunk)
            copied += len(chunk)
        if copied != size:
            raise EOFError(f"member {name} cut short")
        self.too_large.pop(name, None)
        self._at[name] = (offset, size)

    def refuse(self, error: MemberTooLarge) -> None:
        self._at.pop(error.name, None)
        self.too_large[error.name] = error

    def __getitem__(self, name: str) -> bytes:
        if name in self.too_large:
            raise self.too_large[name]
        offset, size = self._at[name]
        self._file.seek(offset)
        return self._file.read(size)

    def __iter__(self):
        return iter(sorted({*self._at, *self.too_large}))

    def __len__(self) -> int:
        return len({*self._at, *self.too_large})

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


@dataclass
class Package:
    """The members of one oa_package that matter: its XML and its images.

    `media` maps each image member's name to its bytes, read on access: members the XML
    does not use are never held in memory. One over the image bound raises MemberTooLarge.
    """

    xml_name: str = ""
    xml: bytes | None = None
    media: _Spilled = field(default_factory=_Spilled)
    truncated: str = ""  # why reading stopped early, "" when the archive is whole
    skipped: list[str] = field(default_factory=list)  # members not read (pdf, supplements)

    def close(self) -> None:
        self.media.close()


_READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError)


def read_package(
    stream,
    max_archive_bytes: int = DEFAULT_MAX_ARCHIVE_BYTES,
    max_xml_bytes: int = DEFAULT_MAX_XML_BYTES,
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
) -> Package:
    """Read an oa_package tar.gz stream; PackageError if it cannot be trusted or read at all.

    At most `max_archive_bytes` uncompressed bytes are read (`archive_too_large` past them);
    an XML or image member over its own bound is counted, not read.
    """
    package = Package()
    seen_any = False
    xml_too_large: MemberTooLarge | None = None
    try:
        with tarfile.open(fileobj=_BoundedTar(stream, max_archive_bytes), mode="r|") as archive:
            for count, member in enumerate(archive, 1):
                seen_any = True
                if count > MAX_MEMBERS:
                    raise PackageError(
                        "archive_too_large",
                        f"more than {MAX_MEMBERS} members (limit {MAX_MEMBERS})",
                    )
                if _unsafe(member.name):
                    raise PackageError("unsafe_member_path", f"member {member.name!r}")
                if member.issym() or member.islnk():
                    if _unsafe(member.linkname) or member.linkname.startswith("/"):
                        raise PackageError(
                            "unsafe_member_path", f"link {member.name!r} -> {member.linkname!r}"
                        )
                    continue
                if not member.isfile():
                    continue
                name = posixpath.basename(member.name)
                lower = name.lower()
                if lower.endswith(XML_EXTENSIONS) and package.xml is None:
                    if member.size > max_xml_bytes:
                        xml_too_large = MemberTooLarge(name, member.size, max_xml_bytes)
                        package.skipped.append(name)
                        continue
                    handle = archive.extractfile(member)
                    data = handle.read() if handle is not None else b""
                    if len(data) != member.size:
                        raise EOFError(f"member {name} cut short")
                    package.xml_name, package.xml = name, data
                elif lower.endswith(IMAGE_EXTENSIONS):
                    if member.size > max_image_bytes:
                        package.media.refuse(MemberTooLarge(name, member.size, max_image_bytes))
                        continue
                    package.media.add(name, archive.extractfile(member), member.size)
                else:
                    package.skipped.append(name)
    except PackageError:
        package.close()
        raise
    except _ArchiveTooLarge:
        package.close()
        raise PackageError(
            "archive_too_large",
            f"more than {max_archive_bytes} uncompressed bytes (limit {max_archive_bytes})",
        ) from None
    except _READ_ERRORS as err:
        if not seen_any:
            package.close()
            raise PackageError("archive_unreadable", f"{type(err).__name__}: {err}") from None
        package.truncated = f"{type(err).__name__}: {err}"
    if not seen_any:
        raise PackageError("archive_empty", "the archive holds no members")
    if package.xml is None and xml_too_large is not None:
        package.close()
        raise PackageError("xml_too_large", str(xml_too_large))
    return package


def iter_bulk_xml(
    stream, max_xml_bytes: int = DEFAULT_MAX_XML_BYTES
) -> Iterator[tuple[str, bytes | None, str]]:
    """(member path, XML bytes, error) for each XML of an oa_bulk package, in archive order.

    An XML member over `max_xml_bytes` is counted, not read (`xml_too_large`). A damaged
    archive ends with one (path-or-"", None, reason) item.
    """
    try:
        with tarfile.open(fileobj=_BoundedTar(stream, None), mode="r|") as archive:
            for member in archive:
                if _unsafe(member.name):
                    yield member.name, None, "unsafe_member_path"
                    continue
                if not member.isfile() or not member.name.lower().endswith(XML_EXTENSIONS):
                    continue
                if member.size > max_xml_bytes:
                    too_large = MemberTooLarge(member.name, member.size, max_xml_bytes)
                    yield member.name, None, f"xml_too_large: {too_large}"
                    continue
                handle = archive.extractfile(member)
                data = handle.read() if handle is not None else b""
                if len(data) != member.size:
                    raise EOFError(f"member {member.name} cut short")
                yield member.name, data, ""
    except _READ_ERRORS as err:
        yield "", None, f"archive_truncated: {type(err).__name__}: {err}"
