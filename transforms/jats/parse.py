"""JATS / NLM article XML to article fields and figure image candidates.

Pure and Beam-free. Parsing is safe by construction: no network, no DTD loading, no entity
expansion, a size bound, and any document that declares entities of its own is refused
(real PMC XML never does; an XXE or entity-expansion payload always does). Tags lose their
namespaces first, so OAI-PMH records (JATS in a default namespace), NLM 2.3 and JATS 1.4
read alike.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from lxml import etree

from transforms.errors import Rejected
from transforms.jats.text import inline_text, local_name, text_of
from transforms.pmc.licenses import license_from_text, license_group, normalize_license
from transforms.records import Article

DEFAULT_MAX_XML_BYTES = 64 * 1024 * 1024

# Containers that give a graphic outside any <fig> its type, nearest first.
_CONTAINERS = (
    "fig",
    "table-wrap",
    "disp-formula",
    "chem-struct-wrap",
    "chem-struct",
    "supplementary-material",
    "boxed-text",
    "graphic-group",
    "app",
    "floats-group",
    "sub-article",
    "body",
    "back",
    "front",
)
# A paragraph inside one of these is not running text that cites a figure.
_NOT_RUNNING_TEXT = frozenset({"caption", "fig", "table-wrap", "ref-list", "front", "front-stub"})
_NON_BODY_ABSTRACTS = frozenset({"graphical", "teaser", "toc"})
_RANGE_JOINER = re.compile(r"^\s*(?:[-\u2010-\u2015\u2212]|to|through|thru)\s*$", re.I)
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTHS = {m.lower(): i for i, m in enumerate(_MONTH_NAMES, 1)}


class JatsError(Rejected):
    """An article XML that cannot be turned into records."""


@dataclass
class GraphicCandidate:
    """One image a figure sample will be made of, with all of its text."""

    key_id: str  # figure id (or container id) the sample key is built from
    figure_id: str
    figure_label: str
    figure_type: str  # fig, or the container of a graphic outside figs
    caption: str
    href: str  # xlink:href of the chosen graphic
    fallback_hrefs: list[str] = field(default_factory=list)  # other renderings, thumbnails last
    graphic_index: int = 1
    graphic_count: int = 1
    context: list[str] = field(default_factory=list)


@dataclass
class ParsedArticle:
    article: Article
    graphics: list[GraphicCandidate]


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        remove_pis=True,
        remove_comments=True,
        huge_tree=False,
        recover=False,
    )


_XML_DECL = re.compile(rb"^\s*<\?xml[^>]*\?>")


def _parse_bytes(xml: bytes, warnings: list[str]):
    try:
        return etree.fromstring(xml, _parser())
    except etree.XMLSyntaxError as err:
        message = str(err)
        if "amplification" in message.lower() or "entity reference loop" in message.lower():
            # libxml2 stops an entity-expansion payload before our own entity check can run.
            raise JatsError("xml_forbidden_entity", message) from None
        if "encoding" not in message.lower() and "utf-8" not in message.lower():
            raise JatsError("xml_malformed", message) from None
    # Bytes that are not what the document says they are: keep the article, mark the text.
    body = _XML_DECL.sub(b"", xml, count=1)
    try:
        text = body.decode("cp1252")
        warnings.append("encoding_repaired:cp1252")
    except UnicodeDecodeError:
        text = body.decode("utf-8", errors="replace")
        warnings.append("encoding_repaired:replacement_characters")
    try:
        return etree.fromstring(text, _parser())
    except etree.XMLSyntaxError as err:
        raise JatsError("xml_malformed", str(err)) from None


def parse_document(xml: bytes, max_bytes: int = DEFAULT_MAX_XML_BYTES):
    """Parse bytes into a namespace-free element tree; returns (root, warnings)."""
    if xml is None or not xml.strip():
        raise JatsError("xml_empty", "the XML file is empty")
    if len(xml) > max_bytes:
        raise JatsError("xml_too_large", f"{len(xml)} bytes > {max_bytes}")
    warnings: list[str] = []
    root = _parse_bytes(xml, warnings)
    dtd = root.getroottree().docinfo.internalDTD
    if dtd is not None:
        entities = [e.name for e in dtd.iterentities()]
        if entities:
            raise JatsError(
                "xml_forbidden_entity",
                f"document declares its own entities ({', '.join(entities[:5])}); refused",
            )
    for element in root.iter():
        tag = element.tag
        if isinstance(tag, str) and tag[0] == "{":
            element.tag = tag.rsplit("}", 1)[1]
    return root, warnings


def find_articles(root) -> list:
    """Top-level <article> elements: the root, or those in an OAI-PMH or <articles> wrapper."""
    if local_name(root) == "article":
        return [root]
    found = []
    for element in root.iter("article"):
        if not any(local_name(a) == "article" for a in element.iterancestors()):
            found.append(element)
    return found


def href_of(element) -> str:
    for name, value in element.attrib.items():
        if name == "href" or name.endswith("}href"):
            return value.strip()
    return ""


def normalize_pmcid(value: str) -> str:
    digits = re.sub(r"\D", "", (value or "").split(".")[0])
    return f"PMC{int(digits)}" if digits else ""


def safe_key_part(value: str) -> str:
    """A figure id as a key part: letters, digits, '_' and '-' only (webdataset splits on '.')."""
    return _KEY_UNSAFE.sub("-", value).strip("-") or "x"


# ---- article fields -------------------------------------------------------------------


def _first(element, *paths):
    if element is None:
        return None
    for path in paths:
        found = element.find(path)
        if found is not None:
            return found
    return None


def _article_ids(meta) -> dict[str, str]:
    ids: dict[str, str] = {}
    for aid in meta.findall("article-id") if meta is not None else ():
        kind = aid.get("pub-id-type", "")
        ids.setdefault(kind, (aid.text or "").strip())
    return ids


def _pmcid_from_ids(ids: dict[str, str]) -> str:
    for kind in ("pmcid", "pmc", "pmcid-ver", "pmc-uid", "pmcaid"):
        if ids.get(kind):
            return normalize_pmcid(ids[kind])
    return ""


def _int(text: str | None) -> int | None:
    match = re.search(r"\d+", text or "")
    return int(match.group()) if match else None


def _date_parts(pub_date) -> tuple[int | None, int | None, int | None]:
    """(year, month, day) of a <pub-date> or <date>; month and day None where not given."""
    year_el = pub_date.find("year")
    year = _int(year_el.text) if year_el is not None else None
    if year is None:
        iso = pub_date.get("iso-8601-date", "")
        year = _int(iso[:4])
        month, day = _int(iso[5:7]), _int(iso[8:10])
    else:
        month_el, day_el = pub_date.find("month"), pub_date.find("day")
        month = _int(month_el.text) if month_el is not None else None
        if month is None and month_el is not None and month_el.text:
            month = _MONTHS.get(month_el.text.strip()[:3].lower())
        day = _int(day_el.text) if day_el is not None else None
    if year is None or not (month and 1 <= month <= 12):
        return year, None, None
    return year, month, day if day and 1 <= day <= 31 else None


def _date_of(pub_date) -> tuple[str, int | None]:
    year, month, day = _date_parts(pub_date)
    if year is None:
        return "", None
    if month and day:
        return f"{year:04d}-{month:02d}-{day:02d}", year
    if month:
        return f"{year:04d}-{month:02d}", year
    return f"{year:04d}", year


def _date_kind(pub_date) -> str:
    """What a <pub-date> dates, in one spelling for NLM 2.3 (pub-type) and JATS 1.4
    (date-type "pub" or "publication" with publication-format)."""
    kind = (pub_date.get("pub-type") or pub_date.get("date-type") or "").strip().lower()
    if kind in ("pub", "publication"):
        form = pub_date.get("publication-format", "").strip().lower()
        return {"electronic": "epub", "print": "ppub"}.get(form, "pub")
    return kind


# The date an article was published, best first: online, then print (JATS 1.4 "pub"
# without a format), then the issue's; never its PMC release or an update.
_PUBLICATION_RANK = {"epub": 0, "ppub": 1, "pub": 1, "epub-ppub": 2, "collection": 2}
_NOT_PUBLICATION = frozenset({"pmc-release", "update", "corrected", "retracted", "rev-recd"})
# The issue's own date, the one that goes with volume and issue, best first.
_ISSUE_DATES = ("ppub", "epub-ppub", "pub", "collection")


def _dated(meta) -> list[tuple[str, object]]:
    dates = meta.findall("pub-date") if meta is not None else []
    return [(_date_kind(d), d) for d in dates if _date_parts(d)[0] is not None]


def _published(dated: list[tuple[str, object]]):
    def rank(item) -> int:
        kind = item[0]
        return 4 if kind in _NOT_PUBLICATION else _PUBLICATION_RANK.get(kind, 3)

    return min(dated, key=rank)[1] if dated else None


def _publication_date(meta) -> tuple[str, int | None]:
    """The date the article was published: online first, then in print."""
    published = _published(_dated(meta))
    return _date_of(published) if published is not None else ("", None)


def _issue_date(meta) -> str:
    """The date a citation gives: the issue's (an article online in September 2011 in the
    January 2012 issue is cited "2012 Jan"), as PMC writes it ("2012 Jan", "2004 May 11").
    Where the publication date falls within the issue's, its more precise form is taken."""
    dated = _dated(meta)
    if not dated:
        return ""
    by_kind: dict[str, object] = {}
    for kind, pub_date in dated:
        by_kind.setdefault(kind, pub_date)
    published = _published(dated)
    issue = next((by_kind[k] for k in _ISSUE_DATES if k in by_kind), published)
    year, month, day = _date_parts(issue)
    if published is not issue:
        y, m, d = _date_parts(published)
        within = y == year and month in (None, m) and day in (None, d)
        if within and (month, day) != (m, d):
            year, month, day = y, m, d
    text = f"{year}"
    if month:
        text += f" {_MONTH_NAMES[month - 1]}" + (f" {day}" if day else "")
    else:
        season = issue.find("season")
        if season is not None and (season.text or "").strip():
            text += f" {season.text.strip()}"
    return text


