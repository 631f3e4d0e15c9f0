"""Discover stage: list the article versions of a source, select the ones a run wants.

Sources (DESIGN.md §2): the PMC Cloud layout (S3 bucket, mirror, local or gs:// copy) from
its metadata listing or its S3 inventory; legacy oa_package tar.gz files joined with an
oa_file_list.csv; oa_bulk XML packages with their *.filelist.csv; and a plain folder of
article folders. Each emits ArticleRefs, plus dead letters and filter reasons as data.
"""

from __future__ import annotations

import argparse
import posixpath
import re
from dataclasses import dataclass, field

import apache_beam as beam

from transforms import storage
from transforms.jats.media import IMAGE_EXTENSIONS
from transforms.outcomes import DEAD, FILTERED, LISTED, NOTED, dead, filtered, listed, noted
from transforms.pmc import cloud, legacy
from transforms.pmc.selection import Copy, Selection, choose_copies
from transforms.records import ArticleRef, Filtered

STAGE = "discover"
LAYOUTS = ("auto", "pmc-cloud", "oa-package", "oa-bulk", "folder")
_BULK_NAME = re.compile(r"oa_\w+_xml\.", re.I)


_PACKAGE_SUFFIXES = (".tar.gz", ".tgz")
_PROBE = 2000  # names the launcher looks at to name a layout


def _is_pattern(source: str) -> bool:
    return source.endswith(_PACKAGE_SUFFIXES) or any(c in source for c in "*?[")


def _layout_of_file(name: str) -> str:
    """The layout a file belongs to by its name ("" for files no layout reads by name)."""
    lower = name.lower()
    if lower.endswith(_PACKAGE_SUFFIXES):
        return "oa-bulk" if _BULK_NAME.search(name) else "oa-package"
    # Images belong to article folders too: beside packages, a folder of images without its
    # XML must show (counted, or refused by auto) rather than vanish.
    if lower.endswith(legacy.XML_EXTENSIONS) or lower.endswith(IMAGE_EXTENSIONS):
        return "folder"
    return ""


def detect_layout(source: str, s3: storage.S3Config) -> str:
    """Name the layout of a source from a few listed names (the launcher does this once).

    A source whose first names hold files of several layouts is refused (SystemExit): auto
    would read one layout and skip the others.
    """
    if _is_pattern(source):
        return "oa-bulk" if _BULK_NAME.search(posixpath.basename(source)) else "oa-package"
    for info in _listed(storage.join(source, "metadata/"), s3, 1):
        if info.uri.endswith(".json"):
            return "pmc-cloud"
    examples: dict[str, str] = {}
    for info in _listed(source, s3, _PROBE):
        layout = _layout_of_file(posixpath.basename(info.uri))
        if layout:
            examples.setdefault(layout, info.uri)
    if len(examples) > 1:
        found = "; ".join(f"{kind} files (e.g. {uri})" for kind, uri in sorted(examples.items()))
        raise SystemExit(
            f"biomedica extract: --source {source} holds {found}; --layout auto would read one "
            f"and skip the others: pass --layout {' or --layout '.join(sorted(examples))} "
            "(files of another layout are then counted as filtered other_layout)"
        )
    return next(iter(examples), "folder")


def source_is_empty(source: str, layout: str, s3: storage.S3Config, inventory: str = "") -> bool:
    """True when a source lists no file at all (a path that does not exist, a glob matching
    nothing); cheap: one listed name at most."""
    if _is_pattern(source):
        return not storage.glob(source, s3)
    if layout == "pmc-cloud" and not inventory:
        source = storage.join(source, cloud.METADATA_PREFIX)
    elif inventory:
        return False  # the inventory says what there is; an empty one shows in the report
    return not _listed(source, s3, 1)


def _listed(prefix: str, s3: storage.S3Config, n: int) -> list[storage.FileInfo]:
    """The first n files under a folder, listing no more than that where the store allows."""
    if "://" in prefix and not storage.is_s3(prefix):
        from apache_beam.io.filesystems import FileSystems

        storage._gcs(prefix)  # an emulator without credentials, as every storage call does
        pattern = prefix.rstrip("/") + "/**"
        found = FileSystems.match([pattern], limits=[n])[0].metadata_list
        return [storage.FileInfo(m.path, m.size_in_bytes, "") for m in found]
    return list(_first(storage.list_prefix(prefix, s3), n))


