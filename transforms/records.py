"""The records that flow between stages, and their Arrow schemas, defined once.

Every Parquet file the pipeline writes takes its schema from a dataclass here, so the name
and type of a column live in exactly one place. Column names of `Article` and `Figure`
follow BIOMEDICA's published webdataset JSON (article_*, image_*); fields of our own sit
beside them and never replace them.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field

import pyarrow as pa


@dataclass
class ArticleRef:
    """One article version found by the discover stage: where it lives, not what it says."""

    pmcid: str  # "PMC123456"
    version: int | None  # PMC Cloud version; None where the source has no versions
    source_kind: str  # pmc-cloud | oa-package | oa-bulk | folder
    location: str  # article folder URI, package URI or bulk package URI
    xml_name: str = ""  # XML file name in the folder, or member name in a package
    xml: bytes | None = None  # the XML itself where discover already read it (oa_bulk)
    media: tuple[str, ...] = ()  # media file names, where the listing names them
    pmid: str = ""
    doi: str = ""
    citation: str = ""
    license_code: str = ""
    retracted: bool = False
    last_modified: str = ""  # ISO 8601
    metadata_uri: str = ""  # where the listing metadata came from
    # What the listing could not vouch for (e.g. "no_file_list"): added to the article's
    # parse warnings, so an unverified license or retracted flag says so.
    warnings: tuple[str, ...] = ()
    # Sample key prefix where the XML names no PMCID (one of several XMLs in a folder).
    key_prefix: str = ""

    @property
    def key(self) -> str:
        return self.pmcid if self.version is None else f"{self.pmcid}.{self.version}"


@dataclass
class Article:
    """One parsed article version: a row of extract/articles/."""

    article_accession_id: str  # PMCID
    article_version: int | None = None
    article_pmid: str = ""
    article_doi: str = ""
    article_title: str = ""
    article_journal: str = ""
    article_citation: str = ""
    article_date: str = ""  # YYYY-MM-DD, YYYY-MM or YYYY
    article_year: int | None = None
    article_type: str = ""
    article_license: str = ""  # normalized code: "CC BY", "CC BY-NC-ND", "CC0", ...
    article_license_group: str = "other"  # commercial | noncommercial | other
    article_retracted: bool = False
    article_keywords: list[str] = field(default_factory=list)
    article_subject: list[str] = field(default_factory=list)
    article_abstract: str = ""
    article_text: str = ""
    article_reference_ids: list[str] = field(default_factory=list)
    article_reference_count: int = 0
    # Filled by `enrich` from the article's PubMed record (JATS carries no MeSH): descriptor
    # names, BIOMEDICA's meaning. Ours beside it, from the same record: see PubmedRecord.
    article_mesh_terms: list[str] = field(default_factory=list)
    article_mesh_ids: list[str] = field(default_factory=list)
    article_mesh_major_topics: list[str] = field(default_factory=list)
    article_mesh_qualifiers: list[str] = field(default_factory=list)
    article_mesh_qualifier_ids: list[str] = field(default_factory=list)
    article_publication_types: list[str] = field(default_factory=list)
    article_chemicals: list[str] = field(default_factory=list)
    article_pubmed_date_revised: str = ""
    article_pubmed_source: str = ""  # the MEDLINE file's name, or "efetch"
    # What enrich found for the article's PMID (PUBMED_STATUSES); "" where it never ran.
    article_pubmed_status: str = ""
    article_figure_count: int = 0  # image candidates found in the XML (one per sample)
    article_fig_xref_count: int = 0  # <xref ref-type="fig"> elements in the XML
    article_parse_warnings: list[str] = field(default_factory=list)
    source_kind: str = ""
    source_location: str = ""


@dataclass
class Figure:
    """One image with its text: a figure sample, the unit of the dataset."""

    key: str  # PMC<id>_<figure id>[_<graphic index>], stable across runs
    caption: str  # label, title and every paragraph; the webdataset `.txt`
    image: bytes  # JPEG bytes: the original where it was a valid JPEG, else converted once
    image_file_name: str = ""  # name of the source file (as stored in the package/folder)
    image_hash: str = ""  # sha256 of `image`, hex
    image_phash: str = ""  # 64-bit DCT perceptual hash, hex
    image_size: list[int] = field(default_factory=list)  # [width, height]
    image_width: int = 0
    image_height: int = 0
    image_format: str = ""  # format of the source file: JPEG, PNG, GIF, TIFF, ...
    image_mode: str = ""  # PIL mode of the source: RGB, L, CMYK, I;16, P, ...
    image_converted: bool = False  # re-encoded to JPEG (non-JPEG source, CMYK, 16-bit)
    image_bytes: int = 0
    image_source: str = ""  # URI (or package::member) the bytes came from
    image_set: str = ""  # license group the sample ships in
    image_context: list[str] = field(default_factory=list)  # in-line references
    image_cluster_id: int | None = None
    image_label_id: int | None = None
    image_panel_type: str | None = None
    image_panel_subtype: str | None = None
    image_primary_label: list[str] = field(default_factory=list)
    image_secondary_label: list[str] = field(default_factory=list)
    # Ours beside BIOMEDICA's label fields (filled by annotate, see `Annotation`).
    image_cluster_distance: float | None = None
    image_label_source: str | None = None
    image_label_score: float | None = None
    figure_id: str = ""
    figure_label: str = ""
    figure_type: str = "fig"  # fig | graphic outside a fig: table-wrap, disp-formula, body, ...
    graphic_index: int = 0
    graphic_count: int = 1


@dataclass
class Annotation:
    """A figure sample's cluster and labels: a row of annotate's annotations/ files, and the
    fields `shard --annotations` fills in its sample (same names as in `Figure`)."""

    key: str
    image_cluster_id: int
    image_cluster_distance: float  # L2 distance to its centroid, in the model's PCA space
    # The id of the label entry that applies: the cluster id of the expert label file (or,
    # for caption and zero-shot labels, of this clustering); None where nothing labelled it.
    image_label_id: int | None = None
    image_panel_type: str | None = None  # single | multiple (BIOMEDICA's meaning)
    image_panel_subtype: str | None = None  # "single panel", "multiple panels: images", ...
    image_primary_label: list[str] = field(default_factory=list)  # global concepts
    image_secondary_label: list[str] = field(default_factory=list)  # local concepts
    image_label_source: str | None = None  # expert | caption_vote | zero_shot
    image_label_score: float | None = None  # 1.0 for expert; the vote share otherwise


@dataclass
class DeadLetter:
    """A record a stage could not handle, with why and where it came from."""

    stage: str
    key: str
    reason: str  # short, stable code, e.g. "xml_malformed", "image_too_small"
    detail: str = ""
    source: str = ""


@dataclass
class Filtered:
    """A record a filter left out on purpose: why, and where to find it."""

    stage: str
    key: str
    reason: str  # short, stable code, e.g. "superseded_version", "duplicate_version"
    detail: str = ""
    source: str = ""


@dataclass
class Duplicate:
    """A figure sample dropped by dedupe, and the sample it duplicates."""

    key: str
    duplicate_of: str
    kind: str  # exact | near
    distance: int  # Hamming distance of the perceptual hashes (0 for exact)
    image_hash: str = ""
    image_phash: str = ""


@dataclass
class PubmedRecord:
    """One PubMed record (a MEDLINE `<PubmedArticle>`): the fields the enrich stage adds to
    an article, matched by PMID. Lists are flat and parallel where they pair up, so each is
    one Arrow list column."""

    pmid: str
    # PubMed's version of a versioned citation (F1000/Wellcome Open Research articles have
    # several under one PMID); 1 for nearly all.
    pmid_version: int = 1
    # MeSH descriptor names, in the record's order (BIOMEDICA's `article_mesh_terms`).
    article_mesh_terms: list[str] = field(default_factory=list)
    mesh_descriptor_ids: list[str] = field(default_factory=list)  # "D009369", parallel
    # Descriptors that are a major topic: the descriptor or any of its qualifiers says
    # MajorTopicYN="Y" (PubMed's [majr]).
    mesh_major_topics: list[str] = field(default_factory=list)
    # "Descriptor/qualifier" pairs in PubMed's own notation ("Neoplasms/drug therapy"), and
    # their ids in parallel ("D009369/Q000188").
    mesh_qualifiers: list[str] = field(default_factory=list)
    mesh_qualifier_ids: list[str] = field(default_factory=list)
    publication_types: list[str] = field(default_factory=list)  # "Journal Article", ...
    chemicals: list[str] = field(default_factory=list)  # NameOfSubstance
    date_revised: str = ""  # YYYY-MM-DD
    source_file: str = ""  # the MEDLINE file's name, e.g. "pubmed25n1300.xml.gz"
    # Which element of its file it was (0-based): orders two versions in one file.
    source_position: int = 0


# enrich: which Article column each PubmedRecord field fills.
PUBMED_ARTICLE_FIELDS = {
    "article_mesh_terms": "article_mesh_terms",
    "mesh_descriptor_ids": "article_mesh_ids",
    "mesh_major_topics": "article_mesh_major_topics",
    "mesh_qualifiers": "article_mesh_qualifiers",
    "mesh_qualifier_ids": "article_mesh_qualifier_ids",
    "publication_types": "article_publication_types",
    "chemicals": "article_chemicals",
    "date_revised": "article_pubmed_date_revised",
    "source_file": "article_pubmed_source",
}
# The Article columns enrich sets: those above and the status.
PUBMED_COLUMNS = (*PUBMED_ARTICLE_FIELDS.values(), "article_pubmed_status")
# article_pubmed_status: matched (fields filled), or why not: the article has no PMID, one
# that is not a PMID, PubMed has no record of it, PubMed deleted it, the only files that held
# it failed to parse, or E-utilities failed to answer for it (a dead letter says why).
PUBMED_STATUSES = (
    "matched",
    "no_pmid",
    "invalid_pmid",
    "not_found",
    "deleted",
    "source_failed",
    "fetch_failed",
)


@dataclass
class PubmedDeletion:
    """A PMID that a MEDLINE `<DeleteCitation>` removes from PubMed (from this file on)."""

    pmid: str
    pmid_version: int = 1
    source_file: str = ""
    source_position: int = 0  # of the DeleteCitation element in its file


def _arrow_type(hint) -> pa.DataType:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return _arrow_type(next(a for a in args if a is not type(None)))
    if origin is list:
        return pa.list_(_arrow_type(args[0]))
    if origin is tuple:
        return pa.list_(_arrow_type(args[0]))
    return {
        str: pa.string(),
        int: pa.int64(),
        bool: pa.bool_(),
        float: pa.float64(),
        bytes: pa.binary(),
    }[hint]


def arrow_schema(cls, exclude: tuple[str, ...] = ()) -> pa.Schema:
    """The Arrow schema of a record dataclass: one column per field, in field order."""
    hints = typing.get_type_hints(cls)
    return pa.schema(
        [
            pa.field(f.name, _arrow_type(hints[f.name]))
            for f in dataclasses.fields(cls)
            if f.name not in exclude
        ]
    )


ARTICLE_SCHEMA = arrow_schema(Article)
# A sample carries its article's fields beside its own: the shard JSON's fields.
FIGURE_SCHEMA = pa.schema(list(arrow_schema(Figure)) + list(ARTICLE_SCHEMA))
# Article fields stored once per article (extract/articles), never copied into each of its
# figure rows: an article's body can be megabytes, and it can have a thousand figures. The
# shard stage joins them back where it writes the sample JSON.
HELD_ONCE = ("article_text",)
# extract/figures: a figure row without the fields held once.
FIGURE_FILE_SCHEMA = pa.schema([f for f in FIGURE_SCHEMA if f.name not in HELD_ONCE])
DUPLICATE_SCHEMA = arrow_schema(Duplicate)
ANNOTATION_SCHEMA = arrow_schema(Annotation)
PUBMED_RECORD_SCHEMA = arrow_schema(PubmedRecord)
# The figure fields an annotation fills (all of its columns but the key).
ANNOTATION_FIELDS = tuple(f.name for f in ANNOTATION_SCHEMA if f.name != "key")

EMBEDDING_MODEL = "model"  # the embedding model's id, one value per file
IMAGE_EMBEDDING = "image_embedding"
CAPTION_EMBEDDING = "caption_embedding"


def embedding_schema(dim: int, caption: bool) -> pa.Schema:
    """A file of embed/embeddings: L2-normalised float32 vectors as fixed-size lists (a reader
    maps them as one (rows, dim) array without copying); a caption column only where the
    model has a text tower."""
    vector = pa.list_(pa.float32(), dim)
    fields = [
        pa.field("key", pa.string()),
        pa.field(EMBEDDING_MODEL, pa.string()),
        pa.field(IMAGE_EMBEDDING, vector),
    ]
    if caption:
        fields.append(pa.field(CAPTION_EMBEDDING, vector))
    return pa.schema(fields)


def figure_row(figure: Figure, article: Article) -> dict:
    """A row of extract/figures: the figure's fields and its article's, but those held once."""
    row = dataclasses.asdict(figure)
    for f in dataclasses.fields(article):
        if f.name not in HELD_ONCE:
            row[f.name] = getattr(article, f.name)
    return row


def as_row(record) -> dict:
    return dataclasses.asdict(record)


@dataclass
class ShardPlacement:
    """Where a sample lies in the dataset: the columns a shard's Parquet adds to its rows."""

    shard: str  # "<group>/<index:06d>.tar"
    sample_offset: int  # position of the sample in its shard
    tar_offset: int  # byte offset of the sample's first member header
    tar_size: int  # bytes of the sample's members, headers included
    fixes: list[str] = field(default_factory=list)  # what the shard stage repaired


@dataclass
class ShardRecord:
    """One written shard, as the manifest lists it."""

    group: str
    index: int
    path: str  # relative to the dataset root
    samples: int
    bytes: int
    sha256: str
    parquet_path: str
    parquet_sha256: str
    rewritten: bool  # False where a resumed run found the identical shard in place
    pieces: int = 1  # more than one: its samples came from several units, joined


# A shard's Parquet: every figure field but the image bytes and those held once (the
# article text is in each sample's JSON), plus where the sample lies.
SHARD_INDEX_SCHEMA = pa.schema(
    [f for f in FIGURE_FILE_SCHEMA if f.name != "image"] + list(arrow_schema(ShardPlacement))
)