def _license(meta) -> str:
    permissions = _first(meta, "permissions")
    if permissions is None:
        return ""
    for lic in permissions.iter("license"):
        code = normalize_license(href_of(lic))
        if code:
            return code
        for ref in lic.iter("license_ref"):
            code = normalize_license(ref.text)
            if code:
                return code
        # Springer/Nature, Wiley: the license URL only as a link in the license text.
        for link in lic.iter("ext-link", "uri"):
            code = normalize_license(href_of(link) or link.text)
            if code.startswith("CC"):
                return code
        code = normalize_license(lic.get("license-type", ""))
        if code.startswith("CC"):
            return code
    # Older PLOS and others: the license only named in words, in the license or, with no
    # license element, in the copyright statement.
    holders = list(permissions.iter("license")) or permissions.findall("copyright-statement")
    for holder in holders:
        code = license_from_text(inline_text(holder))
        if code:
            return code
    return ""


def _citation(journal_abbrev: str, meta) -> str:
    """PMC's form: "Nucleic Acids Res. 2012 Jan; 40(2):884-891"."""
    if meta is None:
        return ""
    parts = [f"{journal_abbrev}." if journal_abbrev else "", _issue_date(meta)]
    volume = (
        (_first(meta, "volume").text or "").strip() if _first(meta, "volume") is not None else ""
    )
    issue = (_first(meta, "issue").text or "").strip() if _first(meta, "issue") is not None else ""
    fpage = _first(meta, "fpage")
    lpage = _first(meta, "lpage")
    eloc = _first(meta, "elocation-id")
    pages = ""
    if fpage is not None and fpage.text:
        pages = fpage.text.strip() + (
            f"-{lpage.text.strip()}" if lpage is not None and lpage.text else ""
        )
    elif eloc is not None and eloc.text:
        pages = eloc.text.strip()
    tail = volume + (f"({issue})" if issue else "")
    tail += f":{pages}" if tail and pages else pages  # "2024 Jan 1; 2023.12.31.573776"
    text = " ".join(p for p in parts if p)
    return f"{text}; {tail}" if tail else text


