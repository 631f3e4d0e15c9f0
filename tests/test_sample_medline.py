"""The sample corpus's PubMed records: MEDLINE XML in NLM's shape, MeSH from each article's
topic and figures, deterministic by seed, and exactly what `biomedica enrich` then finds."""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from pathlib import Path

import pytest
from conftest import read_dead_letters, read_table, run_extract
from lxml import etree

from pipelines import sample as sample_cli
from transforms.pmc import sample_corpus as sc
from transforms.pmc import sample_medline as sm
from transforms.pubmed.medline import read_medline
from transforms.records import PubmedDeletion, PubmedRecord

ARTICLES = 10  # indexes 0..9 hold every fate (fate(i) below)
SEED = 3
SIDE = 48
MEDLINE_SLICES = Path(__file__).parent / "data" / "medline"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("medline") / "corpus"
    summary = sc.generate_corpus(str(root), ARTICLES, seed=SEED, image_side=SIDE)
    manifest = json.loads((root / sc.MANIFEST_NAME).read_text())
    return root, summary, manifest


def _items(root, name) -> list:
    return list(read_medline(str(root / sm.FOLDER / name)))


def _by_pmid(items) -> dict:
    return {i.pmid: i for i in items if isinstance(i, PubmedRecord)}


def test_fates_cover_every_case_enrich_handles():
    assert [sm.fate(i) for i in range(ARTICLES)] == [
        "baseline",
        "revised",
        "baseline",
        "deleted",
        "baseline",
        "revised",
        "missing",
        "baseline",
        "new",
        "not_indexed",
    ]
    assert {sm.fate(i) for i in range(40)} == set(sm.FATES)


def test_files_parse_and_hold_what_the_summary_says(corpus):
    root, summary, manifest = corpus
    pubmed = summary["pubmed"]
    assert sorted(p.name for p in (root / sm.FOLDER).iterdir()) == list(sm.FILES)
    assert pubmed["files"] == ["pubmed/pubmed26n0001.xml.gz", "pubmed/pubmed26n0002.xml.gz"]
    baseline, update = _items(root, sm.BASELINE), _items(root, sm.UPDATE)
    assert all(isinstance(i, PubmedRecord) for i in baseline)
    deletions = [i for i in update if isinstance(i, PubmedDeletion)]
    assert (len(baseline), len(update) - len(deletions), len(deletions)) == (
        pubmed["baseline_records"],
        pubmed["update_records"],
        pubmed["deletions"],
    )
    assert pubmed == {
        "files": pubmed["files"],
        "baseline_records": 8,  # all but "new" and "missing"
        "update_records": 3,  # 2 revised, 1 new
        "revised": 2,
        "new_in_update": 1,
        "deletions": 1,
        "missing": 1,
        "without_mesh": 1,
        "statuses": {"matched": 8, "deleted": 1, "not_found": 1},
    }
    # Article i has PMID 38000000 + i; each file names the PMIDs of its fates, and no other.
    pmid = {i: str(38_000_000 + i) for i in range(ARTICLES)}
    assert [i.pmid for i in baseline] == [pmid[i] for i in (0, 1, 2, 3, 4, 5, 7, 9)]
    assert [i.pmid for i in update] == [pmid[1], pmid[5], pmid[8], pmid[3]]
    assert isinstance(update[-1], PubmedDeletion)
    assert {p: e["fate"] for p, e in manifest["pubmed"].items()} == {
        pmid[i]: sm.fate(i) for i in range(ARTICLES)
    }
    # Versions: every record a PMID of version 1; the revision revises, later.
    old, new = _by_pmid(baseline), _by_pmid(update)
    for i in (1, 5):
        before, after = old[pmid[i]], new[pmid[i]]
        assert after.date_revised > before.date_revised
        assert len(after.article_mesh_terms) == len(before.article_mesh_terms) + 1
        assert set(before.article_mesh_terms) < set(after.article_mesh_terms)
    assert {r.pmid_version for r in [*old.values(), *new.values()]} == {1}
    assert old[pmid[9]].article_mesh_terms == [] and old[pmid[9]].publication_types


# Element order of MedlineCitation and Article children, as NLM's DTD (pubmed_250101) has it.
CITATION_ORDER = [
    "PMID",
    "DateCompleted",
    "DateRevised",
    "Article",
    "MedlineJournalInfo",
    "ChemicalList",
    "CitationSubset",
    "MeshHeadingList",
    "KeywordList",
]
ARTICLE_ORDER = [
    "Journal",
    "ArticleTitle",
    "ELocationID",
    "Abstract",
    "AuthorList",
    "Language",
    "PublicationTypeList",
    "ArticleDate",
]


def _in_order(tags: list[str], order: list[str]) -> bool:
    positions = [order.index(t) for t in tags]
    return positions == sorted(positions)