def _first(iterator, n):
    for i, item in enumerate(iterator):
        if i >= n:
            return
        yield item


def source_files(source: str, s3: storage.S3Config):
    """(tar.gz packages, files of another layout) of a package source, in listed order."""
    if _is_pattern(source):
        return storage.glob(source, s3), []
    packages, others = [], []
    for info in storage.list_prefix(source, s3):
        layout = _layout_of_file(posixpath.basename(info.uri))
        if layout in ("oa-package", "oa-bulk"):
            packages.append(info)
        elif layout:
            others.append(info)
    return packages, others


def _other_layout(info: storage.FileInfo, layout: str):
    """A file this layout does not read, counted (in and filtered) so that it shows."""
    yield listed(STAGE)
    name = posixpath.basename(info.uri)
    hint = _layout_of_file(name)
    yield filtered(
        STAGE,
        "other_layout",
        name,
        f"a {hint} file; --layout {layout} does not read it (pass --layout {hint})",
        info.uri,
    )


def _keep_one_copy(pmcid: str, refs, selection: Selection, all_versions: bool = False):
    """One ref per article version (see selection.choose_copies), then the run's selection;
    the other copies are filtered with where they lie and which copy was kept."""
    copies = [
        Copy(r.version, r.last_modified if r.source_kind == "oa-bulk" else "", _where(r), r)
        for r in refs
    ]
    kept, left_out = choose_copies(copies, all_versions)
    for copy, reason, winner in left_out:
        yield filtered(
            STAGE, reason, copy.item.key or copy.location, f"kept: {winner.location}", copy.location
        )
    for copy in kept:
        ref = copy.item
        reason = selection.reason(ref) if ref.pmcid else selection.date_reason(ref.last_modified)
        if reason:
            yield filtered(STAGE, reason, ref.key or copy.location, source=copy.location)
        else:
            yield ref


def _where(ref: ArticleRef) -> str:
    if ref.source_kind == "oa-bulk":
        return f"{ref.location}::{ref.xml_name}"
    if ref.source_kind == "folder":
        return storage.join(ref.location, ref.xml_name)
    return ref.location


# ---- PMC Cloud ------------------------------------------------------------------------


class _ListMetadata(beam.DoFn):
    """(pmcid, (version, metadata URI, last modified)) for each metadata JSON of a root."""

    def __init__(self, s3):
        self.s3 = s3

    def process(self, root):
        for info in storage.list_prefix(storage.join(root, cloud.METADATA_PREFIX), self.s3):
            yield from _version_entry(info.uri, info.last_modified)


def _version_entry(uri: str, last_modified: str):
    yield listed(STAGE)
    parsed = cloud.parse_version_key(uri)
    if parsed is None:
        yield dead(
            STAGE,
            posixpath.basename(uri),
            "listing_unrecognized_key",
            "not metadata/PMC<id>.<version>.json",
            uri,
        )
        return
    pmcid, version = parsed
    yield pmcid, (version, uri, last_modified)


class _InventoryDataFiles(beam.DoFn):
    def __init__(self, root, s3):
        self.root, self.s3 = root, s3

    def process(self, manifest_uri):
        data = storage.read_bytes(manifest_uri, self.s3)
        keys, columns = cloud.manifest_data_files(data)
        for key in keys:
            yield storage.join(self.root, key), columns


class _InventoryEntries(beam.DoFn):
    def __init__(self, root, s3):
        self.root, self.s3 = root, s3

    def process(self, item):
        uri, columns = item
        for entry in cloud.inventory_entries(storage.read_bytes(uri, self.s3), columns):
            if entry.key.startswith(cloud.METADATA_PREFIX):
                yield from _version_entry(storage.join(self.root, entry.key), entry.last_modified)