_DOI = re.compile(r"10\.\d{4,9}/\S+")
_DOI_URL = re.compile(r"^(?:https?://)?(?:dx\.)?doi\.org/", re.I)


def _doi(value: str) -> str:
    """A bare DOI from "10.x/y", "doi:10.x/y" or "https://doi.org/10.x/y"; "" otherwise."""
    value = unquote(_DOI_URL.sub("", value.strip()))
    value = re.sub(r"^doi:\s*", "", value, flags=re.I)
    return value if _DOI.fullmatch(value) else ""


def _reference_id(ref) -> str:
    """A reference's id: its PMID, else "doi:" and its DOI, else its PMCID; "" without one.

    Read from <pub-id> and PLOS's <object-id> (pub-id-type), and JATS 1.4's typed
    <ext-link> (ext-link-type doi, pmid, pmcid); a plain link to doi.org is a DOI too.
    """
    found: dict[str, str] = {}
    links: list[str] = []
    for element in ref.iter("pub-id", "object-id", "ext-link"):
        link = element.tag == "ext-link"
        kind = element.get("ext-link-type" if link else "pub-id-type", "").strip().lower()
        if kind not in ("pmid", "doi", "pmcid", "pmc"):
            if link and _DOI_URL.match(href_of(element)):
                links.append(href_of(element))
            continue
        value = ((href_of(element) if link else "") or "".join(element.itertext())).strip()
        if kind == "pmid" and value.isdigit():
            found.setdefault("pmid", value)
        elif kind == "doi" and _doi(value):
            found.setdefault("doi", _doi(value))
        elif kind in ("pmcid", "pmc") and normalize_pmcid(value):
            found.setdefault("pmcid", normalize_pmcid(value))
    if "pmid" in found:
        return found["pmid"]
    doi = found.get("doi") or next((_doi(link) for link in links if _doi(link)), "")
    if doi:
        return "doi:" + doi
    return found.get("pmcid", "")


