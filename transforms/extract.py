"""Extract stage: fetch each article, parse it, and turn every image into a figure sample.

The DoFn is thin: fetching is `storage`/`legacy`, parsing is `jats`, href resolution is
`media`, image checks are `images`. Outputs: Article records (main), figure rows (dicts in
the FIGURE_SCHEMA layout), dead letters for articles and for figures, filter reasons.
"""

from __future__ import annotations

import argparse
import dataclasses
import posixpath
import re
from dataclasses import dataclass, field

import apache_beam as beam

from transforms import progress, storage
from transforms.errors import Rejected
from transforms.images import checks
from transforms.jats import parse
from transforms.jats.media import resolve
from transforms.outcomes import DEAD, FILTERED, LISTED, dead, filtered, listed
from transforms.pmc import legacy
from transforms.pmc.licenses import license_group, normalize_license
from transforms.pmc.selection import Selection
from transforms.records import Article, ArticleRef, Figure, figure_row

ARTICLES = "extract_articles"
FIGURES = "extract_figures"
FIGURE_ROWS = "figures"


class FetchError(Rejected):
    """An article whose files cannot be fetched."""


@dataclass
class _Bundle:
    """An article's XML and a way to get each of its media files."""

    xml: bytes
    xml_source: str
    media_names: list[str]
    package: legacy.Package | None = None  # a package's images, each read when asked for
    media_root: str = ""
    note: str = ""  # e.g. why a package ended early


@dataclass(frozen=True)
class ImageLimits:
    min_side: int = checks.MIN_SIDE
    max_pixels: int = checks.MAX_PIXELS
    max_bytes: int = checks.MAX_BYTES
    max_xml_bytes: int = parse.DEFAULT_MAX_XML_BYTES
    max_archive_bytes: int = legacy.DEFAULT_MAX_ARCHIVE_BYTES


