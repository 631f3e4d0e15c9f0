"""The PMC Cloud Service layout (AWS Open Data `pmc-oa-opendata`): keys, metadata, inventory.

Pure and Beam-free. One folder per article version, `PMC<id>.<ver>/`, with the JATS XML and
the media files by their own names; `metadata/PMC<id>.<ver>.json` per version; and a daily S3
inventory of `metadata/` under `inventory-reports/`.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from transforms import storage
from transforms.errors import Rejected
from transforms.records import ArticleRef

BUCKET = "pmc-oa-opendata"
METADATA_PREFIX = "metadata/"
INVENTORY_PREFIX = "inventory-reports/pmc-oa-opendata/metadata/"

_VERSION_KEY = re.compile(r"(?:^|/)(PMC\d+)\.(\d+)\.json$")
_FOLDER = re.compile(r"PMC\d+\.\d+")
_PLAIN_NAME = re.compile(r"[^/\\%\x00-\x1f\x7f]+")


class MetadataError(Rejected):
    """Metadata (JSON, inventory) that cannot be read."""


def parse_version_key(key: str) -> tuple[str, int] | None:
    """("PMC123", 2) for `metadata/PMC123.2.json`; None for any other key."""
    match = _VERSION_KEY.search(key)
    return (match.group(1), int(match.group(2))) if match else None


def _relative(url: str) -> tuple[str, str] | None:
    """("PMC123.2", "gr1.jpg") from an s3:// or https:// url of the bucket (any host or
    bucket: only this relative part is read, under the run's own root).

    None unless the path ends in `PMC<id>.<ver>/<name>` with a plain name: no `.` or `..`
    segment anywhere, no backslash, no percent-encoded slash or dot trick, no control bytes.
    """
    path = unquote(urlsplit(url).path)  # the query (?md5=...) and fragment are dropped
    parts = path.split("/")
    if len(parts) < 2 or any(p in (".", "..") for p in parts):
        return None
    folder, name = parts[-2], parts[-1]
    if not _FOLDER.fullmatch(folder) or not _PLAIN_NAME.fullmatch(name) or name.strip(".") == "":
        return None
    return folder, name


def _own_file(field: str, url: str, folder: str) -> str:
    """The file name a url names in the version's own folder; MetadataError if it lies
    anywhere else: a version never reads another article's (or version's) files."""
    rel = _relative(url)
    if rel is None or rel[0] != folder:
        raise MetadataError(
            "metadata_url_outside_folder", f"{field} {url[:300]!r} is not a file of {folder}/"
        )
    return rel[1]


@dataclass
class VersionMetadata:
    ref: ArticleRef
    is_open_access: bool
    is_manuscript: bool
    title: str


# The longest value a metadata field may hold. Ids, codes and dates are short, titles and
# citations a few hundred characters; a longer value is not real metadata, and a cut one would
# ship in every sample of the article silently.
MAX_FIELD_CHARS = 1024
_FIELD_LIMITS = {"title": 8192, "citation": 8192, "xml_url": 4096, "text_url": 4096,
                 "pdf_url": 4096, "media_urls": 4096}  # fmt: skip
MAX_MEDIA_URLS = 10_000
_TEXT_FIELDS = ("pmcid", "pmid", "doi", "mid", "title", "citation", "license_code", "xml_url",
                "text_url", "pdf_url")  # fmt: skip
_FLAG_FIELDS = ("is_pmc_openaccess", "is_manuscript", "is_historical_ocr", "is_retracted")


def _check_fields(record: dict) -> None:
    """MetadataError naming the first field of the wrong type or over its length bound."""

    def text(name: str, value) -> None:
        if isinstance(value, int) and not isinstance(value, bool) and name in ("pmid", "mid"):
            value = str(value)  # PMC writes numeric ids as JSON numbers
        if not isinstance(value, str):
            raise MetadataError("metadata_invalid", f"field {name}: {_kind(value)}, not a string")
        limit = _FIELD_LIMITS.get(name, MAX_FIELD_CHARS)
        if len(value) > limit:
            raise MetadataError(
                "metadata_invalid", f"field {name}: {len(value)} characters > limit {limit}"
            )

    for name in _TEXT_FIELDS:
        if record.get(name) is not None:
            text(name, record[name])
    version = record.get("version")
    if isinstance(version, bool) or not isinstance(version, (int, str)):
        raise MetadataError("metadata_invalid", f"field version: {_kind(version)}, not an integer")
    text("version", str(version))
    for name in _FLAG_FIELDS:
        if record.get(name) is not None and not isinstance(record[name], bool):
            raise MetadataError(
                "metadata_invalid", f"field {name}: {_kind(record[name])}, not true or false"
            )
    urls = record.get("media_urls")
    if urls is None:
        return
    if not isinstance(urls, list):
        raise MetadataError("metadata_invalid", f"field media_urls: {_kind(urls)}, not a list")
    if len(urls) > MAX_MEDIA_URLS:
        raise MetadataError(
            "metadata_invalid", f"field media_urls: {len(urls)} entries > limit {MAX_MEDIA_URLS}"
        )
    for url in urls:
        text("media_urls", url)


def _kind(value) -> str:
    return "null" if value is None else type(value).__name__


def parse_metadata(
    data: bytes, root: str, metadata_uri: str, last_modified: str = ""
) -> VersionMetadata:
    """An ArticleRef from one metadata JSON; article files are located under `root`.

    The JSON's own URLs name the bucket it was published in; only their relative part is
    kept, so a mirror, a local copy or a gs:// copy of the layout reads the same.
    """
    if not data or not data.strip():
        raise MetadataError("metadata_empty", "the metadata JSON is empty")
    try:
        record = json.loads(data.decode("utf-8-sig"))
    except ValueError as err:  # bad UTF-8, bad JSON, a number of thousands of digits
        raise MetadataError("metadata_invalid", f"{type(err).__name__}: {err}") from None
    if not isinstance(record, dict):
        raise MetadataError("metadata_invalid", "the metadata JSON is not an object")
    _check_fields(record)
    pmcid = str(record.get("pmcid") or "")
    if not re.fullmatch(r"PMC\d+", pmcid):
        raise MetadataError("metadata_invalid", f"pmcid {pmcid!r} is not PMC<digits>")
    try:
        version = int(record.get("version"))
    except (TypeError, ValueError):
        raise MetadataError("metadata_invalid", f"version {record.get('version')!r}") from None
    folder = f"{pmcid}.{version}"
    xml_url = str(record.get("xml_url") or "")
    xml_name = _own_file("xml_url", xml_url, folder) if xml_url else f"{folder}.xml"
    media = [_own_file("media_url", str(url), folder) for url in record.get("media_urls") or []]
    ref = ArticleRef(
        pmcid=pmcid,
        version=version,
        source_kind="pmc-cloud",
        location=storage.join(root, folder),
        xml_name=xml_name,
        media=tuple(media),
        pmid=str(record.get("pmid") or ""),
        doi=str(record.get("doi") or ""),
        citation=str(record.get("citation") or ""),
        license_code=str(record.get("license_code") or ""),
        retracted=bool(record.get("is_retracted")),
        last_modified=last_modified,
        metadata_uri=metadata_uri,
    )
    return VersionMetadata(
        ref=ref,
        is_open_access=record.get("is_pmc_openaccess", True) is not False,
        is_manuscript=bool(record.get("is_manuscript")),
        title=str(record.get("title") or ""),
    )


# ---- S3 inventory ---------------------------------------------------------------------


@dataclass(frozen=True)
class InventoryEntry:
    key: str
    last_modified: str  # ISO 8601 UTC


def latest_manifest(root: str, s3: storage.S3Config = storage.S3Config()) -> str:
    """URI of the newest `manifest.json` of the metadata inventory under a bucket root."""
    prefix = storage.join(root, INVENTORY_PREFIX)
    manifests = [f.uri for f in storage.list_prefix(prefix, s3) if f.uri.endswith("/manifest.json")]
    if not manifests:
        raise MetadataError("inventory_missing", f"no manifest.json under {prefix}")
    return max(manifests)


def manifest_data_files(manifest: bytes) -> tuple[list[str], list[str]]:
    """(data file keys, column names) of an S3 inventory manifest."""
    record = json.loads(manifest)
    if record.get("fileFormat", "CSV").upper() != "CSV":
        raise MetadataError("inventory_unsupported", f"fileFormat {record.get('fileFormat')}")
    columns = [c.strip() for c in record.get("fileSchema", "Bucket, Key").split(",")]
    return [f["key"] for f in record.get("files", [])], columns


def _iso_inventory_date(value: str) -> str:
    # "2024-03-05T10:00:00.000Z" -> "2024-03-05T10:00:00Z"
    return re.sub(r"\.\d+Z$", "Z", value.strip())


def inventory_entries(data: bytes, columns: list[str]) -> list[InventoryEntry]:
    """Rows of one inventory CSV.gz data file (no header, fields quoted, keys URL-encoded)."""
    from urllib.parse import unquote_plus

    text = gzip.decompress(data).decode("utf-8")
    key_at = columns.index("Key")
    date_at = columns.index("LastModifiedDate") if "LastModifiedDate" in columns else None
    entries = []
    for row in csv.reader(io.StringIO(text)):
        if len(row) <= key_at:
            continue
        modified = (
            _iso_inventory_date(row[date_at]) if date_at is not None and len(row) > date_at else ""
        )
        entries.append(InventoryEntry(unquote_plus(row[key_at]), modified))
    return entries
