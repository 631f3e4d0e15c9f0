"""Text the parser gets right: contexts without floats, licenses named in words, reference ids
in every JATS spelling, the issue's date in citations, sub-articles, invisible operators.

Each case runs on a small article built here and, where the issue named one, on the real
article in shared/pmc; expected values for real files come from lxml, not from the parser.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import PMC, read_table, run_extract
from lxml import etree
from PIL import Image

from transforms.jats.parse import parse_articles
from transforms.pmc.licenses import license_from_text, license_group, normalize_license

_SAFE = etree.XMLParser(resolve_entities=False, load_dtd=False, no_network=True)
_INVISIBLE = re.compile("[\u2061-\u2064]")
_FLOATS = {
    "fig",
    "fig-group",
    "table-wrap",
    "table-wrap-group",
    "boxed-text",
    "chem-struct-wrap",
    "supplementary-material",
}


def _article(front: str = "", body: str = "", back: str = "", tail: str = "") -> str:
    return (
        '<article xmlns:xlink="http://www.w3.org/1999/xlink" '
        'xmlns:mml="http://www.w3.org/1998/Math/MathML"><front>'
        f"{front}</front><body>{body}</body><back>{back}</back>{tail}</article>"
    )


def _meta(inner: str, journal: str = "") -> str:
    return (
        f"<journal-meta>{journal}</journal-meta><article-meta>"
        f'<article-id pub-id-type="pmcid">PMC42</article-id>{inner}</article-meta>'
    )


def _parse(xml: str):
    (parsed,) = parse_articles(xml.encode())
    return parsed


def _contexts(parsed) -> dict[str, list[str]]:
    return {g.figure_id: g.context for g in parsed.graphics}


def _fig(ident: str, caption: str) -> str:
    return (
        f'<fig id="{ident}"><label>Figure {ident}.</label><caption><p>{caption}</p></caption>'
        f'<graphic xlink:href="{ident.lower()}"/></fig>'
    )


def _ln(element) -> str:
    return etree.QName(element).localname if isinstance(element.tag, str) else ""


def _norm(text: str) -> str:
    return " ".join(text.split())


def _real_xml_files() -> list[Path]:
    if not PMC.is_dir():
        return []
    files = sorted(PMC.glob("nxml/*"))
    return files + sorted(p for p in PMC.glob("packages/*/*") if p.suffix in (".xml", ".nxml"))


# ---- 1. a citing paragraph's text leaves out the floats nested in it ---------------------------

NESTED = _article(
    body=(
        '<sec><p>Cells grew (<xref ref-type="fig" rid="F1">Figure 1</xref>).'
        + _fig("F1", "First caption text.")
        + 'Then they died (<xref ref-type="fig" rid="F2">Figure 2</xref>)'
        + _fig("F2", "Second caption text.")
        + ", as expected"
        + '<table-wrap id="T1"><label>Table 1</label><caption><p>Table caption.</p></caption>'
        + "<table><tr><td>cell value</td></tr></table></table-wrap>"
        + " and\nmeasured"
        + '<boxed-text><p>Box text.</p></boxed-text> <supplementary-material id="S1">'
        + "<caption><p>Supplement caption.</p></caption></supplementary-material>"
        + ' again: <disp-formula id="E1"><label>(1)</label><graphic xlink:href="e1"/>'
        + '</disp-formula> <disp-formula id="E2"><mml:math><mml:mi>x</mml:mi><mml:mo>=</mml:mo>'
        + "<mml:mn>2</mml:mn></mml:math></disp-formula> holds"
        + '<fig-group id="G1"><caption><p>Group caption.</p></caption>'
        + _fig("F3", "Third caption text.")
        + "</fig-group>.</p>"
        + '<p>Only <xref ref-type="fig" rid="F3">Figure 3</xref> here.</p></sec>'
    )
)
# A display formula stays a line of its own, as everywhere in extracted text.
NESTED_TEXT = (
    "Cells grew (Figure 1). Then they died (Figure 2), as expected and measured again:"
    "\nx = 2\nholds."
)


def test_a_citing_paragraph_leaves_out_the_floats_inside_it():
    contexts = _contexts(_parse(NESTED))
    assert contexts["F1"] == [NESTED_TEXT]
    assert contexts["F2"] == [NESTED_TEXT]
    # F3 is cited by the next paragraph only; the one that holds it does not cite it.
    assert contexts["F3"] == ["Only Figure 3 here."]


def test_the_same_in_a_default_namespace():
    # OAI-PMH records carry JATS in a default namespace.
    namespaced = NESTED.replace(
        "<article ", '<article xmlns="https://jats.nlm.nih.gov/ns/archiving/1.3/" ', 1
    )
    assert _contexts(_parse(namespaced)) == _contexts(_parse(NESTED))


def test_a_hostile_paragraph_of_whitespace_and_floats_still_reads():
    floats = "".join(f'<fig id="X{i}"><caption><p>c</p></caption></fig> \n ' for i in range(5000))
    xml = _article(
        body=f'<p>Start{" " * 200_000}<xref ref-type="fig" rid="F1">Figure 1</xref>{floats}end.'
        + _fig("F1", "Cap.")
        + "</p>"
    )
    assert _contexts(_parse(xml))["F1"] == ["Start Figure 1 end."]


def test_a_float_between_words_leaves_one_space_and_none_before_punctuation():
    xml = _article(
        body=(
            '<p>as shown<fig id="F1"><caption><p>Cap.</p></caption><graphic xlink:href="a"/>'
            '</fig>, the (<fig id="F2"><caption><p>Cap.</p></caption><graphic xlink:href="b"/>'
            '</fig><xref ref-type="fig" rid="F1">Figure 1</xref>) word<table-wrap><table><tr>'
            "<td>x</td></tr></table></table-wrap>next.</p>"
        )
    )
    assert _contexts(_parse(xml))["F1"] == ["as shown, the (Figure 1) word next."]


def test_a_paragraph_citing_a_figure_twice_is_its_context_once():
    xml = _article(
        body=(
            '<p>See <xref ref-type="fig" rid="F1">Fig. 1</xref> and again '
            '<xref ref-type="fig" rid="F1">Fig. 1</xref>.' + _fig("F1", "Cap.") + "</p>"
        )
    )
    assert _contexts(_parse(xml))["F1"] == ["See Fig. 1 and again Fig. 1."]


def test_line_breaks_in_the_xml_source_do_not_break_sentences():
    xml = _article(
        body=(
            '<p>A sentence laid out\n   over <xref ref-type="fig" rid="F1">Figure\n1</xref>\n'
            "lines.</p>"
            '<fig id="F1"><caption><p>A caption laid\n out over lines.</p></caption>'
            '<graphic xlink:href="a"/></fig>'
        )
    )
    (graphic,) = _parse(xml).graphics
    assert graphic.context == ["A sentence laid out over Figure 1 lines."]
    assert graphic.caption == "A caption laid out over lines."


def test_preformatted_text_keeps_its_lines():
    xml = _article(
        body='<p>Run\nthis (<xref ref-type="fig" rid="F1">Figure 1</xref>):'
        "<preformat>make demo\nmake test</preformat></p>" + _fig("F1", "Cap.")
    )
    assert _contexts(_parse(xml))["F1"] == ["Run this (Figure 1):\nmake demo\nmake test"]


def test_the_article_text_keeps_sentences_apart_where_a_figure_stood():
    parsed = _parse(NESTED)
    assert "(Figure 1). Then they died" in parsed.article.article_text
    assert "First caption text" not in parsed.article.article_text


def test_real_pmc3258128_figure_1_context_is_its_paragraph_alone(pmc_dir):
    path = pmc_dir / "nxml/pyEuropePMC__PMC3258128_NAR.xml"
    contexts = _contexts(parse_articles(path.read_bytes())[0])
    first = contexts["gkr715-F1"][0]
    assert first.startswith("To identify mRNA targets of miR-122")
    assert first.endswith("enrichment of these endogenous targets (Figure 1).")
    assert "Affinity purification with biotin-tagged" not in first
    assert "\n" not in first


def _caption_lines(article) -> list[str]:
    """Every paragraph and title of every float's caption, by lxml alone (labels are cited)."""
    lines = []
    for caption in article.iter():
        if _ln(caption) == "caption" and _ln(caption.getparent()) in _FLOATS:
            for part in caption.iter():
                text = _norm("".join(part.itertext())) if _ln(part) in ("p", "title") else ""
                if len(text) >= 25:
                    lines.append(text)
    return lines


