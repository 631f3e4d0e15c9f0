"""The PubMed records of a sample corpus: MEDLINE XML for its articles. Pure, Beam-free.

The sample corpus (transforms.pmc.sample_corpus) gives every article a PMID. This module
writes what PubMed would hold for them, in NLM's MEDLINE/PubMed XML (the
`PubmedArticleSet` DTD): a baseline file `pubmed/pubmed26n0001.xml.gz` and an update file
`pubmed/pubmed26n0002.xml.gz`, so `biomedica enrich --medline` has something real to join.

Each article has one fate (`fate`, a pure function of its index) so that a corpus of 10
articles already shows each case enrich must handle:

- baseline: one record in the baseline file;
- revised: a baseline record and a later version in the update file (a later DateRevised
  and one more MeSH descriptor): the update's version stands;
- deleted: a baseline record, and its PMID in the update's `<DeleteCitation>`;
- new: a record in the update file only (most records of a real update file are new);
- not_indexed: a baseline record PubMed never indexed for MEDLINE (`PubMed-not-MEDLINE`:
  no MeSH, no DateCompleted), matched with empty MeSH columns;
- missing: no record in any file (enrich says `not_found`).

MeSH headings come from what the article is about, as its text and figures show it: the
disease and cells its title names, the genes among its keywords, the tissues and drugs its
abstract names, mice or human material, and the methods its figure kinds stand for
(`KIND_DESCRIPTORS`). Every descriptor, qualifier and publication type name goes with its
real MeSH unique id: each but Glioblastoma's is the id two real NLM files (baseline
pubmed20n0014, update pubmed21n1298) give that name. Deterministic by seed: the same
corpus gives byte-identical files.
"""

from __future__ import annotations

import gzip
import io
import random
import re
from collections import Counter
from dataclasses import dataclass
from datetime import date, timedelta
from xml.sax.saxutils import escape, quoteattr

from transforms import storage

FOLDER = "pubmed"
BASELINE = "pubmed26n0001.xml.gz"
UPDATE = "pubmed26n0002.xml.gz"
FILES = (BASELINE, UPDATE)
FATES = ("baseline", "revised", "deleted", "new", "not_indexed", "missing")
# What enrich's article_pubmed_status becomes for each fate.
STATUS_OF_FATE = {
    "baseline": "matched",
    "revised": "matched",
    "new": "matched",
    "not_indexed": "matched",
    "deleted": "deleted",
    "missing": "not_found",
}

_HEADER = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    '<!DOCTYPE PubmedArticleSet PUBLIC "-//NLM//DTD PubMedArticle, 1st January 2025//EN" '
    '"https://dtd.nlm.nih.gov/ncbi/pubmed/out/pubmed_250101.dtd">\n'
    "<PubmedArticleSet>\n"
)
_FOOTER = "</PubmedArticleSet>\n"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# ---- MeSH: names with their unique ids (NLM's) ------------------------------------------