class _SelectVersions(beam.DoFn):
    """Latest version per article (unless all are wanted), inside the date window; a version
    listed twice is read once."""

    def __init__(self, selection: Selection, all_versions: bool):
        self.selection, self.all_versions = selection, all_versions

    def process(self, element):
        pmcid, versions = element
        copies = [Copy(v, modified, uri, (uri, modified)) for v, uri, modified in versions]
        kept, left_out = choose_copies(copies, self.all_versions)
        for copy, reason, winner in left_out:
            detail = f"kept: {pmcid}.{winner.version} ({winner.location})"
            yield filtered(STAGE, reason, f"{pmcid}.{copy.version}", detail, copy.location)
        for copy in sorted(kept, key=lambda c: c.version):
            uri, modified = copy.item
            reason = self.selection.date_reason(modified)
            if reason:
                yield filtered(STAGE, reason, f"{pmcid}.{copy.version}", source=uri)
                continue
            yield uri, modified


class _ReadMetadata(beam.DoFn):
    def __init__(self, root, s3, selection: Selection):
        self.root, self.s3, self.selection = root, s3, selection

    def process(self, item):
        uri, modified = item
        key = posixpath.basename(uri)
        try:
            meta = cloud.parse_metadata(
                storage.read_bytes(uri, self.s3, 16 << 20), self.root, uri, modified
            )
        except storage.StorageError as err:
            yield dead(STAGE, key, "metadata_unreadable", str(err), uri)
            return
        except cloud.MetadataError as err:
            yield dead(STAGE, key, err.reason, err.detail, uri)
            return
        expected = cloud.parse_version_key(uri)
        if expected and expected != (meta.ref.pmcid, meta.ref.version):
            yield dead(
                STAGE,
                key,
                "metadata_key_mismatch",
                f"file says {meta.ref.pmcid}.{meta.ref.version}",
                uri,
            )
            return
        reason = self.selection.reason(meta.ref, meta.is_open_access)
        if reason:
            yield filtered(STAGE, reason, meta.ref.key, source=uri)
            return
        yield meta.ref


# ---- legacy packages, bulk packages and folders -----------------------------------------


class _ListPackages(beam.DoFn):
    def __init__(self, s3):
        self.s3 = s3

    def process(self, source):
        packages, others = source_files(source, self.s3)
        for info in others:
            yield from _other_layout(info, "oa-package")
        for info in packages:
            yield listed(STAGE)
            pmcid = legacy.pmcid_from_path(info.uri)
            if not pmcid:
                yield dead(
                    STAGE,
                    posixpath.basename(info.uri),
                    "package_name_unrecognized",
                    "package file name holds no PMC id",
                    info.uri,
                )
                continue
            yield pmcid, info


class _ReadFileList(beam.DoFn):
    def __init__(self, s3):
        self.s3 = s3

    def process(self, uri):
        for row in legacy.parse_file_list(storage.read_bytes(uri, self.s3)):
            yield row.accession, row


class _JoinPackages(beam.DoFn):
    def __init__(self, selection: Selection, has_file_list: bool):
        self.selection, self.has_file_list = selection, has_file_list

    def process(self, element):
        pmcid, grouped = element
        rows = list(grouped["rows"])
        row = rows[-1] if rows else None
        warnings: tuple[str, ...] = ()
        if not self.has_file_list:
            warnings = ("no_file_list",)
        elif row is None:
            warnings = ("not_in_file_list",)
        refs = []
        for info in grouped["packages"]:
            if row and row.invalid:
                yield dead(STAGE, pmcid, "metadata_invalid", f"file list {row.invalid}", info.uri)
                continue
            if not self.has_file_list:
                yield noted(STAGE, "packages_without_file_list")
            elif row is None:
                yield noted(STAGE, "packages_not_in_file_list")
            refs.append(
                ArticleRef(
                    pmcid=pmcid,
                    version=None,
                    source_kind="oa-package",
                    location=info.uri,
                    pmid=row.pmid if row else "",
                    citation=row.citation if row else "",
                    license_code=row.license_code if row else "",
                    retracted=row.retracted if row else False,
                    last_modified=_file_list_time(row.last_updated) if row else info.last_modified,
                    warnings=warnings,
                )
            )
        yield from _keep_one_copy(pmcid, refs, self.selection)