class _ExtractArticle(beam.DoFn):
    def __init__(
        self, s3: storage.S3Config, selection: Selection, limits: ImageLimits, versioned_keys: bool
    ):
        self.s3 = s3
        self.selection = selection
        self.limits = limits
        self.versioned_keys = versioned_keys

    # -- fetching --------------------------------------------------------------------

    def _fetch(self, ref: ArticleRef) -> _Bundle:
        if ref.source_kind == "oa-bulk":
            return _Bundle(ref.xml or b"", f"{ref.location}::{ref.xml_name}", [])
        if ref.source_kind == "oa-package":
            try:
                with storage.open_stream(ref.location, self.s3) as stream:
                    package = legacy.read_package(
                        stream,
                        self.limits.max_archive_bytes,
                        self.limits.max_xml_bytes,
                        self.limits.max_bytes,
                    )
            except storage.StorageError as err:
                raise FetchError("archive_unreadable", str(err)) from None
            except legacy.PackageError as err:
                raise FetchError(err.reason, err.detail) from None
            if package.xml is None:
                package.close()
                why = (
                    f"archive truncated ({package.truncated})"
                    if package.truncated
                    else "no XML member"
                )
                raise FetchError("archive_truncated" if package.truncated else "xml_missing", why)
            note = f"archive truncated: {package.truncated}" if package.truncated else ""
            return _Bundle(
                package.xml,
                f"{ref.location}::{package.xml_name}",
                sorted(package.media),
                package=package,
                note=note,
            )
        xml_uri = storage.join(ref.location, ref.xml_name)
        try:
            xml = storage.read_bytes(xml_uri, self.s3, self.limits.max_xml_bytes)
        except storage.TooLarge as err:
            raise FetchError("xml_too_large", f"{ref.xml_name}: {err}") from None
        except storage.StorageError as err:
            raise FetchError("xml_unreadable", str(err)) from None
        names = list(ref.media)
        if not names:
            names = [posixpath.basename(f.uri) for f in storage.list_prefix(ref.location, self.s3)]
        return _Bundle(xml, xml_uri, names, media_root=ref.location)

    def _media(self, bundle: _Bundle, name: str) -> tuple[bytes, str]:
        """(bytes, where from); storage.TooLarge over --max_image_bytes, unread."""
        if bundle.package is not None:
            try:
                data = bundle.package.media[name]
            except legacy.MemberTooLarge as err:
                raise storage.TooLarge(err.size, err.limit) from None
            return data, f"{bundle.xml_source.split('::')[0]}::{name}"
        uri = storage.join(bundle.media_root, name)
        return storage.read_bytes(uri, self.s3, self.limits.max_bytes), uri

    # -- per article -------------------------------------------------------------------

    def process(self, ref: ArticleRef):
        yield listed(ARTICLES)
        name = _name(ref)
        try:
            bundle = self._fetch(ref)
        except FetchError as err:
            yield dead(ARTICLES, name, err.reason, err.detail, ref.location)
            return
        try:
            yield from self._articles(ref, name, bundle)
        finally:
            if bundle.package is not None:
                bundle.package.close()  # its images' spill file goes now, not when collected

    def _articles(self, ref: ArticleRef, name: str, bundle: _Bundle):
        try:
            parsed = parse.parse_articles(bundle.xml, self.limits.max_xml_bytes)
        except parse.JatsError as err:
            yield dead(ARTICLES, name, err.reason, err.detail, bundle.xml_source)
            return
        for _ in parsed[1:]:
            yield listed(ARTICLES)  # an <articles> wrapper: each article counts as one in
        described = _described(ref, parsed)
        seen: set[str] = set()
        for index, item in enumerate(parsed):
            # The listing describes one article of the file; the others stand on their own XML.
            own = ref if index in described else _own_ref(ref, item.article, index)
            name = own.key if own is not ref and own.pmcid else _name(ref)
            if (own is not ref and not own.pmcid) or len(described) > 1:
                name = f"{_name(ref)}#{index + 1}"
            disagreement = _disagreement(own, item.article)
            if disagreement:
                yield dead(ARTICLES, name, "metadata_xml_mismatch", disagreement, bundle.xml_source)
                continue
            article = _merge(own, item.article, bundle)
            prefix = article.article_accession_id or _fallback_prefix(own)
            if prefix in seen:
                yield dead(
                    ARTICLES,
                    name,
                    "duplicate_article",
                    f"the file holds {prefix} more than once; the first is kept",
                    bundle.xml_source,
                )
                continue
            seen.add(prefix)
            reason = (own is not ref and self.selection.reason(own)) or (
                self.selection.license_reason(article.article_license)
            )
            if reason:
                yield filtered(ARTICLES, reason, name, source=bundle.xml_source)
                continue
            yield article
            yield from self._figures(own, article, item.graphics, bundle)
            progress.tick("articles")  # stderr progress of a local run
            progress.tick("figures", article.article_figure_count)

    def _figures(self, ref: ArticleRef, article: Article, candidates, bundle: _Bundle):
        prefix = article.article_accession_id or _fallback_prefix(ref)
        version = ref.version if self.versioned_keys else None
        for candidate in candidates:
            key = parse.sample_key(prefix, candidate, version)
            if ref.source_kind == "oa-bulk":
                yield dead(
                    FIGURES,
                    key,
                    "image_unavailable",
                    "oa_bulk packages hold XML only",
                    bundle.xml_source,
                )
                continue
            name, why = resolve(candidate.href, bundle.media_names)
            if name is None:
                for fallback in candidate.fallback_hrefs:
                    name, _ = resolve(fallback, bundle.media_names)
                    if name:
                        break
            if name is None:
                detail = f"{why}; {bundle.note}" if bundle.note else why
                yield dead(FIGURES, key, "image_missing", detail, bundle.xml_source)
                continue
            try:
                data, source = self._media(bundle, name)
            except storage.TooLarge as err:
                where = bundle.media_root or bundle.xml_source
                yield dead(FIGURES, key, "image_too_large", f"{name}: {err}", where)
                continue
            except (storage.StorageError, KeyError) as err:
                yield dead(
                    FIGURES,
                    key,
                    "image_missing",
                    f"{name}: {err}",
                    bundle.media_root or bundle.xml_source,
                )
                continue
            try:
                checked = checks.check_image(
                    data, self.limits.min_side, self.limits.max_pixels, self.limits.max_bytes
                )
            except checks.ImageRejected as err:
                yield dead(FIGURES, key, err.reason, err.detail, source)
                continue
            figure = Figure(
                key=key,
                caption=candidate.caption,
                image=checked.data,
                image_file_name=name,
                image_hash=checked.sha256,
                image_phash=checked.phash,
                image_size=[checked.width, checked.height],
                image_width=checked.width,
                image_height=checked.height,
                image_format=checked.source_format,
                image_mode=checked.source_mode,
                image_converted=checked.converted,
                image_bytes=len(checked.data),
                image_source=source,
                image_set=article.article_license_group,
                image_context=candidate.context,
                figure_id=candidate.figure_id,
                figure_label=candidate.figure_label,
                figure_type=candidate.figure_type,
                graphic_index=candidate.graphic_index,
                graphic_count=candidate.graphic_count,
            )
            yield beam.pvalue.TaggedOutput(FIGURE_ROWS, figure_row(figure, article))


def _fallback_prefix(ref: ArticleRef) -> str:
    if ref.key_prefix:
        return parse.safe_key_part(ref.key_prefix)
    base = posixpath.basename(ref.location.rstrip("/")).split("::")[0]
    return parse.safe_key_part(re.sub(r"\.(tar\.gz|tgz)$", "", base))


def _name(ref: ArticleRef) -> str:
    """The key of an article's dead letters: its version, else where its XML lies."""
    if ref.key:
        return ref.key
    return storage.join(ref.location, ref.xml_name) if ref.source_kind == "folder" else ref.location


def _described(ref: ArticleRef, parsed) -> set[int]:
    """Indexes of the articles the listing describes: the one whose PMCID it names.

    A file of one article is described whatever it says (a mismatch is a dead letter); in a
    wrapper naming no article of the listing's id, every article is checked against it.
    """
    if len(parsed) == 1 or not ref.pmcid:
        return {0}
    ids = [p.article.article_accession_id for p in parsed]
    if ref.pmcid in ids:
        return {ids.index(ref.pmcid)}
    return set(range(len(parsed)))