def test_every_record_has_the_elements_enrich_reads(corpus):
    root, _, _ = corpus
    for name in sm.FILES:
        raw = gzip.decompress((root / sm.FOLDER / name).read_bytes())
        tree = etree.fromstring(raw, etree.XMLParser(no_network=True, resolve_entities=False))
        assert tree.tag == "PubmedArticleSet"
        assert tree.getroottree().docinfo.public_id == (
            "-//NLM//DTD PubMedArticle, 1st January 2025//EN"
        )
        articles = tree.findall("PubmedArticle")
        assert articles and all(
            [c.tag for c in a] == ["MedlineCitation", "PubmedData"] for a in articles
        )
        for article in articles:
            citation = article.find("MedlineCitation")
            assert _in_order([c.tag for c in citation], CITATION_ORDER)
            pmid = citation.find("PMID")
            assert pmid.get("Version") == "1" and re.fullmatch(r"380000\d\d", pmid.text)
            assert citation.find("DateRevised/Year") is not None
            assert _in_order([c.tag for c in citation.find("Article")], ARTICLE_ORDER)
            assert citation.findtext("Article/Journal/Title")
            assert citation.findtext("Article/ArticleTitle")
            types = citation.findall("Article/PublicationTypeList/PublicationType")
            assert types[0].text == "Journal Article"
            assert all(sm.PUBLICATION_TYPES[t.text] == t.get("UI") for t in types)
            indexed = citation.get("Status") == "MEDLINE"
            assert citation.get("Status") in ("MEDLINE", "PubMed-not-MEDLINE")
            assert (citation.find("DateCompleted") is not None) == indexed
            headings = citation.findall("MeshHeadingList/MeshHeading")
            assert bool(headings) == indexed
            for heading in headings:
                name_ = heading.find("DescriptorName")
                assert sm.DESCRIPTORS[name_.text] == name_.get("UI")
                assert name_.get("MajorTopicYN") in ("Y", "N")
                for qualifier in heading.findall("QualifierName"):
                    assert sm.QUALIFIERS[qualifier.text] == qualifier.get("UI")
            for chemical in citation.findall("ChemicalList/Chemical"):
                substance = chemical.find("NameOfSubstance")
                assert sm.DESCRIPTORS[substance.text] == substance.get("UI")
                assert chemical.findtext("RegistryNumber")
            ids = {i.get("IdType"): i.text for i in article.findall("PubmedData/ArticleIdList/*")}
            assert ids["pubmed"] == pmid.text
            assert ids["pmc"] == f"PMC{9_000_001 + int(pmid.text) - 38_000_000}"
        deletions = tree.findall("DeleteCitation/PMID")
        assert [d.get("Version") for d in deletions] == ["1"] * len(deletions)


def test_mesh_follows_the_article_topic_and_figures(corpus):
    root, _, manifest = corpus
    records = {**_by_pmid(_items(root, sm.BASELINE)), **_by_pmid(_items(root, sm.UPDATE))}
    # The corpus's own words are all known to the tables (or knowingly left out).
    assert set(sm.DISEASES) == set(sc._DISEASES)
    assert set(sm.CELLS) == set(sc._CELLS) and set(sm.TISSUES) == set(sc._TISSUES)
    assert set(sm.GENES) <= set(sc._GENES) and set(sm.DRUGS) <= set(sc._TREATMENTS)
    assert set(sm.KIND_DESCRIPTORS) <= set(sc.KINDS)
    checked = 0
    for index in range(ARTICLES):
        plan = sc.plan_article(SEED, index)
        entry = manifest["pubmed"][plan.pmid]
        if entry["status"] != "matched" or entry["fate"] == "not_indexed":
            continue
        record = records[plan.pmid]
        assert record.article_mesh_terms == entry["mesh_terms"]
        terms = set(record.article_mesh_terms)
        kinds = set(sc.article_kinds(SEED, plan).values())
        content = sc._article_text(plan, sc.article_kinds(SEED, plan))
        disease = next(d for d in sc._DISEASES if d in content.title)
        assert sm.DISEASES[disease][0] in record.mesh_major_topics
        if "micrograph" in kinds:
            assert "Microscopy" in terms
        if "blot" in kinds:
            assert "Blotting, Western" in terms
        assert ("Humans" in terms) or {"Animals", "Mice"} <= terms
        assert record.mesh_descriptor_ids == [sm.DESCRIPTORS[t] for t in record.article_mesh_terms]
        checked += 1
    assert checked >= 6


def test_same_seed_same_bytes_another_seed_other_records(corpus, tmp_path):
    root, _, _ = corpus
    again = tmp_path / "again"
    sc.generate_corpus(str(again), ARTICLES, seed=SEED, image_side=SIDE, workers=2)
    for name in sm.FILES:
        assert (again / sm.FOLDER / name).read_bytes() == (root / sm.FOLDER / name).read_bytes()
    other = [sm.article_medline(SEED + 1, _citation(SEED + 1, i)) for i in range(ARTICLES)]
    assert sm.medline_files(other)[sm.BASELINE] != (root / sm.FOLDER / sm.BASELINE).read_bytes()