def _file_list_time(value: str) -> str:
    match = re.fullmatch(r"(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2})", value.strip())
    return f"{match.group(1)}T{match.group(2)}Z" if match else ""


class _ReadBulkPackage(beam.DoFn):
    """Every XML of one oa_bulk package, joined with the package's own file list:
    (pmcid, ref) pairs, so that an article found in several packages is kept once."""

    def __init__(self, s3):
        self.s3 = s3

    def process(self, uri):
        rows = None
        list_uri = re.sub(r"\.tar\.gz$|\.tgz$", ".filelist.csv", uri)
        if list_uri != uri and storage.exists(list_uri, self.s3):
            rows = {
                r.accession: r
                for r in legacy.parse_file_list(storage.read_bytes(list_uri, self.s3))
            }
        else:
            yield noted(STAGE, "packages_without_file_list")
        try:
            stream = storage.open_stream(uri, self.s3)
        except storage.StorageError as err:
            yield listed(STAGE)
            yield dead(STAGE, posixpath.basename(uri), "archive_unreadable", str(err), uri)
            return
        with stream:
            for member, xml, error in legacy.iter_bulk_xml(stream):
                yield listed(STAGE)
                where = f"{uri}::{member}" if member else uri
                if error:
                    key = posixpath.basename(member or uri)
                    yield dead(STAGE, key, error.split(":")[0], error, where)
                    continue
                pmcid = legacy.pmcid_from_path(member)
                if not pmcid:
                    yield dead(
                        STAGE,
                        posixpath.basename(member),
                        "member_name_unrecognized",
                        "bulk member name holds no PMC id",
                        where,
                    )
                    continue
                row = rows.get(pmcid) if rows is not None else None
                if row and row.invalid:
                    yield dead(STAGE, pmcid, "metadata_invalid", f"file list {row.invalid}", where)
                    continue
                if rows is None:
                    warnings = ("no_file_list",)
                elif row is None:
                    warnings = ("not_in_file_list",)
                    yield noted(STAGE, "articles_not_in_file_list")
                else:
                    warnings = ()
                yield (
                    pmcid,
                    ArticleRef(
                        pmcid=pmcid,
                        version=None,
                        source_kind="oa-bulk",
                        location=uri,
                        xml_name=member,
                        xml=xml,
                        pmid=row.pmid if row else "",
                        citation=row.citation if row else "",
                        license_code=row.license_code if row else "",
                        retracted=row.retracted if row else False,
                        last_modified=_file_list_time(row.last_updated) if row else "",
                        warnings=warnings,
                    ),
                )


class _KeepOneCopy(beam.DoFn):
    def __init__(self, selection: Selection):
        self.selection = selection

    def process(self, element):
        pmcid, refs = element
        yield from _keep_one_copy(pmcid, list(refs), self.selection)


_VERSIONED_NAME = re.compile(r"(PMC\d+)(?:\.(\d+))?")


def _folder_refs(folder: str, files: list[storage.FileInfo]):
    """Refs of one article folder: one per XML file, each with all of the folder's images."""
    names = [posixpath.basename(f.uri) for f in files]
    xmls = sorted(n for n in names if n.lower().endswith(legacy.XML_EXTENSIONS))
    media = tuple(sorted(n for n in names if n.lower().endswith(IMAGE_EXTENSIONS)))
    folder_name = posixpath.basename(folder)
    modified = max(f.last_modified for f in files)
    for xml in xmls:
        stem = re.sub(r"\.(n?xml)$", "", xml, flags=re.I)
        # One XML: the folder names the article (PMC123 or PMC123.2); several: each file does.
        named = [folder_name, stem] if len(xmls) == 1 else [stem]
        pmcid, version = "", None
        for name in named:
            exact = _VERSIONED_NAME.fullmatch(name)
            found = exact or _VERSIONED_NAME.search(name)
            if found:
                pmcid = found.group(1)
                version = int(exact.group(2)) if exact and exact.group(2) else None
                break
        yield ArticleRef(
            pmcid=pmcid,
            version=version,
            source_kind="folder",
            location=folder,
            xml_name=xml,
            media=media,
            last_modified=modified,
            key_prefix="" if len(xmls) == 1 else f"{folder_name}_{stem}",
        )