def test_no_real_context_holds_a_caption(pmc_dir):
    files = _real_xml_files()
    assert len(files) >= 58
    checked = 0
    for path in files:
        data = path.read_bytes()
        source = _norm(data.decode("utf-8", errors="replace"))
        root = etree.fromstring(data, _SAFE)
        articles = [
            a
            for a in root.iter()
            if _ln(a) == "article" and not any(_ln(x) == "article" for x in a.iterancestors())
        ]
        for article, parsed in zip(articles, parse_articles(data), strict=True):
            captions = _caption_lines(article)
            for graphic in parsed.graphics:
                for context in graphic.context:
                    flat = _norm(context)
                    leaked = [c for c in captions if c in flat]
                    assert not leaked, (path.name, graphic.figure_id, leaked[0][:80])
                    assert "  " not in context, (path.name, graphic.figure_id)
                    # "word.Next" only where the article itself has it.
                    for glued in re.findall(r"[a-z]{2}\.[A-Z][a-z]", context):
                        assert glued in source, (path.name, graphic.figure_id, glued)
                    checked += 1
    assert checked > 500


# ---- 2. licenses named only in words ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "code"),
    [
        (
            "This is an open-access article distributed under the terms of the Creative Commons"
            " Attribution License, which permits unrestricted use, distribution, and"
            " reproduction in any medium, provided the original work is properly cited.",
            "CC BY",
        ),
        (
            "distributed under the Creative Commons Attribution Non-Commercial License, which"
            " permits unrestricted non-commercial use",
            "CC BY-NC",
        ),
        ("Creative Commons Attribution-NonCommercial-NoDerivs 3.0 IGO License", "CC BY-NC-ND"),
        (
            "Creative Commons Attribution\u2010NonCommercial\u2010ShareAlike 4.0 International",
            "CC BY-NC-SA",
        ),
        ("under the Creative Commons Attribution-NoDerivatives 4.0 License", "CC BY-ND"),
        ("the Creative Commons Attribution-Share Alike 3.0 Unported License", "CC BY-SA"),
        ("Creative Commons License (Attribution-NonCommercial 4.0 International)", "CC BY-NC"),
        ("This article is licensed under CC BY-NC-ND 4.0.", "CC BY-NC-ND"),
        ("Published under a CC-BY 4.0 license.", "CC BY"),
        ("Available under CC BY-NC-SA 3.0 IGO.", "CC BY-NC-SA"),
        ("made available under the Creative Commons CC0 public domain dedication.", "CC0"),
        (
            "This work is licensed under the Creative Commons Attribution 4.0 International"
            " License. The Creative Commons Public Domain Dedication waiver applies to the data.",
            "CC BY",
        ),
        ("This article is not distributed under a Creative Commons license.", ""),
        ("This article is not published under the Creative Commons Attribution License.", ""),
        ("Material is included in the article's Creative Commons licence.", ""),
        ("This article is a US Government work and is in the public domain in the USA.", ""),
        ("This document may be redistributed and reused, subject to certain conditions.", ""),
        ("", ""),
    ],
)
def test_license_text_names_its_license(text, code):
    assert license_from_text(text) == code


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("cc-by-nd-nc", "CC BY-NC-ND"),
        ("https://creativecommons.org/licenses/by-nd-nc/1.0/", "CC BY-NC-ND"),
        ("http://creativecommons.org/licenses/by-nc/3.0", "CC BY-NC"),
        ("https://creativecommons.org/licenses/by", "CC BY"),
        ("https://creativecommons.org/licenses/by-nc-sa/3.0/igo/", "CC BY-NC-SA"),
    ],
)
def test_license_codes_put_their_terms_in_pmc_order(value, code):
    assert normalize_license(value) == code
    assert license_group(value) == ("noncommercial" if "-NC" in code else "commercial")