DESCRIPTORS = {
    # check tags
    "Animals": "D000818",
    "Humans": "D006801",
    "Mice": "D051379",
    "Mice, Inbred C57BL": "D008810",
    "Male": "D008297",
    "Female": "D005260",
    "Cells, Cultured": "D002478",
    "Disease Models, Animal": "D004195",
    # diseases
    "Fibrosis": "D005355",
    "Carcinoma, Hepatocellular": "D006528",
    "Liver Neoplasms": "D008113",
    "Alzheimer Disease": "D000544",
    "Sepsis": "D018805",
    "Diabetes Mellitus, Type 2": "D003924",
    "Glioblastoma": "D005909",
    "Brain Neoplasms": "D001932",
    "Atherosclerosis": "D050197",
    "Arthritis, Rheumatoid": "D001172",
    "Acute Kidney Injury": "D058186",
    "Colorectal Neoplasms": "D015179",
    "Asthma": "D001249",
    "Heart Failure": "D006333",
    # anatomy
    "Liver": "D008099",
    "Hippocampus": "D006624",
    "Lung": "D008168",
    "Kidney Cortex": "D007672",
    "Colon": "D003106",
    "Muscle, Skeletal": "D018482",
    "Retina": "D012160",
    "Spleen": "D013154",
    "Myocardium": "D009206",
    "Islets of Langerhans": "D007515",
    "Skin": "D012867",
    "Lymph Nodes": "D008198",
    # cells
    "HeLa Cells": "D006367",
    "Hepatocytes": "D022781",
    "Neurons": "D009474",
    "T-Lymphocytes": "D013601",
    "Macrophages": "D008264",
    "Fibroblasts": "D005347",
    "HEK293 Cells": "D057809",
    "Organoids": "D009940",
    "Endothelium, Vascular": "D004730",
    "Myocytes, Cardiac": "D032383",
    "Keratinocytes": "D015603",
    "Tumor Cells, Cultured": "D014407",
    "Bone Marrow Cells": "D001854",
    "Neuroglia": "D009457",
    # gene products and drugs (also in the ChemicalList)
    "Tumor Suppressor Protein p53": "D016159",
    "STAT3 Transcription Factor": "D050796",
    "NF-kappa B": "D016328",
    "Interleukin-6": "D015850",
    "Glyceraldehyde-3-Phosphate Dehydrogenases": "D005987",
    "Proto-Oncogene Proteins c-akt": "D051057",
    "Forkhead Transcription Factors": "D051858",
    "Sirolimus": "D020123",
    "Cisplatin": "D002945",
    "Lipopolysaccharides": "D008070",
    "Metformin": "D008687",
    "Dexamethasone": "D003907",
    "Doxorubicin": "D004317",
    # methods (figure kinds) and processes
    "Microscopy": "D008853",
    "Blotting, Western": "D015153",
    "Tomography, X-Ray Computed": "D014057",
    "Magnetic Resonance Imaging": "D008279",
    "Gene Expression Profiling": "D020869",
    "Photography": "D010781",
    "Signal Transduction": "D015398",
    "Apoptosis": "D017209",
    "Cell Proliferation": "D049109",
    "Cell Movement": "D002465",
    "Autophagy": "D001343",
    "Phosphorylation": "D010766",
    "Gene Expression Regulation": "D005786",
    "Inflammation": "D007249",
    "Mitochondria": "D008928",
}
QUALIFIERS = {
    "metabolism": "Q000378",
    "pathology": "Q000473",
    "genetics": "Q000235",
    "drug therapy": "Q000188",
    "pharmacology": "Q000494",
    "methods": "Q000379",
    "diagnostic imaging": "Q000000981",
    "drug effects": "Q000187",
    "physiology": "Q000502",
}
PUBLICATION_TYPES = {
    "Journal Article": "D016428",
    "Research Support, Non-U.S. Gov't": "D013485",
    "Research Support, N.I.H., Extramural": "D052061",
    "Retracted Publication": "D016441",
}
# NameOfSubstance -> RegistryNumber ("0" where NLM gives none, as for most proteins).
REGISTRY_NUMBERS = {
    "Tumor Suppressor Protein p53": "0",
    "STAT3 Transcription Factor": "0",
    "NF-kappa B": "0",
    "Interleukin-6": "0",
    "Glyceraldehyde-3-Phosphate Dehydrogenases": "EC 1.2.1.-",
    "Proto-Oncogene Proteins c-akt": "EC 2.7.11.1",
    "Forkhead Transcription Factors": "0",
    "Sirolimus": "W36ZG6FT64",
    "Cisplatin": "Q20Q21Q62J",
    "Lipopolysaccharides": "0",
    "Metformin": "9100L32L2N",
    "Dexamethasone": "7S5I7G3JQL",
    "Doxorubicin": "80168379AG",
}