class _ListFolders(beam.DoFn):
    """One ref per XML file of an article folder (the folder's images available to each);
    an article found in several folders (or as several versions) is kept once."""

    def __init__(self, s3, selection: Selection, all_versions: bool = False):
        self.s3, self.selection, self.all_versions = s3, selection, all_versions

    def process(self, root):
        folders: dict[str, list[storage.FileInfo]] = {}
        for info in storage.list_prefix(root, self.s3):
            folders.setdefault(posixpath.dirname(info.uri), []).append(info)
        by_article: dict[str, list[ArticleRef]] = {}
        for folder in sorted(folders):
            files = folders[folder]
            for info in files:
                if _layout_of_file(posixpath.basename(info.uri)) in ("oa-package", "oa-bulk"):
                    yield from _other_layout(info, "folder")
            refs = list(_folder_refs(folder, files))
            if not refs:
                names = [posixpath.basename(f.uri) for f in files]
                if any(n.lower().endswith(IMAGE_EXTENSIONS) for n in names):
                    yield listed(STAGE)
                    yield dead(
                        STAGE,
                        posixpath.basename(folder),
                        "xml_missing",
                        "article folder holds images but no XML",
                        folder,
                    )
                continue  # else not an article folder (e.g. the root holding only subfolders)
            for ref in refs:
                yield listed(STAGE)
                # No PMCID in any name: the XML says who it is; nothing to compare it with.
                by_article.setdefault(ref.pmcid or _where(ref), []).append(ref)
        for pmcid in sorted(by_article):
            yield from _keep_one_copy(pmcid, by_article[pmcid], self.selection, self.all_versions)


# ---- the stage ----------------------------------------------------------------------------


