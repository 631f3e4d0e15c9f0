"""Legacy PMC archives users already hold: oa_package tar.gz files, oa_bulk XML packages,
and their file lists. Pure and Beam-free.

Packages are read as streams and never extracted to disk: a member with an absolute path or
`..` marks a tampered package and refuses the whole of it; a truncated archive keeps what was
read before the damage, and says so.
"""

from __future__ import annotations

import csv
import io
import posixpath
import re
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from transforms.errors import Rejected
from transforms.jats.media import IMAGE_EXTENSIONS

XML_EXTENSIONS = (".nxml", ".xml")
_PMCID = re.compile(r"PMC\d+")


class PackageError(Rejected):
    """A package that cannot be trusted or read at all."""


@dataclass
class FileListRow:
    path: str  # "oa_package/08/e0/PMC13900.tar.gz" or "PMC006xxxxxx/PMC6908519.xml"
    citation: str
    accession: str  # "PMC13900"
    last_updated: str
    pmid: str
    license_code: str
    retracted: bool


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def parse_file_list(data: bytes) -> list[FileListRow]:
    """Rows of an oa_file_list.csv or an oa_bulk *.filelist.csv, with or without header."""
    rows = list(csv.reader(io.StringIO(_decode(data))))
    if not rows:
        return []
    header = [c.strip().lower() for c in rows[0]]
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
    for row in rows[1:] if has_header else rows:
        if len(row) < 3 or not any(row):
            continue

        def get(i: int, row=row) -> str:
            return row[i].strip() if i < len(row) else ""

        accession = get(at_acc)
        match = _PMCID.search(accession) or _PMCID.search(get(at_path))
        if not match:
            continue
        out.append(
            FileListRow(
                path=get(at_path),
                citation=get(at_cite),
                accession=match.group(),
                last_updated=get(at_date),
                pmid=get(at_pmid),
                license_code=get(at_lic),
                retracted=get(at_retr).lower() in ("yes", "y", "true", "1", "retracted"),
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


@dataclass
class Package:
    """The members of one oa_package that matter: its XML and its images."""

    xml_name: str = ""
    xml: bytes | None = None
    media: dict[str, bytes] = field(default_factory=dict)
    truncated: str = ""  # why reading stopped early, "" when the archive is whole
    skipped: list[str] = field(default_factory=list)  # members not read (pdf, supplements)


_READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError)


def read_package(stream, max_member_bytes: int = 256 * 1024 * 1024) -> Package:
    """Read an oa_package tar.gz stream; PackageError if it cannot be trusted or read at all."""
    package = Package()
    seen_any = False
    try:
        with tarfile.open(fileobj=stream, mode="r|gz") as archive:
            for member in archive:
                seen_any = True
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
                    wanted = True
                elif lower.endswith(IMAGE_EXTENSIONS):
                    wanted = True
                else:
                    wanted = False
                if not wanted or member.size > max_member_bytes:
                    package.skipped.append(name)
                    continue
                handle = archive.extractfile(member)
                data = handle.read() if handle is not None else b""
                if len(data) != member.size:
                    raise EOFError(f"member {name} cut short")
                if lower.endswith(XML_EXTENSIONS) and package.xml is None:
                    package.xml_name, package.xml = name, data
                else:
                    package.media[name] = data
    except PackageError:
        raise
    except _READ_ERRORS as err:
        if not seen_any:
            raise PackageError("archive_unreadable", f"{type(err).__name__}: {err}") from None
        package.truncated = f"{type(err).__name__}: {err}"
    if not seen_any:
        raise PackageError("archive_empty", "the archive holds no members")
    return package


def iter_bulk_xml(stream) -> Iterator[tuple[str, bytes | None, str]]:
    """(member path, XML bytes, error) for each XML of an oa_bulk package, in archive order.

    A damaged archive ends with one (path-or-"", None, reason) item.
    """
    try:
        with tarfile.open(fileobj=stream, mode="r|gz") as archive:
            for member in archive:
                if _unsafe(member.name):
                    yield member.name, None, "unsafe_member_path"
                    continue
                if not member.isfile() or not member.name.lower().endswith(XML_EXTENSIONS):
                    continue
                handle = archive.extractfile(member)
                data = handle.read() if handle is not None else b""
                if len(data) != member.size:
                    raise EOFError(f"member {member.name} cut short")
                yield member.name, data, ""
    except _READ_ERRORS as err:
        yield "", None, f"archive_truncated: {type(err).__name__}: {err}"