# The corpus's words (sample_corpus's vocabulary) -> descriptors. Words without an entry add
# no heading (no descriptor id we could vouch for).
DISEASES = {
    "fibrosis": ("Fibrosis",),
    "hepatocellular carcinoma": ("Carcinoma, Hepatocellular", "Liver Neoplasms"),
    "Alzheimer's disease": ("Alzheimer Disease",),
    "sepsis": ("Sepsis",),
    "type 2 diabetes": ("Diabetes Mellitus, Type 2",),
    "glioblastoma": ("Glioblastoma", "Brain Neoplasms"),
    "atherosclerosis": ("Atherosclerosis",),
    "rheumatoid arthritis": ("Arthritis, Rheumatoid",),
    "acute kidney injury": ("Acute Kidney Injury",),
    "colorectal cancer": ("Colorectal Neoplasms",),
    "asthma": ("Asthma",),
    "heart failure": ("Heart Failure",),
}
CELLS = {
    "HeLa cells": ("HeLa Cells",),
    "primary hepatocytes": ("Hepatocytes", "Cells, Cultured"),
    "cortical neurons": ("Neurons",),
    "CD4+ T cells": ("T-Lymphocytes",),
    "macrophages": ("Macrophages",),
    "fibroblasts": ("Fibroblasts",),
    "HEK293T cells": ("HEK293 Cells",),
    "organoids": ("Organoids",),
    "endothelial cells": ("Endothelium, Vascular",),
    "cardiomyocytes": ("Myocytes, Cardiac",),
    "keratinocytes": ("Keratinocytes",),
    "tumor spheroids": ("Tumor Cells, Cultured",),
    "bone marrow stromal cells": ("Bone Marrow Cells",),
    "microglia": ("Neuroglia",),
}
HUMAN_CELLS = ("HeLa cells", "HEK293T cells")
TISSUES = {
    "liver": "Liver",
    "hippocampus": "Hippocampus",
    "lung": "Lung",
    "kidney cortex": "Kidney Cortex",
    "colon": "Colon",
    "skeletal muscle": "Muscle, Skeletal",
    "retina": "Retina",
    "spleen": "Spleen",
    "myocardium": "Myocardium",
    "pancreatic islets": "Islets of Langerhans",
    "skin": "Skin",
    "lymph nodes": "Lymph Nodes",
}
GENES = {
    "TP53": "Tumor Suppressor Protein p53",
    "STAT3": "STAT3 Transcription Factor",
    "NF-κB": "NF-kappa B",
    "IL-6": "Interleukin-6",
    "GAPDH": "Glyceraldehyde-3-Phosphate Dehydrogenases",
    "AKT1": "Proto-Oncogene Proteins c-akt",
    "FOXP3": "Forkhead Transcription Factors",
}
DRUGS = {
    "rapamycin": "Sirolimus",
    "cisplatin": "Cisplatin",
    "lipopolysaccharide": "Lipopolysaccharides",
    "metformin": "Metformin",
    "dexamethasone": "Dexamethasone",
    "doxorubicin": "Doxorubicin",
}
# A figure kind (sample_corpus.KINDS) -> the method descriptor an indexer gives such figures;
# plots stand for no method. A scan is CT or MRI, drawn per article.
KIND_DESCRIPTORS = {
    "micrograph": ("Microscopy",),
    "blot": ("Blotting, Western",),
    "scan": ("Tomography, X-Ray Computed", "Magnetic Resonance Imaging"),
    "heatmap": ("Gene Expression Profiling",),
    "photograph": ("Photography",),
    "diagram": ("Signal Transduction",),
}
# What a revision in the update file adds: the first of these the record lacks.
REVISION_DESCRIPTORS = (
    "Apoptosis",
    "Cell Proliferation",
    "Gene Expression Regulation",
    "Signal Transduction",
    "Inflammation",
    "Autophagy",
    "Cell Movement",
    "Phosphorylation",
    "Mitochondria",
)


# ---- what a record says ----------------------------------------------------------------


@dataclass(frozen=True)
class ArticleCitation:
    """What PubMed knows of a sample article, from its plan and text (sample_corpus)."""

    index: int
    pmid: str
    pmcid: str
    doi: str
    title: str  # plain text
    abstract: tuple[str, ...]  # plain text paragraphs
    keywords: tuple[str, ...]
    journal: tuple[str, str, str, str]  # title, ISO abbreviation, ISSN, publisher
    published: date
    authors: tuple[tuple[str, str], ...]  # (surname, initials)
    kinds: tuple[str, ...]  # the figure kinds of its graphics, in document order
    retracted: bool = False


@dataclass(frozen=True)
class Heading:
    descriptor: str
    major: bool = False
    qualifier: str = ""