@dataclass
class Discover(beam.PTransform):
    """List and select article versions; outputs refs, dead letters, filter reasons, counts."""

    source: str
    layout: str = "auto"
    file_list: str = ""
    inventory: str = ""  # "" (list metadata/), "latest", or a manifest.json URI
    selection: Selection = field(default_factory=Selection)
    all_versions: bool = False
    s3: storage.S3Config = field(default_factory=storage.S3Config)
    allow_empty: bool = False  # the launcher's: a source with nothing in it is not an error

    def __post_init__(self):
        super().__init__()
        if self.layout not in LAYOUTS:
            raise ValueError(f"--layout must be one of {LAYOUTS}")
        if self.inventory and self.layout not in ("auto", "pmc-cloud"):
            raise ValueError("--inventory applies to the pmc-cloud layout only")

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("discover")
        group.add_argument(
            "--source",
            help="s3://bucket[/prefix], gs://..., a local path, or a glob of tar.gz",
        )
        group.add_argument(
            "--layout",
            default="auto",
            choices=LAYOUTS,
            help="how the source is laid out; auto names it from a few listed files and refuses"
            " a source that mixes layouts",
        )
        group.add_argument(
            "--file_list", default="", help="oa_file_list.csv for oa-package sources"
        )
        group.add_argument(
            "--inventory",
            default="",
            help="read the PMC Cloud S3 inventory: 'latest' or a manifest.json URI",
        )
        group.add_argument(
            "--license_groups",
            default="",
            help="comma list of commercial,noncommercial,other (default: all)",
        )
        group.add_argument(
            "--include_retracted", action="store_true", help="keep articles marked retracted"
        )
        group.add_argument(
            "--include_non_oa",
            action="store_true",
            help="keep versions PMC's metadata marks as not open access",
        )
        group.add_argument("--modified_since", default="", help="ISO date/time, inclusive")
        group.add_argument("--modified_before", default="", help="ISO date/time, exclusive")
        group.add_argument(
            "--pmcids", default="", help="comma list of PMC ids, or @file with one a line"
        )
        group.add_argument(
            "--all_versions",
            action="store_true",
            help="every version of an article, not only the latest",
        )
        group.add_argument(
            "--allow_empty",
            action="store_true",
            help="a source with nothing in it (or nothing selected) is not an error",
        )
        # --s3_endpoint_url (mirrors, local servers) is Beam's own S3Options flag.
        add_s3_anonymous(group)

    @classmethod
    def from_args(cls, args) -> Discover:
        s3 = s3_config(args)
        pmcids = _read_pmcids(args.pmcids, s3)
        selection = Selection(
            license_groups=tuple(g.strip() for g in args.license_groups.split(",") if g.strip()),
            include_retracted=args.include_retracted,
            include_non_oa=args.include_non_oa,
            modified_since=args.modified_since,
            modified_before=args.modified_before,
            pmcids=frozenset(pmcids),
        )
        layout = args.layout
        if layout == "auto":
            layout = "pmc-cloud" if args.inventory else detect_layout(args.source, s3)
        return cls(
            source=args.source,
            layout=layout,
            file_list=args.file_list,
            inventory=args.inventory,
            selection=selection,
            all_versions=args.all_versions,
            s3=s3,
            allow_empty=getattr(args, "allow_empty", False),
        )

    def expand(self, pbegin):
        p = pbegin.pipeline if hasattr(pbegin, "pipeline") else pbegin
        root = self.source.rstrip("/") if "://" in self.source else self.source
        start = p | "Source" >> beam.Create([root])
        tags = (DEAD, FILTERED, LISTED, NOTED)
        notes = ()
        if self.layout == "pmc-cloud":
            if self.inventory:
                manifest = (
                    cloud.latest_manifest(root, self.s3)
                    if self.inventory == "latest"
                    else self.inventory
                )
                entries = (
                    p
                    | "Manifest" >> beam.Create([manifest])
                    | "DataFiles" >> beam.ParDo(_InventoryDataFiles(root, self.s3))
                    | "SpreadDataFiles" >> beam.Reshuffle()
                    | "ReadInventory"
                    >> beam.ParDo(_InventoryEntries(root, self.s3)).with_outputs(
                        *tags, main="versions"
                    )
                )
            else:
                entries = start | "ListMetadata" >> beam.ParDo(_ListMetadata(self.s3)).with_outputs(
                    *tags, main="versions"
                )
            wanted = entries.versions | "RequestedIds" >> beam.Filter(_wanted, self.selection)
            not_wanted = (
                entries.versions
                | "OtherIds" >> beam.Filter(lambda kv, s: not _wanted(kv, s), self.selection)
                | "NotRequested" >> beam.Map(_not_requested)
            )
            selected = (
                wanted
                | "ByArticle" >> beam.GroupByKey()
                | "Versions"
                >> beam.ParDo(_SelectVersions(self.selection, self.all_versions)).with_outputs(
                    FILTERED, main="uris"
                )
            )
            read = (
                selected.uris
                | "SpreadMetadata" >> beam.Reshuffle()
                | "ReadMetadata"
                >> beam.ParDo(_ReadMetadata(root, self.s3, self.selection)).with_outputs(
                    DEAD, FILTERED, main="refs"
                )
            )
            refs = read.refs
            dead_letters = (entries[DEAD], read[DEAD])
            filters = (not_wanted, selected[FILTERED], read[FILTERED])
            listing = (entries[LISTED],)
            notes = (entries[NOTED],)
        elif self.layout == "oa-package":
            packages = start | "ListPackages" >> beam.ParDo(_ListPackages(self.s3)).with_outputs(
                *tags, main="packages"
            )
            rows = (
                p
                | "FileList" >> beam.Create([self.file_list] if self.file_list else [])
                | "ReadFileList" >> beam.ParDo(_ReadFileList(self.s3))
            )
            joined = (
                {"packages": packages.packages, "rows": rows}
                | "JoinFileList" >> beam.CoGroupByKey()
                | "OnlyPackages" >> beam.Filter(lambda kv: bool(list(kv[1]["packages"])))
                | "Select"
                >> beam.ParDo(_JoinPackages(self.selection, bool(self.file_list))).with_outputs(
                    DEAD, FILTERED, NOTED, main="refs"
                )
            )
            refs = joined.refs
            dead_letters = (packages[DEAD], joined[DEAD])
            filters = (packages[FILTERED], joined[FILTERED])
            listing = (packages[LISTED],)
            notes = (packages[NOTED], joined[NOTED])
        elif self.layout == "oa-bulk":
            listing_ = start | "ListBulk" >> beam.ParDo(_ListBulk(self.s3)).with_outputs(
                FILTERED, LISTED, main="uris"
            )
            read = (
                listing_.uris
                | "SpreadPackages" >> beam.Reshuffle()
                | "ReadBulk"
                >> beam.ParDo(_ReadBulkPackage(self.s3)).with_outputs(*tags, main="members")
            )
            kept = (
                read.members
                | "ByArticle" >> beam.GroupByKey()
                | "OneCopy"
                >> beam.ParDo(_KeepOneCopy(self.selection)).with_outputs(FILTERED, main="refs")
            )
            refs = kept.refs
            dead_letters = (read[DEAD],)
            filters = (listing_[FILTERED], read[FILTERED], kept[FILTERED])
            listing = (listing_[LISTED], read[LISTED])
            notes = (read[NOTED],)
        else:
            read = start | "ListFolders" >> beam.ParDo(
                _ListFolders(self.s3, self.selection, self.all_versions)
            ).with_outputs(*tags, main="refs")
            refs = read.refs
            dead_letters, filters, listing = (read[DEAD],), (read[FILTERED],), (read[LISTED],)
            notes = (read[NOTED],)
        return {
            "refs": refs,
            DEAD: dead_letters | "FlattenDead" >> beam.Flatten(pipeline=p),
            FILTERED: filters | "FlattenFiltered" >> beam.Flatten(pipeline=p),
            LISTED: listing | "FlattenListed" >> beam.Flatten(pipeline=p),
            NOTED: notes | "FlattenNoted" >> beam.Flatten(pipeline=p),
        }