def _own_ref(ref: ArticleRef, article: Article, index: int) -> ArticleRef:
    """A ref for another article of the same file: where it lies, none of the listing's
    metadata (license, citation, ids, retracted belong to the article the listing names)."""
    base = ref.key_prefix or _fallback_prefix(ref)
    return dataclasses.replace(
        ref,
        pmcid=article.article_accession_id,
        version=None,
        pmid="",
        doi="",
        citation="",
        license_code="",
        retracted=False,
        metadata_uri="",
        key_prefix=f"{base}_{index + 1}",
        warnings=ref.warnings if ref.source_kind == "folder" else (*ref.warnings, "not_in_listing"),
    )


def _disagreement(ref: ArticleRef, article: Article) -> str:
    """Why listing metadata and XML describe different articles ("" when they agree)."""
    problems = []
    if ref.pmcid and article.article_accession_id and ref.pmcid != article.article_accession_id:
        problems.append(f"pmcid {ref.pmcid} in listing, {article.article_accession_id} in XML")
    if ref.pmid and article.article_pmid and ref.pmid.strip() != article.article_pmid.strip():
        problems.append(f"pmid {ref.pmid} in listing, {article.article_pmid} in XML")
    if (
        ref.doi
        and article.article_doi
        and ref.doi.strip().lower() != article.article_doi.strip().lower()
    ):
        problems.append(f"doi {ref.doi} in listing, {article.article_doi} in XML")
    return "; ".join(problems)


def _merge(ref: ArticleRef, article: Article, bundle: _Bundle) -> Article:
    """Listing metadata wins where it is given: it is what PMC distributes the article under."""
    article.article_accession_id = article.article_accession_id or ref.pmcid
    article.article_version = ref.version
    article.article_pmid = article.article_pmid or ref.pmid
    article.article_doi = article.article_doi or ref.doi
    if ref.citation:
        article.article_citation = ref.citation
    if ref.license_code:
        article.article_license = normalize_license(ref.license_code)
    article.article_license_group = license_group(article.article_license)
    article.article_retracted = ref.retracted
    article.source_kind = ref.source_kind
    article.source_location = bundle.xml_source
    notes = [bundle.note] if bundle.note else []
    if notes or ref.warnings:
        article.article_parse_warnings = [*article.article_parse_warnings, *notes, *ref.warnings]
    return article


@dataclass
class ExtractArticles(beam.PTransform):
    """Refs in; articles, figure rows, dead letters, filter reasons and counts out."""

    s3: storage.S3Config = field(default_factory=storage.S3Config)
    selection: Selection = field(default_factory=Selection)
    limits: ImageLimits = field(default_factory=ImageLimits)
    versioned_keys: bool = False

    def __post_init__(self):
        super().__init__()
        if self.limits.min_side < 1 or self.limits.max_pixels < 1:
            raise ValueError("--min_side and --max_pixels must be positive")
        limits = self.limits
        if min(limits.max_bytes, limits.max_xml_bytes, limits.max_archive_bytes) < 1:
            raise ValueError(
                "--max_image_bytes, --max_xml_bytes, --max_archive_bytes must be positive"
            )

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("extract")
        group.add_argument(
            "--min_side",
            type=int,
            default=checks.MIN_SIDE,
            help="smallest width or height kept, in pixels",
        )
        group.add_argument(
            "--max_pixels",
            type=int,
            default=checks.MAX_PIXELS,
            help="decompression-bomb bound: larger images are refused unread",
        )
        group.add_argument(
            "--max_image_bytes",
            type=int,
            default=checks.MAX_BYTES,
            help="larger image files are image_too_large, unread",
        )
        group.add_argument(
            "--max_xml_bytes",
            type=int,
            default=parse.DEFAULT_MAX_XML_BYTES,
            help="larger article XML files are xml_too_large, unread",
        )
        group.add_argument(
            "--max_archive_bytes",
            type=int,
            default=legacy.DEFAULT_MAX_ARCHIVE_BYTES,
            help="uncompressed bytes read from one oa_package at most (archive_too_large past it)",
        )

    @classmethod
    def from_args(cls, args, s3: storage.S3Config, selection: Selection) -> ExtractArticles:
        limits = ImageLimits(
            args.min_side,
            args.max_pixels,
            args.max_image_bytes,
            args.max_xml_bytes,
            args.max_archive_bytes,
        )
        return cls(s3=s3, selection=selection, limits=limits, versioned_keys=args.all_versions)

    def expand(self, refs):
        outputs = (
            refs
            | "SpreadArticles" >> beam.Reshuffle()
            | "Extract"
            >> beam.ParDo(
                _ExtractArticle(self.s3, self.selection, self.limits, self.versioned_keys)
            ).with_outputs(FIGURE_ROWS, DEAD, FILTERED, LISTED, main="articles")
        )
        return {
            "articles": outputs.articles,
            FIGURE_ROWS: outputs[FIGURE_ROWS],
            DEAD: outputs[DEAD],
            FILTERED: outputs[FILTERED],
            LISTED: outputs[LISTED],
        }