@dataclass(frozen=True)
class ArticleMedline:
    """An article's part of the MEDLINE files: its fate and its XML elements (bytes)."""

    pmid: str
    fate: str
    baseline: bytes = b""  # its <PubmedArticle> in the baseline file, if any
    update: bytes = b""  # its <PubmedArticle> in the update file, if any
    deleted: bool = False  # its PMID is in the update's <DeleteCitation>
    mesh_terms: tuple[str, ...] = ()  # descriptor names of the version that stands
    date_revised: str = ""  # of the version that stands (YYYY-MM-DD)


def fate(index: int) -> str:
    """What PubMed holds for article `index` (one of FATES); fixed by index so that every
    corpus of 10 articles or more holds each fate, and a corpus of 8 all but two."""
    if index % 10 == 6:
        return "missing"
    if index % 20 == 3:
        return "deleted"
    if index % 10 == 8:
        return "new"
    if index % 20 == 9:
        return "not_indexed"
    if index % 4 == 1:
        return "revised"
    return "baseline"


def _find(phrases, text: str) -> list[str]:
    """The phrases (keys of a table) that `text` names as whole words, in table order."""
    return [
        p
        for p in phrases
        if re.search(rf"(?<![\w-]){re.escape(p)}(?![\w-])", text, flags=re.IGNORECASE)
    ]


def headings(citation: ArticleCitation, rng: random.Random) -> list[Heading]:
    """The MeSH headings of an article's record, sorted by descriptor (as NLM lists them)."""
    title_words = " ".join((citation.title, *citation.keywords))
    abstract = " ".join(citation.abstract)
    chosen: dict[str, Heading] = {}

    def add(descriptor: str, major: bool = False, qualifiers: tuple[str, ...] = ()) -> None:
        if descriptor in chosen:
            return
        qualifier = rng.choice(qualifiers) if qualifiers else ""
        chosen[descriptor] = Heading(descriptor, major, qualifier)

    named = _find(DISEASES, citation.title)
    for disease in _find(DISEASES, title_words):  # the title's disease is a major topic
        for n, descriptor in enumerate(DISEASES[disease]):
            major = n == 0 and disease in named
            add(descriptor, major, qualifiers=("metabolism", "pathology", "genetics"))
    for cells in _find(CELLS, citation.title):
        for n, descriptor in enumerate(CELLS[cells]):
            add(descriptor, major=n == 0, qualifiers=("metabolism", "pathology") if n == 0 else ())
    for gene in _find(GENES, title_words):
        add(GENES[gene], qualifiers=("metabolism", "genetics"))
    for tissue in _find(TISSUES, abstract):
        add(TISSUES[tissue], qualifiers=("metabolism", "pathology"))
    for drug in _find(DRUGS, abstract):
        add(DRUGS[drug], qualifiers=("pharmacology",))
    for kind in dict.fromkeys(citation.kinds):
        options = KIND_DESCRIPTORS.get(kind, ())
        if options:
            qualifier = ("methods",)
            add(rng.choice(options) if kind == "scan" else options[0], qualifiers=qualifier)
    human = any(c in citation.title for c in HUMAN_CELLS)
    if re.search(r"\bmice\b", abstract):
        for tag in ("Animals", "Mice", "Mice, Inbred C57BL", "Disease Models, Animal"):
            add(tag)
        add(rng.choice(("Male", "Female")))
    else:
        human = True
    if human:
        add("Humans")
    return sorted(chosen.values(), key=_order)


def _order(heading: Heading) -> tuple[str, str]:
    # NLM lists headings alphabetically, whatever the case.
    return heading.descriptor.casefold(), heading.descriptor


def chemicals(found: list[Heading]) -> list[str]:
    """The substances among the headings (gene products and drugs), sorted by name."""
    return sorted(h.descriptor for h in found if h.descriptor in REGISTRY_NUMBERS)


def publication_types(citation: ArticleCitation, rng: random.Random) -> list[str]:
    types = ["Journal Article"]
    if citation.retracted:
        types.append("Retracted Publication")
    roll = rng.random()
    if roll < 0.5:
        types.append("Research Support, Non-U.S. Gov't")
    if roll < 0.2:
        types.append("Research Support, N.I.H., Extramural")
    return types


# ---- XML -----------------------------------------------------------------------------------