def _references(article) -> tuple[list[str], int]:
    refs = [
        r
        for r in article.iter("ref")
        if any(local_name(a) == "ref-list" for a in r.iterancestors())
    ]
    ids = [ident for ident in map(_reference_id, refs) if ident]
    return ids, len(refs)


def _journal_abbreviation(journal_meta) -> str:
    """The journal's abbreviation, NLM's first: journal ids, then the abbreviated titles
    (JATS 1.4 files may carry no NLM journal id)."""
    if journal_meta is None:
        return ""
    ids = {}
    for jid in journal_meta.findall("journal-id"):
        ids.setdefault(jid.get("journal-id-type", ""), inline_text(jid))
    titles = {}
    for title in journal_meta.iter("abbrev-journal-title"):
        titles.setdefault(title.get("abbrev-type", ""), inline_text(title))
    for found in (
        ids.get("nlm-ta"),
        ids.get("iso-abbrev"),
        titles.get("nlm-ta"),
        titles.get("iso-abbrev"),
        titles.get("pubmed"),
        titles.get(""),
        titles.get("publisher"),
        *titles.values(),
    ):
        if found:
            return found
    return ""


def article_fields(article_el) -> Article:
    front = article_el.find("front")
    meta = _first(front, "article-meta")
    journal_meta = _first(front, "journal-meta")
    ids = _article_ids(meta)
    journal_el = _first(journal_meta, "journal-title-group/journal-title", "journal-title")
    journal_abbrev = _journal_abbreviation(journal_meta)
    journal = inline_text(journal_el) if journal_el is not None else journal_abbrev
    date, year = _publication_date(meta)
    code = _license(meta)
    abstracts = [
        text_of(a)
        for a in (meta.findall("abstract") if meta is not None else [])
        if a.get("abstract-type", "") not in _NON_BODY_ABSTRACTS
    ]
    keywords = [inline_text(k) for k in meta.iter("kwd")] if meta is not None else []
    categories = _first(meta, "article-categories")
    subjects = (
        [inline_text(s) for s in categories.iter("subject")] if categories is not None else []
    )
    body = article_el.find("body")
    ref_ids, ref_count = _references(article_el)
    return Article(
        article_accession_id=_pmcid_from_ids(ids),
        article_pmid=ids.get("pmid", ""),
        article_doi=ids.get("doi", ""),
        article_title=inline_text(_first(meta, "title-group/article-title")),
        article_journal=journal,
        article_citation=_citation(journal_abbrev or journal, meta),
        article_date=date,
        article_year=year,
        article_type=article_el.get("article-type", ""),
        article_license=code,
        article_license_group=license_group(code),
        # PLOS repeats its subject tree's upper levels under every leaf: each once, in order.
        article_keywords=list(dict.fromkeys(k for k in keywords if k)),
        article_subject=list(dict.fromkeys(s for s in subjects if s)),
        article_abstract="\n".join(a for a in abstracts if a),
        article_text=text_of(body, skip={"fig", "fig-group", "table-wrap", "table-wrap-group"}),
        article_reference_ids=ref_ids,
        article_reference_count=ref_count,
    )


# ---- figures, graphics and in-line references ----------------------------------------