def _permissions(inner: str) -> str:
    return _article(_meta(f"<permissions>{inner}</permissions>"))


@pytest.mark.parametrize(
    ("permissions", "code", "group"),
    [
        (
            "<license><license-p>This is an open-access article distributed under the terms of"
            " the Creative Commons Attribution License.</license-p></license>",
            "CC BY",
            "commercial",
        ),
        (
            "<copyright-statement>\u00a9 2005 Doe. This is an open-access article distributed"
            " under the terms of the Creative Commons Attribution-NonCommercial License."
            "</copyright-statement>",
            "CC BY-NC",
            "noncommercial",
        ),
        (
            "<license><license-p>Reuse is not permitted under a Creative Commons Attribution"
            " License.</license-p></license>",
            "",
            "other",
        ),
        (
            '<license xlink:href="https://creativecommons.org/licenses/by-nc/4.0/"><license-p>'
            "Creative Commons Attribution License</license-p></license>",
            "CC BY-NC",
            "noncommercial",
        ),
    ],
)
def test_a_license_given_only_in_words(permissions, code, group):
    article = _parse(_permissions(permissions)).article
    assert (article.article_license, article.article_license_group) == (code, group)


@pytest.mark.parametrize(
    "name",
    [
        "allofplos__journal.pbio.0020188.xml",
        "allofplos__journal.pmed.0030445.xml",
        "allofplos__journal.pone.0008915.xml",
        "allofplos__journal.pone.0012262.xml",
    ],
)
def test_real_plos_license_text_is_cc_by(pmc_dir, name):
    path = pmc_dir / "nxml" / name
    (license_el,) = [
        e for e in etree.fromstring(path.read_bytes(), _SAFE).iter() if _ln(e) == "license"
    ]
    assert not any(k.endswith("href") for k in license_el.attrib)
    assert "Creative Commons Attribution License" in "".join(license_el.itertext())
    article = parse_articles(path.read_bytes())[0].article
    assert (article.article_license, article.article_license_group) == ("CC BY", "commercial")