def _date(tag: str, day: date, indent: str, attrs: str = "") -> str:
    inner = indent + "  "
    return (
        f"{indent}<{tag}{attrs}>\n{inner}<Year>{day.year}</Year>\n"
        f"{inner}<Month>{day.month:02d}</Month>\n{inner}<Day>{day.day:02d}</Day>\n"
        f"{indent}</{tag}>\n"
    )


def _heading_xml(heading: Heading) -> str:
    name = heading.descriptor
    major = "Y" if heading.major and not heading.qualifier else "N"
    out = (
        f"        <MeshHeading>\n          <DescriptorName UI={quoteattr(DESCRIPTORS[name])} "
        f'MajorTopicYN="{major}">{escape(name)}</DescriptorName>\n'
    )
    if heading.qualifier:
        q_major = "Y" if heading.major else "N"
        out += (
            f"          <QualifierName UI={quoteattr(QUALIFIERS[heading.qualifier])} "
            f'MajorTopicYN="{q_major}">{escape(heading.qualifier)}</QualifierName>\n'
        )
    return out + "        </MeshHeading>\n"


@dataclass(frozen=True)
class _Dates:
    received: date
    accepted: date
    entrez: date
    completed: date
    revised: date


def _dates(citation: ArticleCitation, rng: random.Random) -> _Dates:
    published = citation.published
    completed = published + timedelta(days=rng.randint(20, 90))
    return _Dates(
        received=published - timedelta(days=rng.randint(60, 150)),
        accepted=published - timedelta(days=rng.randint(5, 50)),
        entrez=published + timedelta(days=rng.randint(0, 3)),
        completed=completed,
        revised=completed + timedelta(days=rng.randint(0, 120)),
    )