def _container(graphic):
    for ancestor in graphic.iterancestors():
        tag = local_name(ancestor)
        if tag in _CONTAINERS:
            return ancestor, tag
        if tag == "article":
            return ancestor, "article"
    return None, "article"


def _is_thumbnail(graphic) -> bool:
    return graphic.get("specific-use", "").lower() in ("thumbnail", "thumb") or href_of(
        graphic
    ).lower().endswith(".gif")


def _graphic_groups(article_el) -> list[tuple[object, list]]:
    """(chosen graphic, other renderings) for every image in document order.

    All renderings in one <alternatives> are one image: the full one is chosen, a gif
    thumbnail only where nothing else is there.
    """
    groups: list[tuple[object, list]] = []
    seen_alternatives: set = set()
    for graphic in article_el.iter("graphic"):
        parent = graphic.getparent()
        if parent is not None and local_name(parent) == "alternatives":
            if parent in seen_alternatives:
                continue
            seen_alternatives.add(parent)
            renderings = [g for g in parent if local_name(g) == "graphic"]
            ordered = sorted(renderings, key=_is_thumbnail)
            groups.append((ordered[0], ordered[1:]))
        else:
            groups.append((graphic, []))
    return groups


def _caption_text(holder) -> str:
    label = holder.find("label")
    caption = holder.find("caption")
    parts = [inline_text(label) if label is not None else "", text_of(caption)]
    return " ".join(p for p in parts if p).strip()


def _target_map(article_el, containers: list) -> dict[str, list]:
    """Every id that can be cited, to the image containers it stands for."""
    targets: dict[str, list] = {}
    for container in containers:
        for element in container.iter():
            ident = element.get("id") if isinstance(element.tag, str) else None
            if ident:
                targets.setdefault(ident, [])
                if container not in targets[ident]:
                    targets[ident].append(container)
    for group in article_el.iter("fig-group"):
        ident = group.get("id")
        if ident:
            members = [f for f in group.iter("fig") if f in containers]
            targets[ident] = members
    return targets


def _resolve_rid(token: str, targets: dict[str, list]) -> list:
    if token in targets:
        return targets[token]
    # Sub-figure ids ("F1A", "fig2-b"): cite the figure they belong to.
    for cut in (1, 2, 3):
        base = token[:-cut].rstrip("-_.")
        if len(token) > cut and base in targets and token[len(base) :].strip("-_.").isalnum():
            return targets[base]
    return []


def _scope(element):
    """The sub-article or response an element belongs to; None for the article itself."""
    return next(element.iterancestors("sub-article", "response"), None)


def _running_paragraph(xref):
    paragraph = None
    for ancestor in xref.iterancestors():
        tag = local_name(ancestor)
        if tag in _NOT_RUNNING_TEXT:
            return None
        if tag == "p" and paragraph is None:
            paragraph = ancestor
    return paragraph


def _citations(article_el, containers: list) -> tuple[dict, int]:
    """Paragraphs citing each container (document order) and the count of fig xrefs."""
    targets = _target_map(article_el, containers)
    order = {c: i for i, c in enumerate(containers)}
    cited: dict = {c: [] for c in containers}
    fig_xrefs = 0
    xrefs = list(article_el.iter("xref"))
    for index, xref in enumerate(xrefs):
        if xref.get("ref-type") == "fig":
            fig_xrefs += 1
        hits: list = []
        for token in (xref.get("rid") or "").split():
            hits.extend(t for t in _resolve_rid(token, targets) if t not in hits)
        if not hits:
            continue
        # "Figures 2–4": the range covers the figures between its two ends.
        following = xref.getnext()
        if (
            following is not None
            and local_name(following) == "xref"
            and _RANGE_JOINER.match(xref.tail or "")
            and index + 1 < len(xrefs)
        ):
            ends = [
                t
                for tok in (following.get("rid") or "").split()
                for t in _resolve_rid(tok, targets)
            ]
            if ends:
                lo, hi = order[hits[0]], order[ends[-1]]
                if lo < hi and hi - lo <= 50:
                    hits.extend(c for c in containers[lo : hi + 1] if c not in hits)
        paragraph = _running_paragraph(xref)
        if paragraph is None:
            continue
        # A decision letter or author response citing "Figure 2" is not the article's text
        # about it; it counts only for figures of its own.
        scope = _scope(paragraph)
        for target in hits:
            if _scope(target) is scope and paragraph not in cited[target]:
                cited[target].append(paragraph)
    return cited, fig_xrefs


