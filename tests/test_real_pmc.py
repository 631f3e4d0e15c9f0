"""The parser and the pipeline on real PMC data (shared/pmc), checked against independent counts.

Expected values come from MANIFEST.tsv and from lxml run directly on the files here, never
from the code under test.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import pytest
from conftest import PMC, read_dead_letters, read_table, run_extract
from lxml import etree

from transforms.jats.parse import parse_articles
from transforms.pmc import legacy

_SAFE = etree.XMLParser(resolve_entities=False, load_dtd=False, no_network=True)
NXML = "nxml"
PACKAGES = "packages"
TRUNCATED = "packages/PMC10802347.truncated.tar.gz"
BULK = "bulk/oa_noncomm_xml.incr.2024-12-22.tar.gz"
NO_XML_FOLDERS = {
    "pubmed-client__PMC10118017",
    "pubmed-client__PMC10487465",
    "pubmed-client__PMC11286954",
    "pubmed-client__PMC1175969",
}


def _xml_files() -> list[str]:
    if not PMC.is_dir():
        return []
    files = sorted(PMC.glob(f"{NXML}/*"))
    files += sorted(p for p in PMC.glob(f"{PACKAGES}/*/*") if p.suffix in (".xml", ".nxml"))
    return [str(p.relative_to(PMC)) for p in files]


def _manifest() -> list[dict]:
    path = PMC / "MANIFEST.tsv"
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def _features(row: dict) -> dict[str, str]:
    out = {}
    for part in row["features"].split(";"):
        key, sep, value = part.strip().partition("=")
        if sep:
            out[key] = value
    return out


MANIFEST_XML = [r for r in _manifest() if r["local_file"].endswith((".xml", ".nxml"))]


def _ln(element) -> str:
    return etree.QName(element).localname if isinstance(element.tag, str) else ""


def _norm(text: str) -> str:
    return " ".join(text.split())


def _text(element) -> str:
    return _norm("".join(element.itertext()))


def _tree(path: Path):
    return etree.fromstring(path.read_bytes(), _SAFE)


def _all(element, name: str) -> list:
    return [e for e in element.iter() if _ln(e) == name]


def _articles(root) -> list:
    """Top-level <article> elements, independently of the parser."""
    return [
        a for a in _all(root, "article") if not any(_ln(x) == "article" for x in a.iterancestors())
    ]


# ---- every real XML parses ------------------------------------------------------------------


def test_the_real_xml_files_are_all_there(pmc_dir):
    files = _xml_files()
    assert len([f for f in files if f.startswith(NXML)]) == 53
    assert len([f for f in files if f.startswith(PACKAGES)]) == 5
    assert len(MANIFEST_XML) == len(files)


@pytest.mark.parametrize("relpath", _xml_files())
def test_every_real_xml_parses(pmc_dir, relpath):
    path = pmc_dir / relpath
    parsed = parse_articles(path.read_bytes())
    assert len(parsed) == len(_articles(_tree(path))) >= 1
    for item in parsed:
        assert item.article.article_title
        assert item.article.article_parse_warnings == []
        for graphic in item.graphics:
            assert graphic.href, graphic


# ---- counts against MANIFEST and lxml ------------------------------------------------------


@pytest.mark.parametrize("row", MANIFEST_XML, ids=[r["local_file"] for r in MANIFEST_XML])
def test_counts_match_manifest_and_lxml(pmc_dir, row):
    path = pmc_dir / row["local_file"]
    features = _features(row)
    root = _tree(path)

    # Independent counts, straight from lxml.
    fig_xrefs = [x for x in _all(root, "xref") if x.get("ref-type") == "fig"]
    graphics = _all(root, "graphic")
    beyond_first = 0
    for group in _all(root, "alternatives"):
        in_group = sum(1 for child in group if _ln(child) == "graphic")
        beyond_first += max(0, in_group - 1)
    figs = _all(root, "fig")
    figs_without_graphic = [f for f in figs if not _all(f, "graphic")]

    # The manifest and lxml agree (a parser dropping figures cannot hide behind either).
    assert len(fig_xrefs) == int(features["xref_fig"])
    assert len(graphics) == int(features["graphic"])
    assert len(figs) == int(features["fig"])
    assert len(figs_without_graphic) == int(features["fig_without_graphic"])

    parsed = parse_articles(path.read_bytes())
    assert sum(p.article.article_fig_xref_count for p in parsed) == int(features["xref_fig"])
    assert sum(len(p.graphics) for p in parsed) == int(features["graphic"]) - beyond_first
    assert sum(p.article.article_figure_count for p in parsed) == len(graphics) - beyond_first
    parsed_figs = {
        (index, g.figure_id)
        for index, p in enumerate(parsed)
        for g in p.graphics
        if g.figure_type == "fig"
    }
    assert len(parsed_figs) == int(features["fig"]) - int(features["fig_without_graphic"])


# ---- captions -------------------------------------------------------------------------------

CAPTION_FILES = [
    "nxml/pubmed-client__PMC10906259.oai.xml",
    "nxml/pubmed-client__PMC9000000.oai.xml",
    "nxml/tidypmc__PMC2231364.xml",
    "nxml/tidypmc__PMC6358576_PMC6358589_multi.xml",
    "nxml/pyEuropePMC__PMC3258128_NAR.xml",
    "nxml/pyEuropePMC__Wiley_advs_202510004.xml",
    "nxml/allofplos__journal.pone.0087236.xml",
    "nxml/elife-tools__elife00013.xml",
    "packages/PMC10802347/nihpp-2023.12.31.573776v1.nxml",
]


@pytest.mark.parametrize("relpath", CAPTION_FILES)
def test_captions_are_whole(pmc_dir, relpath):
    path = pmc_dir / relpath
    parsed = parse_articles(path.read_bytes())
    article_elements = _articles(_tree(path))
    assert len(parsed) == len(article_elements)
    checked = 0
    for item, article_el in zip(parsed, article_elements, strict=True):
        captions = {g.figure_id: _norm(g.caption) for g in item.graphics}
        labels = {g.figure_id: g.figure_label for g in item.graphics}
        for fig in _all(article_el, "fig"):
            caption = captions[fig.get("id")]
            label = [c for c in fig if _ln(c) == "label"]
            caption_el = [c for c in fig if _ln(c) == "caption"]
            if not caption_el:
                continue  # e.g. a graphical abstract: an image with alt-text only
            if label:
                assert _text(label[0]) in caption
                assert labels[fig.get("id")] == _text(label[0])
            title = [c for c in caption_el[0] if _ln(c) == "title"]
            paragraphs = [c for c in caption_el[0] if _ln(c) == "p"]
            if title:
                assert _text(title[0]) in caption
            if paragraphs:
                assert _text(paragraphs[-1]) in caption
            assert title or paragraphs
            checked += 1
    assert checked >= 1


@pytest.mark.parametrize(
    "relpath", ["nxml/elife-tools__elife-14093-v1.xml", "nxml/allofplos__journal.pcbi.1004082.xml"]
)
def test_mathml_in_captions_becomes_text(pmc_dir, relpath):
    path = pmc_dir / relpath
    captions = {g.figure_id: g.caption for g in parse_articles(path.read_bytes())[0].graphics}
    with_math = 0
    for fig in _all(_tree(path), "fig"):
        caption_el = next(c for c in fig if _ln(c) == "caption")
        maths = _all(caption_el, "math")
        if not maths:
            continue
        with_math += 1
        caption = captions[fig.get("id")]
        assert "<mml" not in caption and "mml:" not in caption and "<math" not in caption
        for math in maths:
            for token in _all(math, "mi") + _all(math, "mn"):
                if token.text and token.text.strip():
                    assert token.text.strip() in caption, (fig.get("id"), token.text)
    assert with_math >= 5


def test_mathml_caption_is_linearized(pmc_dir):
    path = pmc_dir / "nxml/elife-tools__elife-14093-v1.xml"
    fig3 = next(g for g in parse_articles(path.read_bytes())[0].graphics if g.figure_id == "fig3")
    assert "Γ_1 = 0.975" in fig3.caption
    assert "E_k − E_1" in fig3.caption


# ---- in-line references -----------------------------------------------------------------------


def _citing_paragraph(xref):
    paragraph = None
    for ancestor in xref.iterancestors():
        if _ln(ancestor) in ("caption", "fig", "table-wrap", "ref-list", "front"):
            return None
        if _ln(ancestor) == "p" and paragraph is None:
            paragraph = ancestor
    return paragraph


@pytest.mark.parametrize(
    "relpath",
    [
        "nxml/pubmed-client__PMC10906259.oai.xml",
        "nxml/allofplos__journal.pcbi.1004082.xml",
        "nxml/tidypmc__PMC2231364.xml",
    ],
)
def test_a_cited_figure_carries_the_citing_paragraph(pmc_dir, relpath):
    path = pmc_dir / relpath
    contexts: dict[str, list[str]] = {}
    for g in parse_articles(path.read_bytes())[0].graphics:
        contexts.setdefault(g.figure_id, [_norm(c) for c in g.context])
    checked = 0
    for xref in _all(_tree(path), "xref"):
        if xref.get("ref-type") != "fig":
            continue
        paragraph = _citing_paragraph(xref)
        if paragraph is None or _all(paragraph, "math"):
            continue  # math reads differently from itertext; checked elsewhere
        assert _text(paragraph) in contexts[xref.get("rid")]
        checked += 1
    assert checked >= 10


def test_a_figure_range_gives_the_figures_inside_it_the_paragraph(pmc_dir):
    path = pmc_dir / "nxml/allofplos__journal.pcbi.1004082.xml"
    start = next(
        x
        for x in _all(_tree(path), "xref")
        if x.get("rid") == "pcbi.1004082.g004" and (x.tail or "").strip() == "\u2013"
    )
    end = start.getnext()
    assert end.get("rid") == "pcbi.1004082.g007"
    paragraph_start = _text(_citing_paragraph(start))[:120]

    contexts: dict[str, list[str]] = {}
    for g in parse_articles(path.read_bytes())[0].graphics:
        contexts.setdefault(g.figure_id, [_norm(c) for c in g.context])
    for ident in ("g004", "g005", "g006", "g007"):
        found = contexts[f"pcbi.1004082.{ident}"]
        assert any(c.startswith(paragraph_start) for c in found), ident
    # The figures before and after the range are not cited by that paragraph.
    for ident in ("g003", "g008"):
        found = contexts[f"pcbi.1004082.{ident}"]
        assert not any(c.startswith(paragraph_start) for c in found), ident


# ---- article fields ----------------------------------------------------------------------------

OAI_LICENSES = {
    "https://creativecommons.org/licenses/by/4.0/": "CC BY",
    "http://creativecommons.org/licenses/by-nc/4.0/": "CC BY-NC",
    "https://creativecommons.org/licenses/by-nc-nd/4.0/": "CC BY-NC-ND",
    "https://creativecommons.org/publicdomain/mark/1.0/": "PDM",
}
OAI_ROWS = [
    r
    for r in MANIFEST_XML
    if r["local_file"].endswith(".oai.xml") and r["license"].startswith("ali:license_ref")
]


@pytest.mark.parametrize("row", OAI_ROWS, ids=[r["local_file"] for r in OAI_ROWS])
def test_oai_pmh_records_give_article_fields(pmc_dir, row):
    path = pmc_dir / row["local_file"]
    root = _tree(path)
    assert _ln(root) == "OAI-PMH"
    (article,) = parse_articles(path.read_bytes())
    a = article.article
    assert a.article_accession_id == path.name.split("__")[1].split(".")[0]
    assert a.article_title == _text(_all(root, "article-title")[0])
    assert a.article_journal == _features(row)["journal"]
    url = row["license"].split(" ", 1)[1]
    assert a.article_license == OAI_LICENSES[url]


def test_oai_record_pmc10200000(pmc_dir):
    path = pmc_dir / "nxml/pubmed-client__PMC10200000.oai.xml"
    (article,) = parse_articles(path.read_bytes())
    a = article.article
    assert a.article_accession_id == "PMC10200000"
    assert a.article_license == "CC BY"
    assert a.article_license_group == "commercial"
    assert a.article_journal == "Nano-Micro Letters"
    assert a.article_title.startswith("Engineering Multi-field")
    assert a.article_pmid == "37209189"
    assert a.article_doi == "10.1007/s40820-023-01106-5"


@pytest.mark.parametrize(
    ("relpath", "code"),
    [
        ("nxml/pubmed-client__PMC6000000.oai.xml", "CC BY"),
        # CC BY for the article; a CC0 waiver for its data follows in the same license-p.
        ("nxml/pubmed-client__PMC6500000.oai.xml", "CC BY"),
        ("nxml/pubmed-client__PMC7500000.oai.xml", "CC BY"),
        ("nxml/pyEuropePMC__PMC13125388.xml", "CC BY-NC-ND"),
        ("nxml/pyEuropePMC__PMC13260883.xml", "CC BY"),
        ("nxml/tidypmc__PMC6385181.xml", "CC BY"),
    ],
)
def test_license_given_only_as_a_link_in_the_license_text(pmc_dir, relpath, code):
    path = pmc_dir / relpath
    license_el = _all(_tree(path), "license")[0]
    assert not any(k.endswith("href") for k in license_el.attrib)
    assert not _all(license_el, "license_ref")
    (item,) = parse_articles(path.read_bytes())
    assert item.article.article_license == code
    assert item.article.article_license_group == (
        "noncommercial" if "-NC" in code else "commercial"
    )


def test_articles_wrapper_gives_every_article(pmc_dir):
    path = pmc_dir / "nxml/tidypmc__PMC6358576_PMC6358589_multi.xml"
    root = _tree(path)
    assert _ln(root) == "articles"
    expected = []
    for article_el in _articles(root):
        ids = [
            i for i in _all(article_el, "article-id") if i.get("pub-id-type") in ("pmc", "pmcid")
        ]
        expected.append("PMC" + ids[0].text.strip().removeprefix("PMC"))
    parsed = parse_articles(path.read_bytes())
    assert len(parsed) == len(expected) == 10
    assert [p.article.article_accession_id for p in parsed] == expected
    assert sum(len(p.graphics) for p in parsed) == 41
    assert all(p.graphics for p in parsed)


# ---- the truncated package -------------------------------------------------------------------


def test_truncated_package_keeps_what_was_read(pmc_dir):
    with (pmc_dir / TRUNCATED).open("rb") as stream:
        package = legacy.read_package(stream)
    assert package.xml_name == "nihpp-2023.12.31.573776v1.nxml"
    assert package.xml == (pmc_dir / "packages/PMC10802347" / package.xml_name).read_bytes()
    assert package.truncated
    for n in (2, 3, 4):
        name = f"nihpp-2023.12.31.573776v1-f000{n}.jpg"
        assert package.media[name] == (pmc_dir / "packages/PMC10802347" / name).read_bytes()
    assert "nihpp-2023.12.31.573776v1-f0001.jpg" not in package.media


def test_truncated_package_through_the_pipeline(pmc_dir, tmp_path):
    out = tmp_path / "o"
    report = run_extract(
        ["--source", str(pmc_dir / TRUNCATED), "--layout", "oa-package", "--output", str(out)]
    )
    assert report["balanced"] is True
    articles = read_table(out / "extract" / "articles")
    assert [a["article_accession_id"] for a in articles] == ["PMC10802347"]
    assert any(w.startswith("archive truncated") for w in articles[0]["article_parse_warnings"])
    figures = read_table(out / "extract" / "figures")
    assert sorted(f["image_file_name"] for f in figures) == [
        f"nihpp-2023.12.31.573776v1-f000{n}.jpg" for n in (2, 3, 4)
    ]
    assert sorted(f["key"] for f in figures) == [
        "PMC10802347_F2",
        "PMC10802347_F3",
        "PMC10802347_F4",
    ]
    (dead,) = read_dead_letters(out)
    assert (dead["stage"], dead["key"], dead["reason"]) == (
        "extract_figures",
        "PMC10802347_F1",
        "image_missing",
    )
    assert "thumbnail" in dead["detail"] and "truncated" in dead["detail"]
    stages = report["stages"]
    assert stages["extract_figures"]["in"] == 4
    assert stages["extract_figures"]["out"] == 3
    assert stages["dedupe"]["out"] == len(figures)


# ---- the oa_bulk package ------------------------------------------------------------------------


def test_bulk_package_is_all_xml_members(pmc_dir):
    with (pmc_dir / BULK).open("rb") as stream:
        items = list(legacy.iter_bulk_xml(stream))
    assert len(items) == 95
    assert all(xml and not error for _, xml, error in items)
    assert all(legacy.pmcid_from_path(name) for name, _, _ in items)


def test_bulk_package_through_the_pipeline(pmc_dir, tmp_path):
    out = tmp_path / "o"
    report = run_extract(
        ["--source", str(pmc_dir / BULK), "--layout", "oa-bulk", "--output", str(out)]
    )
    stages = report["stages"]
    assert report["balanced"] is True
    assert stages["discover"]["in"] == stages["discover"]["out"] == 95
    articles = read_table(out / "extract" / "articles")
    assert len(articles) == stages["extract_articles"]["out"] == 95
    assert len({a["article_accession_id"] for a in articles}) == 95
    # oa_noncomm: every article is under a non-commercial license, and grouped so.
    assert all("-NC" in a["article_license"] for a in articles)
    assert {a["article_license_group"] for a in articles} == {"noncommercial"}
    candidates = sum(a["article_figure_count"] for a in articles)
    assert candidates > 0
    dead = read_dead_letters(out)
    assert len(dead) == candidates == stages["extract_figures"]["in"]
    assert {(d["stage"], d["reason"]) for d in dead} == {("extract_figures", "image_unavailable")}
    assert len({d["key"] for d in dead}) == len(dead)
    assert stages["extract_figures"]["out"] == 0
    assert read_table(out / "extract" / "figures") == []


# ---- file lists ------------------------------------------------------------------------------


def _csv_rows(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return [r for r in csv.reader(handle) if r]


def test_file_list_with_header_and_excel_dates(pmc_dir):
    path = pmc_dir / "file_lists/seanBr97__oa_file_list.csv"
    raw = _csv_rows(path)
    assert raw[0][0] == "File"
    rows = legacy.parse_file_list(path.read_bytes())
    assert len(rows) == len(raw) - 1 == 4
    first = rows[0]
    assert first.path == "oa_package/ac/6a/PMC7112410.tar.gz"
    assert first.accession == "PMC7112410"
    assert first.citation == "Lancet. 2003 May 24; 361(9371):1767-1772"
    assert first.last_updated == "06-04-20 14:56"  # Excel-mangled, kept as written
    assert first.pmid == "12781535"
    assert first.license_code == "NO-CC CODE"
    assert [r.accession for r in rows] == [r[2] for r in raw[1:]]


@pytest.mark.parametrize(
    ("name", "count", "first", "license_code"),
    [
        ("geralddzx_capstone__oa_file_list.head300.csv", 300, "PMC13900", "NO-CC CODE"),
        ("geralddzx_capstone__oa_file_list.cc_subset200.csv", 200, "PMC406389", "CC0"),
    ],
)
def test_headerless_file_lists(pmc_dir, name, count, first, license_code):
    path = pmc_dir / "file_lists" / name
    raw = _csv_rows(path)
    rows = legacy.parse_file_list(path.read_bytes())
    assert len(rows) == len(raw) == count
    assert rows[0].accession == first
    assert rows[0].license_code == license_code
    for row, fields in zip(rows, raw, strict=True):
        assert (row.path, row.accession, row.pmid, row.license_code) == (
            fields[0],
            fields[2],
            fields[4],
            fields[5],
        )
    head = rows[0]
    if first == "PMC13900":
        assert head.pmid == "11250746" and head.last_updated == "2019-11-05 11:56:12"


def test_cc_subset_holds_cc_by_rows(pmc_dir):
    rows = legacy.parse_file_list(
        (pmc_dir / "file_lists/geralddzx_capstone__oa_file_list.cc_subset200.csv").read_bytes()
    )
    last = rows[-1]
    assert (last.accession, last.license_code, last.pmid) == ("PMC406512", "CC BY", "15068486")
    assert {r.license_code for r in rows} <= {"CC0", "CC BY", "CC BY-NC", "CC BY-NC-ND", "CC BY-SA"}


# ---- the folder run on packages/ ---------------------------------------------------------------


def _rows_of(out: Path, folder: str) -> list[dict]:
    rows = read_table(out / "extract" / "figures")
    return [f for f in rows if Path(f["image_source"]).parent.name == folder]


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    if not PMC.is_dir():
        pytest.fail(f"real PMC data not found at {PMC}")
    out = tmp_path_factory.mktemp("folder") / "o"
    report = run_extract(
        ["--source", str(PMC / PACKAGES), "--layout", "folder", "--output", str(out)]
    )
    return report, out


def test_folder_run_balances(folder_run):
    report, out = folder_run
    assert report["balanced"] is True
    for name, stage in report["stages"].items():
        assert stage["balanced"], name
    figures = read_table(out / "extract" / "figures")
    assert len(figures) == report["stages"]["dedupe"]["out"]
    assert len({f["key"] for f in figures}) == len(figures)
    articles = read_table(out / "extract" / "articles")
    assert len(articles) == report["stages"]["extract_articles"]["out"] == 5


def test_folders_without_xml_are_dead_letters(folder_run):
    report, out = folder_run
    dead = [d for d in read_dead_letters(out) if d["stage"] == "discover"]
    assert {d["key"] for d in dead} == NO_XML_FOLDERS
    assert {d["reason"] for d in dead} == {"xml_missing"}
    assert report["stages"]["discover"]["dead_letter_by_reason"] == {"xml_missing": 4}


def test_thumbnail_only_figure_is_a_dead_letter(folder_run):
    _, out = folder_run
    dead = [d for d in read_dead_letters(out) if d["stage"] == "extract_figures"]
    assert [(d["key"], d["reason"]) for d in dead] == [("PMC10802347_F1", "image_missing")]
    assert "thumbnail" in dead[0]["detail"]


def figures_of(out, folder: str) -> list[dict]:
    """Figure rows of an extract output whose images came from one article folder."""
    return [
        f
        for f in read_table(out / "extract" / "figures")
        if f["image_source"].split("/")[-2] == folder
    ]


@pytest.mark.parametrize(
    ("folder", "fmt", "count"),
    [("encoda__ijm-00202", "TIFF", 6), ("encoda__plosone-0178565", "PNG", 12)],
)
def test_tiff_and_png_become_jpeg(folder_run, folder, fmt, count):
    rows = figures_of(folder_run[1], folder)
    assert len(rows) == count
    for row in rows:
        assert row["image_format"] == fmt
        assert row["image_converted"] is True
        assert row["image"][:3] == b"\xff\xd8\xff"
        assert hashlib.sha256(row["image"]).hexdigest() == row["image_hash"]
        assert row["image_bytes"] == len(row["image"])


@pytest.mark.parametrize(
    ("folder", "count"),
    [("encoda__elife-46472-v3", 8), ("encoda__elife-52882-v2", 12), ("PMC10802347", 3)],
)
def test_jpegs_are_kept_byte_for_byte(folder_run, folder, count):
    rows = figures_of(folder_run[1], folder)
    assert len(rows) == count
    for row in rows:
        on_disk = (PMC / PACKAGES / folder / row["image_file_name"]).read_bytes()
        assert row["image_converted"] is False
        assert row["image_format"] == "JPEG"
        assert hashlib.sha256(row["image"]).hexdigest() == hashlib.sha256(on_disk).hexdigest()
        assert row["image_hash"] == hashlib.sha256(on_disk).hexdigest()