def test_real_licenses_without_cc_stay_empty(pmc_dir):
    for name in ("Pub2TEI__PMC3062852_main.nxml", "pubmed-client__PMC9000000.oai.xml"):
        article = parse_articles((pmc_dir / "nxml" / name).read_bytes())[0].article
        assert (article.article_license, article.article_license_group) == ("", "other")


# ---- 3. reference ids in every spelling -------------------------------------------------------

REFS = _article(
    back=(
        "<ref-list>"
        '<ref id="r1"><mixed-citation>A. <object-id pub-id-type="pmid">111</object-id>'
        "</mixed-citation></ref>"
        '<ref id="r2"><mixed-citation>B. <object-id pub-id-type="doi">10.1371/journal.x.1'
        "</object-id></mixed-citation></ref>"
        '<ref id="r3"><mixed-citation>C. <ext-link ext-link-type="doi" '
        'xlink:href="https://doi.org/10.1000/ABC.2"/></mixed-citation></ref>'
        '<ref id="r4"><mixed-citation>D. <ext-link ext-link-type="doi" '
        'xlink:href="10.1000/d4"/><ext-link ext-link-type="pmid" xlink:href="444"/>'
        "</mixed-citation></ref>"
        '<ref id="r5"><mixed-citation>E. <ext-link ext-link-type="pmcid" '
        'xlink:href="PMC555"/></mixed-citation></ref>'
        '<ref id="r6"><element-citation><pub-id pub-id-type="doi">doi:10.1000/f6</pub-id>'
        "</element-citation></ref>"
        '<ref id="r7"><mixed-citation>G. <comment>doi: <ext-link ext-link-type="uri" '
        'xlink:href="http://dx.doi.org/10.1000/g%3C7%3E">10.1000/g&lt;7&gt;</ext-link>'
        "</comment></mixed-citation></ref>"
        '<ref id="r8"><mixed-citation>H. <ext-link ext-link-type="uri" '
        'xlink:href="https://example.org/h8">site</ext-link></mixed-citation></ref>'
        '<ref id="r9"><mixed-citation>I. <ext-link ext-link-type="doi" xlink:href="not a doi"/>'
        '<object-id pub-id-type="pmid">n/a</object-id></mixed-citation></ref>'
        '<ref id="r10"><element-citation><pub-id pub-id-type="pmcid">PMC1010</pub-id>'
        '<pub-id pub-id-type="doi">10.1000/j10</pub-id></element-citation></ref>'
        "</ref-list>"
    )
)