def figure_candidates(article_el, pmcid: str) -> tuple[list[GraphicCandidate], int]:
    groups = _graphic_groups(article_el)
    by_container: dict = {}
    container_order: list = []
    outside_counter = 0
    for chosen, others in groups:
        container, tag = _container(chosen)
        if tag != "fig" or container is None:
            # Graphics outside figs are samples of their own, typed by where they stand.
            outside_counter += 1
            key_holder = (
                container
                if container is not None
                and tag
                in (
                    "table-wrap",
                    "disp-formula",
                    "chem-struct-wrap",
                    "supplementary-material",
                    "boxed-text",
                )
                else None
            )
            container = (key_holder, chosen, outside_counter) if key_holder is None else key_holder
        if container not in by_container:
            by_container[container] = []
            container_order.append(container)
        by_container[container].append((chosen, others, tag))

    fig_containers = [c for c in container_order if not isinstance(c, tuple)]
    cited, fig_xref_count = _citations(article_el, fig_containers)
    paragraph_text: dict = {}

    candidates: list[GraphicCandidate] = []
    used_keys: set[str] = set()
    fig_number = 0
    for container in container_order:
        members = by_container[container]
        tag = members[0][2]
        if isinstance(container, tuple):
            _, graphic, number = container
            ident = graphic.get("id") or f"graphic{number}"
            label, caption, context = "", "", []
        else:
            if tag == "fig":
                fig_number += 1
            ident = (
                container.get("id") or f"{tag}{fig_number if tag == 'fig' else len(used_keys) + 1}"
            )
            caption = _caption_text(container)
            if tag == "fig" and not text_of(container.find("caption")):
                group = next((a for a in container.iterancestors("fig-group")), None)
                if group is not None:
                    caption = " ".join(p for p in (caption, _caption_text(group)) if p)
            label_el = container.find("label")
            label = inline_text(label_el) if label_el is not None else ""
            context = []
            for paragraph in cited.get(container, []):
                if paragraph not in paragraph_text:
                    paragraph_text[paragraph] = text_of(paragraph, floats=True)
                context.append(paragraph_text[paragraph])
        base = safe_key_part(ident)
        key_id, suffix = base, 2

        def full_keys(key_id: str, count: int = len(members)) -> set[str]:
            # What sample_key will make of it: "F1", or "F1_1", "F1_2" for several images.
            return {key_id} if count == 1 else {f"{key_id}_{i}" for i in range(1, count + 1)}

        while full_keys(key_id) & used_keys:
            key_id = f"{base}-{suffix}"
            suffix += 1
        used_keys.update(full_keys(key_id))
        for index, (chosen, others, _) in enumerate(members, 1):
            candidates.append(
                GraphicCandidate(
                    key_id=key_id,
                    figure_id=ident,
                    figure_label=label,
                    figure_type=tag if tag != "fig" else "fig",
                    caption=caption,
                    href=href_of(chosen),
                    fallback_hrefs=[href_of(o) for o in others if href_of(o)],
                    graphic_index=index,
                    graphic_count=len(members),
                    context=list(context),
                )
            )
    return candidates, fig_xref_count


def parse_articles(xml: bytes, max_bytes: int = DEFAULT_MAX_XML_BYTES) -> list[ParsedArticle]:
    """Every article in an XML document, with its image candidates.

    Raises JatsError (with a reason code) for what cannot be parsed at all.
    """
    root, warnings = parse_document(xml, max_bytes)
    articles = find_articles(root)
    if not articles:
        raise JatsError("xml_not_jats", f"no <article> element (root is <{local_name(root)}>)")
    parsed = []
    for article_el in articles:
        article = article_fields(article_el)
        graphics, fig_xrefs = figure_candidates(article_el, article.article_accession_id)
        article.article_figure_count = len(graphics)
        article.article_fig_xref_count = fig_xrefs
        article.article_parse_warnings = list(warnings)
        parsed.append(ParsedArticle(article=article, graphics=graphics))
    return parsed


def sample_key(pmcid: str, candidate: GraphicCandidate, version: int | None = None) -> str:
    """`PMC<id>_<figure id>`, plus the graphic index where one figure has several images."""
    prefix = pmcid if version is None else f"{pmcid}v{version}"
    key = f"{prefix}_{candidate.key_id}"
    return key if candidate.graphic_count == 1 else f"{key}_{candidate.graphic_index}"