def _citation(seed: int, index: int) -> sm.ArticleCitation:
    plan = sc.plan_article(seed, index)
    kinds = sc.article_kinds(seed, plan)
    return sc._citation_of(plan, sc._article_text(plan, kinds), kinds)


def test_overwrite_clears_a_corpus_with_its_pubmed_folder(corpus, tmp_path, capsys):
    out = tmp_path / "c"
    argv = ["--output", str(out), "--articles", "2", "--image_side", "40"]
    sample_cli.run(argv)
    assert (out / sm.FOLDER / sm.BASELINE).is_file()
    capsys.readouterr()
    sample_cli.run([*argv, "--overwrite", "--seed", "5"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["seed"] == 5 and printed["pubmed"]["baseline_records"] == 2


def test_extract_ignores_pubmed_and_enrich_finds_what_the_corpus_says(corpus, tmp_path):
    from pipelines.enrich import run as run_enrich

    root, summary, manifest = corpus
    extract = tmp_path / "extract"
    flags = ["--include_retracted", "--include_non_oa"]  # every article: the counts are exact
    report = run_extract(["--source", str(root), "--output", str(extract), *flags])
    assert report["balanced"] and read_dead_letters(extract) == []
    articles = read_table(extract / "extract" / "articles")
    assert len(articles) == ARTICLES  # the pubmed/ folder is no article, and nothing broke

    enriched = tmp_path / "enriched"
    medline = str(root / sm.FOLDER / "*.xml.gz")
    result = run_enrich(["--input", str(extract), "--output", str(enriched), "--medline", medline])
    assert result["balanced"]
    on_disk = json.loads((enriched / "run_report.json").read_text())
    assert on_disk["balanced"] and read_dead_letters(enriched) == []
    stage = on_disk["stages"]["enrich"]
    assert (stage["in"], stage["out"]) == (ARTICLES, ARTICLES)
    assert stage["by_status"] == summary["pubmed"]["statuses"]
    source = on_disk["stages"]["medline"]
    pubmed = summary["pubmed"]
    assert (source["in"], source["out"], source["dead_letter"]) == (2, 2, 0)
    assert source["records"] == pubmed["baseline_records"] + pubmed["update_records"]
    assert source["deletions"] == pubmed["deletions"]

    rows = read_table(enriched / "extract" / "articles")
    assert sorted(r["article_pmid"] for r in rows) == sorted(manifest["pubmed"])
    statuses = Counter()
    for row in rows:
        entry = manifest["pubmed"][row["article_pmid"]]
        statuses[row["article_pubmed_status"]] += 1
        assert row["article_pubmed_status"] == entry["status"]
        if entry["status"] != "matched":
            assert row["article_mesh_terms"] == [] and row["article_pubmed_source"] == ""
            continue
        # The version that stands: the update's for revised and new records.
        assert row["article_mesh_terms"] == entry["mesh_terms"]
        assert row["article_pubmed_date_revised"] == entry["date_revised"]
        assert row["article_pubmed_source"] == entry["source"]
        assert row["article_publication_types"][0] == "Journal Article"
        if entry["fate"] in ("revised", "new"):
            assert row["article_pubmed_source"] == sm.UPDATE
    assert statuses == Counter(pubmed["statuses"])
    revised = [r for r in rows if manifest["pubmed"][r["article_pmid"]]["fate"] == "revised"]
    old = _by_pmid(_items(root, sm.BASELINE))
    for row in revised:  # the baseline's version lost: an older date, one descriptor fewer
        before = old[row["article_pmid"]]
        assert row["article_pubmed_date_revised"] > before.date_revised
        assert set(row["article_mesh_terms"]) - set(before.article_mesh_terms)
    assert len(revised) == pubmed["revised"] == 2


def test_ids_agree_with_real_medline_records():
    # Where the real slices (tests/data/medline) name a descriptor or qualifier we use, NLM's
    # id and ours are one.
    seen, qualifiers = {}, {}
    for path in sorted(MEDLINE_SLICES.glob("*.xml.gz")):
        for record in read_medline(str(path)):
            if isinstance(record, PubmedRecord):
                seen.update(zip(record.article_mesh_terms, record.mesh_descriptor_ids, strict=True))
                for pair, ids in zip(
                    record.mesh_qualifiers, record.mesh_qualifier_ids, strict=True
                ):
                    qualifiers[pair.split("/")[-1]] = ids.split("/")[-1]
    shared = {name: ui for name, ui in seen.items() if name in sm.DESCRIPTORS}
    assert len(shared) >= 4 and all(sm.DESCRIPTORS[n] == ui for n, ui in shared.items())
    shared_q = {name: ui for name, ui in qualifiers.items() if name in sm.QUALIFIERS}
    assert shared_q and all(sm.QUALIFIERS[n] == ui for n, ui in shared_q.items())