class _ListBulk(beam.DoFn):
    def __init__(self, s3):
        self.s3 = s3

    def process(self, source):
        packages, others = source_files(source, self.s3)
        for info in others:
            yield from _other_layout(info, "oa-bulk")
        for info in packages:
            yield info.uri


def _not_requested(kv) -> Filtered:
    # Counted, not written (see pipelines/extract.py): a --pmcids run over all of PMC.
    pmcid, (version, uri, _) = kv
    return Filtered(STAGE, f"{pmcid}.{version}", "pmcid_not_requested", "", uri)


def _wanted(kv, selection: Selection) -> bool:
    return selection.wants_pmcid(kv[0])


def add_s3_anonymous(group) -> None:
    """--s3_anonymous, read by s3_config (extract's, and serve's, which is no Beam job)."""
    group.add_argument(
        "--s3_anonymous",
        default="auto",
        choices=("auto", "true", "false"),
        help="read s3:// unsigned; auto: unsigned unless credentials are configured",
    )


def s3_config(args) -> storage.S3Config:
    anonymous = {"auto": None, "true": True, "false": False}[getattr(args, "s3_anonymous", "auto")]
    if hasattr(args, "view_as"):
        from apache_beam.options.pipeline_options import S3Options

        endpoint = args.view_as(S3Options).s3_endpoint_url
    else:
        endpoint = getattr(args, "s3_endpoint_url", None)
    return storage.S3Config(endpoint_url=endpoint or None, anonymous=anonymous)


def _read_pmcids(value: str, s3: storage.S3Config) -> list[str]:
    if not value:
        return []
    text = storage.read_bytes(value[1:], s3).decode() if value.startswith("@") else value
    ids = [t.strip() for t in re.split(r"[,\s]+", text) if t.strip()]
    return [t if t.upper().startswith("PMC") else f"PMC{t}" for t in ids]