def test_reference_ids_in_every_jats_spelling():
    article = _parse(REFS).article
    assert article.article_reference_ids == [
        "111",
        "doi:10.1371/journal.x.1",
        "doi:10.1000/ABC.2",
        "444",
        "PMC555",
        "doi:10.1000/f6",
        "doi:10.1000/g<7>",
        "doi:10.1000/j10",
    ]
    assert article.article_reference_count == 10


def _ref_has_id(ref) -> bool:
    for element in ref.iter():
        name = _ln(element)
        kind = element.get("ext-link-type") or element.get("pub-id-type") or ""
        if name in ("pub-id", "object-id", "ext-link") and kind in ("pmid", "doi", "pmcid"):
            return True
        href = element.get("{http://www.w3.org/1999/xlink}href") or ""
        if name == "ext-link" and re.match(r"https?://(dx\.)?doi\.org/10\.", href):
            return True
    return False


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("pyEuropePMC__PMC13125388.xml", 37),
        ("pyEuropePMC__PMC13260883.xml", 48),
        ("allofplos__journal.pcbi.1004082.xml", 35),
    ],
)
def test_real_reference_ids_in_object_id_and_ext_link(pmc_dir, name, expected):
    path = pmc_dir / "nxml" / name
    root = etree.fromstring(path.read_bytes(), _SAFE)
    refs = [r for r in root.iter() if _ln(r) == "ref"]
    assert sum(_ref_has_id(r) for r in refs) == expected
    article = parse_articles(path.read_bytes())[0].article
    assert len(article.article_reference_ids) == expected
    assert all(
        i.isdigit() or i.startswith("PMC") or re.fullmatch(r"doi:10\.\d+/\S+", i)
        for i in article.article_reference_ids
    )


def test_real_pmc13125388_reference_dois_are_bare(pmc_dir):
    path = pmc_dir / "nxml/pyEuropePMC__PMC13125388.xml"
    ids = parse_articles(path.read_bytes())[0].article.article_reference_ids
    assert ids[0] == "doi:10.1016/j.foodhyd.2016.03.030"  # its first reference has no PMID
    assert ids[1] == "40762258"


# ---- 4. the citation's date is the issue's; publication dates keep month and day ------------


def _dates(dates: str, journal: str = "") -> str:
    return _article(
        _meta(
            f"{dates}<volume>40</volume><issue>2</issue><fpage>884</fpage><lpage>891</lpage>",
            journal or '<journal-id journal-id-type="nlm-ta">Nucleic Acids Res</journal-id>',
        )
    )


def test_the_citation_gives_the_issue_date_not_the_epub():
    xml = _dates(
        '<pub-date pub-type="collection"><month>1</month><year>2012</year></pub-date>'
        '<pub-date pub-type="ppub"><month>1</month><year>2012</year></pub-date>'
        '<pub-date pub-type="epub"><day>21</day><month>9</month><year>2011</year></pub-date>'
        '<pub-date pub-type="pmc-release"><day>21</day><month>9</month><year>2011</year>'
        "</pub-date>"
    )
    article = _parse(xml).article
    assert article.article_citation == "Nucleic Acids Res. 2012 Jan; 40(2):884-891"
    assert (article.article_date, article.article_year) == ("2011-09-21", 2011)