def record_xml(
    citation: ArticleCitation,
    found: list[Heading],
    types: list[str],
    dates: _Dates,
    indexed: bool = True,
) -> bytes:
    """One `<PubmedArticle>` (MedlineCitation then PubmedData, in the DTD's order)."""
    title, abbreviation, issn, _ = citation.journal
    published = citation.published
    status = "MEDLINE" if indexed else "PubMed-not-MEDLINE"
    parts = [
        "  <PubmedArticle>\n",
        f'    <MedlineCitation Status="{status}" Owner="NLM">\n',
        f'      <PMID Version="1">{citation.pmid}</PMID>\n',
    ]
    if indexed:
        parts.append(_date("DateCompleted", dates.completed, "      "))
    parts.append(_date("DateRevised", dates.revised, "      "))
    parts += [
        '      <Article PubModel="Electronic">\n',
        "        <Journal>\n",
        f'          <ISSN IssnType="Electronic">{escape(issn)}</ISSN>\n',
        '          <JournalIssue CitedMedium="Internet">\n',
        f"            <Volume>{published.year - 2010}</Volume>\n",
        f"            <Issue>{published.month}</Issue>\n",
        "            <PubDate>\n",
        f"              <Year>{published.year}</Year>\n",
        f"              <Month>{_MONTHS[published.month - 1]}</Month>\n",
        f"              <Day>{published.day:02d}</Day>\n",
        "            </PubDate>\n",
        "          </JournalIssue>\n",
        f"          <Title>{escape(title)}</Title>\n",
        f"          <ISOAbbreviation>{escape(abbreviation)}</ISOAbbreviation>\n",
        "        </Journal>\n",
        f"        <ArticleTitle>{escape(citation.title)}.</ArticleTitle>\n",
        f'        <ELocationID EIdType="doi" ValidYN="Y">{escape(citation.doi)}</ELocationID>\n',
    ]
    if citation.abstract:
        parts.append("        <Abstract>\n")
        parts += [
            f"          <AbstractText>{escape(text)}</AbstractText>\n" for text in citation.abstract
        ]
        parts.append("        </Abstract>\n")
    if citation.authors:
        parts.append('        <AuthorList CompleteYN="Y">\n')
        for surname, initials in citation.authors:
            parts.append(
                '          <Author ValidYN="Y">\n'
                f"            <LastName>{escape(surname)}</LastName>\n"
                f"            <ForeName>{escape(' '.join(initials))}</ForeName>\n"
                f"            <Initials>{escape(initials)}</Initials>\n"
                "          </Author>\n"
            )
        parts.append("        </AuthorList>\n")
    parts.append("        <Language>eng</Language>\n        <PublicationTypeList>\n")
    parts += [
        f"          <PublicationType UI={quoteattr(PUBLICATION_TYPES[t])}>{escape(t)}"
        "</PublicationType>\n"
        for t in types
    ]
    parts.append("        </PublicationTypeList>\n")
    parts.append(_date("ArticleDate", published, "        ", ' DateType="Electronic"'))
    parts.append("      </Article>\n")
    parts += [
        "      <MedlineJournalInfo>\n",
        "        <Country>United States</Country>\n",
        f"        <MedlineTA>{escape(abbreviation)}</MedlineTA>\n",
        f"        <NlmUniqueID>101{issn.replace('-', '')[-6:]}</NlmUniqueID>\n",
        f"        <ISSNLinking>{escape(issn)}</ISSNLinking>\n",
        "      </MedlineJournalInfo>\n",
    ]
    substances = chemicals(found) if indexed else []
    if substances:
        parts.append("      <ChemicalList>\n")
        for name in substances:
            parts.append(
                "        <Chemical>\n"
                f"          <RegistryNumber>{REGISTRY_NUMBERS[name]}</RegistryNumber>\n"
                f"          <NameOfSubstance UI={quoteattr(DESCRIPTORS[name])}>{escape(name)}"
                "</NameOfSubstance>\n"
                "        </Chemical>\n"
            )
        parts.append("      </ChemicalList>\n")
    if indexed:
        parts.append("      <CitationSubset>IM</CitationSubset>\n")
        parts.append("      <MeshHeadingList>\n")
        parts += [_heading_xml(h) for h in found]
        parts.append("      </MeshHeadingList>\n")
    if citation.keywords:
        parts.append('      <KeywordList Owner="NOTNLM">\n')
        parts += [
            f'        <Keyword MajorTopicYN="N">{escape(k)}</Keyword>\n' for k in citation.keywords
        ]
        parts.append("      </KeywordList>\n")
    parts.append("    </MedlineCitation>\n")
    medline_day = dates.completed if indexed else dates.entrez
    parts += [
        "    <PubmedData>\n",
        "      <History>\n",
        _date("PubMedPubDate", dates.received, "        ", ' PubStatus="received"'),
        _date("PubMedPubDate", dates.accepted, "        ", ' PubStatus="accepted"'),
        _date("PubMedPubDate", dates.entrez, "        ", ' PubStatus="entrez"'),
        _date("PubMedPubDate", dates.entrez, "        ", ' PubStatus="pubmed"'),
        _date("PubMedPubDate", medline_day, "        ", ' PubStatus="medline"'),
        "      </History>\n",
        "      <PublicationStatus>epublish</PublicationStatus>\n",
        "      <ArticleIdList>\n",
        f'        <ArticleId IdType="pubmed">{citation.pmid}</ArticleId>\n',
        f'        <ArticleId IdType="doi">{escape(citation.doi)}</ArticleId>\n',
        f'        <ArticleId IdType="pmc">{escape(citation.pmcid)}</ArticleId>\n',
        "      </ArticleIdList>\n",
        "    </PubmedData>\n",
        "  </PubmedArticle>\n",
    ]
    return "".join(parts).encode("utf-8")


def article_medline(seed: int, citation: ArticleCitation) -> ArticleMedline:
    """An article's records: a pure function of (seed, citation), from its own generator."""
    what = fate(citation.index)
    if what == "missing":
        return ArticleMedline(citation.pmid, what)
    rng = random.Random(f"{seed}:{citation.index}:medline")
    found = headings(citation, rng)
    types = publication_types(citation, rng)
    dates = _dates(citation, rng)
    indexed = what != "not_indexed"
    first = record_xml(citation, found, types, dates, indexed)
    terms = tuple(h.descriptor for h in found) if indexed else ()
    if what == "new":
        return ArticleMedline(
            citation.pmid,
            what,
            update=first,
            mesh_terms=terms,
            date_revised=dates.revised.isoformat(),
        )
    if what == "revised":
        extra = next(d for d in REVISION_DESCRIPTORS if d not in {h.descriptor for h in found})
        revised = sorted([*found, Heading(extra)], key=_order)
        later = dates.revised + timedelta(days=rng.randint(30, 300))
        second = record_xml(citation, revised, types, _replace_revised(dates, later))
        return ArticleMedline(
            citation.pmid,
            what,
            baseline=first,
            update=second,
            mesh_terms=tuple(h.descriptor for h in revised),
            date_revised=later.isoformat(),
        )
    return ArticleMedline(
        citation.pmid,
        what,
        baseline=first,
        deleted=what == "deleted",
        mesh_terms=() if what == "deleted" else terms,
        date_revised="" if what == "deleted" else dates.revised.isoformat(),
    )