def test_an_epub_within_its_issue_gives_the_citation_its_day():
    xml = _dates(
        '<pub-date pub-type="epub"><day>5</day><month>5</month><year>2004</year></pub-date>'
        '<pub-date pub-type="collection"><month>5</month><year>2004</year></pub-date>'
    )
    assert _parse(xml).article.article_citation.startswith("Nucleic Acids Res. 2004 May 5; ")


def test_jats_1_4_publication_dates_keep_month_and_day():
    xml = _dates(
        '<pub-date publication-format="electronic" date-type="update"><day>11</day>'
        "<month>08</month><year>2016</year></pub-date>"
        '<pub-date publication-format="electronic" date-type="publication"><day>25</day>'
        "<month>04</month><year>2016</year></pub-date>"
        '<pub-date pub-type="collection"><year>2016</year></pub-date>'
    )
    article = _parse(xml).article
    assert article.article_date == "2016-04-25"
    assert article.article_citation.startswith("Nucleic Acids Res. 2016 Apr 25; ")


def test_a_print_issue_with_a_season():
    xml = _dates(
        '<pub-date publication-format="electronic" date-type="pub"><day>17</day>'
        "<month>07</month><year>2020</year></pub-date>"
        '<pub-date publication-format="print" date-type="pub"><season>Summer</season>'
        "<year>2019</year></pub-date>"
    )
    article = _parse(xml).article
    assert article.article_date == "2020-07-17"
    assert article.article_citation == "Nucleic Acids Res. 2019 Summer; 40(2):884-891"


@pytest.mark.parametrize(
    ("journal", "abbreviation"),
    [
        (
            '<journal-id journal-id-type="iso-abbrev">Nucleic Acids Res.</journal-id>'
            '<journal-id journal-id-type="nlm-ta">Nucleic Acids Res</journal-id>'
            "<journal-title-group><journal-title>Nucleic Acids Research</journal-title>"
            "</journal-title-group>",
            "Nucleic Acids Res",
        ),
        (
            '<journal-id journal-id-type="pmc-domain">blackwellopen</journal-id>'
            "<journal-title-group><journal-title>Developmental Science</journal-title>"
            "<abbrev-journal-title>Dev Sci</abbrev-journal-title></journal-title-group>",
            "Dev Sci",
        ),
        (
            '<journal-id journal-id-type="publisher-id">xyz</journal-id>'
            "<journal-title-group><journal-title>Full Title</journal-title>"
            "</journal-title-group>",
            "Full Title",
        ),
    ],
)
def test_the_citation_uses_the_journal_abbreviation(journal, abbreviation):
    xml = _dates('<pub-date pub-type="ppub"><year>2012</year></pub-date>', journal)
    assert _parse(xml).article.article_citation == f"{abbreviation}. 2012; 40(2):884-891"


def test_a_citation_without_volume_has_no_empty_volume():
    xml = _article(
        _meta(
            '<pub-date pub-type="epub"><day>1</day><month>1</month><year>2024</year></pub-date>'
            "<elocation-id>2023.12.31.573776</elocation-id>",
            '<journal-id journal-id-type="nlm-ta">bioRxiv</journal-id>',
        )
    )
    assert _parse(xml).article.article_citation == "bioRxiv. 2024 Jan 1; 2023.12.31.573776"


def test_real_citations_and_dates(pmc_dir):
    nar = parse_articles((pmc_dir / "nxml/pyEuropePMC__PMC3258128_NAR.xml").read_bytes())
    assert nar[0].article.article_citation == "Nucleic Acids Res. 2012 Jan; 40(2):884-891"
    assert nar[0].article.article_date == "2011-09-21"
    elife = parse_articles((pmc_dir / "nxml/elife-tools__elife-00666.xml").read_bytes())
    assert elife[0].article.article_date == "2016-04-25"
    rcm = parse_articles((pmc_dir / "nxml/pyEuropePMC__PMC13125388.xml").read_bytes())
    assert rcm[0].article.article_citation == "Rapid Commun Mass Spectrom. 2026 Apr 28; 40:e70073"


# ---- 5. sub-articles do not cite the article's figures -----------------------------------------


def test_sub_article_paragraphs_are_not_contexts_of_the_articles_figures():
    xml = _article(
        body='<p>Main text on <xref ref-type="fig" rid="F1">Figure 1</xref>.</p>'
        + _fig("F1", "Main figure."),
        tail=(
            '<sub-article article-type="reply"><body><p>Reviewer asks about '
            '<xref ref-type="fig" rid="F1">Figure 1</xref> and '
            '<xref ref-type="fig" rid="R1">Author response image 1</xref>.</p>'
            + _fig("R1", "Response figure.")
            + '</body></sub-article><response><body><p>More on <xref ref-type="fig" rid="F1">'
            "Figure 1</xref>.</p></body></response>"
        ),
    )
    contexts = _contexts(_parse(xml))
    assert contexts["F1"] == ["Main text on Figure 1."]
    assert contexts["R1"] == ["Reviewer asks about Figure 1 and Author response image 1."]


@pytest.mark.parametrize("name", ["elife-tools__elife-14093-v1.xml", "elife-tools__elife02304.xml"])
def test_real_elife_decision_letters_are_not_contexts(pmc_dir, name):
    path = pmc_dir / "nxml" / name
    root = etree.fromstring(path.read_bytes(), _SAFE)
    subs = [e for e in root.iter() if _ln(e) in ("sub-article", "response")]
    assert subs
    sub_paragraphs = {_norm("".join(p.itertext())) for s in subs for p in s.iter() if _ln(p) == "p"}
    sub_ids = {e.get("id") for s in subs for e in s.iter() if isinstance(e.tag, str)}
    main = [g for g in parse_articles(path.read_bytes())[0].graphics if g.figure_id not in sub_ids]
    assert sum(len(g.context) for g in main) > 10
    for graphic in main:
        assert not {_norm(c) for c in graphic.context} & sub_paragraphs, graphic.figure_id


# ---- 6. invisible operators; repeated subjects and keywords ----------------------------------


def test_invisible_math_operators_are_dropped_everywhere():
    xml = _article(
        _meta("<title-group><article-title>f\u2061(x) a\u2062b</article-title></title-group>"),
        body=(
            "<p>We fit <inline-formula><mml:math><mml:mi>sin</mml:mi><mml:mo>&#x2061;</mml:mo>"
            "<mml:mi>x</mml:mi></mml:math></inline-formula> in "
            '<xref ref-type="fig" rid="F1">Figure 1</xref>.</p>'
            '<fig id="F1"><caption><p>Rate <mml:math><mml:mi>k</mml:mi><mml:mo>&#x2062;</mml:mo>'
            "<mml:mi>t</mml:mi></mml:math> a\u2063b \u2064c.</p></caption>"
            '<graphic xlink:href="a"/></fig>'
        ),
    )
    parsed = _parse(xml)
    (graphic,) = parsed.graphics
    assert graphic.caption == "Rate kt ab c."
    assert graphic.context == ["We fit sinx in Figure 1."]
    assert parsed.article.article_title == "f(x) ab"
    assert not _INVISIBLE.search(parsed.article.article_text)


@pytest.mark.parametrize(
    "relpath",
    ["nxml/elife-tools__elife-14093-v1.xml", "packages/encoda__elife-52882-v2/main.jats.xml"],
)
def test_real_invisible_operators_are_dropped(pmc_dir, relpath):
    data = (pmc_dir / relpath).read_bytes()
    assert _INVISIBLE.search(data.decode("utf-8"))
    parsed = parse_articles(data)[0]
    texts = [parsed.article.article_text, parsed.article.article_abstract]
    texts += [g.caption for g in parsed.graphics] + [c for g in parsed.graphics for c in g.context]
    assert not any(_INVISIBLE.search(t) for t in texts)