def _replace_revised(dates: _Dates, revised: date) -> _Dates:
    return _Dates(dates.received, dates.accepted, dates.entrez, dates.completed, revised)


# ---- the two files -------------------------------------------------------------------------


class MedlineWriter:
    """The baseline and update files, compressed as the articles come (by index, which is
    PMID order, as NLM orders records), so a corpus of many articles never holds their XML:
    only a few hundred bytes each, compressed, and what the manifest lists per PMID."""

    def __init__(self):
        self._files = {name: io.BytesIO() for name in FILES}
        # mtime=0 and no file name in the header: the same records give the same bytes.
        self._zipped = {
            name: gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0)
            for name, out in self._files.items()
        }
        for zipped in self._zipped.values():
            zipped.write(_HEADER.encode())
        self._deleted: list[str] = []
        self._fates: Counter = Counter()
        self._records: Counter = Counter()
        self.entries: dict[str, dict] = {}

    def add(self, article: ArticleMedline) -> None:
        for name, data in ((BASELINE, article.baseline), (UPDATE, article.update)):
            if data:
                self._zipped[name].write(data)
                self._records[name] += 1
        if article.deleted:
            self._deleted.append(article.pmid)
        self._fates[article.fate] += 1
        entry = {"fate": article.fate, "status": STATUS_OF_FATE[article.fate]}
        if entry["status"] == "matched":
            entry["mesh_terms"] = list(article.mesh_terms)
            entry["date_revised"] = article.date_revised
            entry["source"] = UPDATE if article.update else BASELINE
        self.entries[article.pmid] = entry

    def finish(self) -> dict[str, bytes]:
        """{file name: gzip bytes}; the update's `<DeleteCitation>` after its records, as NLM
        writes it. Both files are whole even when one holds no record, so a glob of the
        folder always finds both."""
        if self._deleted:
            pmids = "".join(f'<PMID Version="1">{pmid}</PMID>\n' for pmid in self._deleted)
            self._zipped[UPDATE].write(f"<DeleteCitation>\n{pmids}</DeleteCitation>\n".encode())
        for zipped in self._zipped.values():
            zipped.write(_FOOTER.encode())
            zipped.close()
        return {name: out.getvalue() for name, out in self._files.items()}

    def summary(self) -> dict:
        """What the files hold, for the corpus summary: records per file, revisions,
        deletions, articles without a record, and the article_pubmed_status enrich gives
        each article."""
        fates = self._fates
        statuses: Counter = Counter()
        for fate_, n in fates.items():
            statuses[STATUS_OF_FATE[fate_]] += n
        shown = {s: statuses[s] for s in ("matched", "deleted", "not_found") if statuses[s]}
        return {
            "files": [f"{FOLDER}/{name}" for name in FILES],
            "baseline_records": self._records[BASELINE],
            "update_records": self._records[UPDATE],
            "revised": fates["revised"],
            "new_in_update": fates["new"],
            "deletions": fates["deleted"],
            "missing": fates["missing"],
            "without_mesh": fates["not_indexed"],
            "statuses": shown,
        }

    def write(self, output: str) -> dict:
        """Write `<output>/pubmed/` (both files); return the summary."""
        for name, data in self.finish().items():
            storage.write_bytes(storage.join(output, FOLDER, name), data)
        return self.summary()


def medline_files(articles: list[ArticleMedline]) -> dict[str, bytes]:
    """{file name: gzip bytes} of the baseline and update files of these articles."""
    writer = MedlineWriter()
    for article in sorted(articles, key=lambda a: int(a.pmid)):
        writer.add(article)
    return writer.finish()