def test_repeated_subjects_and_keywords_are_kept_once_in_order():
    xml = _article(
        _meta(
            '<article-categories><subj-group subj-group-type="Discipline-v2"><subject>Biology'
            "</subject><subj-group><subject>Genetics</subject></subj-group></subj-group>"
            '<subj-group subj-group-type="Discipline-v2"><subject>Biology</subject><subj-group>'
            "<subject>Cell biology</subject></subj-group></subj-group></article-categories>"
            "<kwd-group><kwd>mice</kwd><kwd>CD8</kwd><kwd>mice</kwd><kwd> CD8 </kwd></kwd-group>"
        )
    )
    article = _parse(xml).article
    assert article.article_subject == ["Biology", "Genetics", "Cell biology"]
    assert article.article_keywords == ["mice", "CD8"]


def test_real_plos_subjects_are_unique_and_in_order(pmc_dir):
    path = pmc_dir / "nxml/allofplos__journal.pcbi.1004692.xml"
    root = etree.fromstring(path.read_bytes(), _SAFE)
    categories = next(e for e in root.iter() if _ln(e) == "article-categories")
    listed = [_norm("".join(s.itertext())) for s in categories.iter() if _ln(s) == "subject"]
    assert len(listed) > len(set(listed))
    article = parse_articles(path.read_bytes())[0].article
    assert article.article_subject == list(dict.fromkeys(listed))


# ---- through the pipeline: the figure rows carry all of it -----------------------------------


def test_the_extract_job_writes_the_fixed_fields(tmp_path):
    folder = tmp_path / "src" / "PMC42"
    folder.mkdir(parents=True)
    Image.new("RGB", (64, 48), (200, 30, 30)).save(folder / "f1.jpg", "JPEG")
    xml = _article(
        _meta(
            "<article-categories><subj-group><subject>Biology</subject></subj-group>"
            "<subj-group><subject>Biology</subject></subj-group></article-categories>"
            '<pub-date pub-type="epub"><day>21</day><month>9</month><year>2011</year></pub-date>'
            '<pub-date pub-type="ppub"><month>1</month><year>2012</year></pub-date>'
            "<volume>40</volume><issue>2</issue><fpage>884</fpage>"
            "<permissions><license><license-p>Distributed under the terms of the Creative"
            " Commons Attribution Non-Commercial License.</license-p></license></permissions>",
            '<journal-id journal-id-type="nlm-ta">Nucleic Acids Res</journal-id>',
        ),
        body=(
            '<p>Cells grew (<xref ref-type="fig" rid="F1">Figure 1</xref>).'
            '<fig id="F1"><label>Figure 1.</label><caption><p>Red cells.</p></caption>'
            '<graphic xlink:href="f1"/></fig>Then they died.</p>'
        ),
        back=(
            '<ref-list><ref id="r1"><mixed-citation><ext-link ext-link-type="doi" '
            'xlink:href="https://doi.org/10.1000/x1"/></mixed-citation></ref></ref-list>'
        ),
    )
    (folder / "PMC42.xml").write_text(xml, encoding="utf-8")
    out = tmp_path / "out"
    report = run_extract(
        ["--source", str(tmp_path / "src"), "--layout", "folder", "--output", str(out)]
    )
    assert report["balanced"] is True
    (row,) = read_table(out / "extract" / "figures")
    assert row["key"] == "PMC42_F1"
    assert row["image_context"] == ["Cells grew (Figure 1). Then they died."]
    assert row["caption"] == "Figure 1. Red cells."
    assert (row["article_license"], row["article_license_group"]) == ("CC BY-NC", "noncommercial")
    assert row["article_citation"] == "Nucleic Acids Res. 2012 Jan; 40(2):884"
    assert row["article_date"] == "2011-09-21"
    assert row["article_reference_ids"] == ["doi:10.1000/x1"]
    assert row["article_subject"] == ["Biology"]
