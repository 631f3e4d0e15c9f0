"""Stages read an enrich output as they read an extract output.

A small generated corpus is extracted once; an enrich output is then written by hand (the
enrich pipeline is tested on its own): the extract's articles files with the PubMed columns
set (MeSH terms for every other article, "matched"; the others "no_pmid"), and the link
(extract/figures.json) to the extract's figures, which it does not copy. shard, subset,
embed and annotate take it as --input; the figures come from the extract, the PubMed fields
from the enrich output's articles.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import json_samples, read_table, run_extract, shard_members

from pipelines import annotate as annotate_pipeline
from pipelines import embed as embed_pipeline
from pipelines import shard as shard_pipeline
from pipelines import subset as subset_pipeline
from transforms import extract_layout
from transforms.pmc.sample_corpus import generate_corpus
from transforms.records import ARTICLE_SCHEMA, PUBMED_COLUMNS

MESH = ["Neoplasms", "Humans"]
MESH_IDS = ["D009369", "D006801"]
QUIET = ["--log_level", "ERROR"]


def pubmed_fields(matched: bool, mesh=MESH) -> dict:
    """The PubMed columns the fake enrich gives an article: filled, or empty and why."""
    if not matched:
        empty = {
            name: "" if ARTICLE_SCHEMA.field(name).type == pa.string() else []
            for name in PUBMED_COLUMNS
        }
        return empty | {"article_pubmed_status": "no_pmid"}
    return {
        "article_mesh_terms": list(mesh),
        "article_mesh_ids": MESH_IDS[: len(mesh)],
        "article_mesh_major_topics": list(mesh[:1]),
        "article_mesh_qualifiers": [f"{mesh[0]}/pathology"],
        "article_mesh_qualifier_ids": [f"{MESH_IDS[0]}/Q000473"],
        "article_publication_types": ["Journal Article"],
        "article_chemicals": ["Water"],
        "article_pubmed_date_revised": "2025-01-31",
        "article_pubmed_source": "pubmed25n0001.xml.gz",
        "article_pubmed_status": "matched",
    }


def fake_enrich(extract: Path, enr: Path, matched: set[str], mesh=MESH) -> None:
    """ENR: EXTRACT's articles files, same names, rows and schema, with the PubMed columns
    of the `matched` articles (by accession) filled, and the link to EXTRACT's figures."""
    folder = enr / "extract" / "articles"
    folder.mkdir(parents=True, exist_ok=True)
    for path in sorted((extract / "extract" / "articles").glob("*.parquet")):
        rows = pq.read_table(path).to_pylist()
        for row in rows:
            row.update(pubmed_fields(row["article_accession_id"] in matched, mesh))
        pq.write_table(pa.Table.from_pylist(rows, ARTICLE_SCHEMA), folder / path.name)
    source = extract_layout.layout(str(extract))
    extract_layout.write_link(str(enr), extract_layout.link_for(source))


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("enriched")
    corpus, extract, enr = root / "corpus", root / "extract", root / "enr"
    generate_corpus(str(corpus), 8, seed=3, image_side=128)
    assert run_extract(["--source", str(corpus), "--output", str(extract), *QUIET])["balanced"]
    figures = read_table(extract / "extract" / "figures")
    accessions = sorted({row["article_accession_id"] for row in figures})
    matched = set(accessions[::2])
    fake_enrich(extract, enr, matched)
    dataset = root / "dataset"
    report = shard_pipeline.run(
        ["--input", str(enr), "--output", str(dataset), "--samples_per_shard", "5", *QUIET]
    )
    return {
        "root": root,
        "extract": extract,
        "enr": enr,
        "figures": {row["key"]: row for row in figures},
        "matched": {r["key"] for r in figures if r["article_accession_id"] in matched},
        "dataset": dataset,
        "report": report,
    }


def expected_pubmed(built: dict, key: str) -> dict:
    """The PubMed columns a sample must carry: its article's, as the fake enrich set them."""
    return pubmed_fields(key in built["matched"])


# ---- shard ----------------------------------------------------------------------------------


def test_shard_takes_the_pubmed_fields_from_the_enrich_output(built):
    report, figures = built["report"], built["figures"]
    assert report["balanced"], report
    assert report["stages"]["shard"]["out"] == len(figures)
    # The enrich output holds articles only: the figures came from the extract it links to.
    assert not (built["enr"] / "extract" / "figures").exists()
    assert built["matched"] and set(figures) - built["matched"]
    samples = json_samples(built["dataset"])
    assert set(samples) == set(figures)
    for key, sample in samples.items():
        for name, value in expected_pubmed(built, key).items():
            assert sample[name] == value, (key, name)
        assert sample["article_text"], key  # the text still joins
    images = shard_members(built["dataset"], ".jpg")
    assert all(images[key] == figures[key]["image"] for key in figures)
    # The Parquet index carries them too (what --where filters on).
    index = read_table_tree(built["dataset"] / "parquet")
    assert {row["key"] for row in index} == set(figures)
    for row in index:
        assert row["article_mesh_terms"] == expected_pubmed(built, row["key"])["article_mesh_terms"]
        assert (
            row["article_pubmed_status"]
            == expected_pubmed(built, row["key"])["article_pubmed_status"]
        )
    manifest = json.loads((built["dataset"] / "manifest.json").read_text())
    assert manifest["source"] == str(built["enr"])


def read_table_tree(folder: Path) -> list[dict]:
    rows = []
    for path in sorted(folder.rglob("*.parquet")):
        rows.extend(pq.read_table(path).to_pylist())
    return rows


def test_subset_selects_the_samples_of_a_mesh_term(built, tmp_path):
    out = tmp_path / "neoplasms"
    report = subset_pipeline.run(
        ["--input", str(built["dataset"]), "--output", str(out)]
        + ["--where", "'Neoplasms' in article_mesh_terms", *QUIET]
    )
    assert report["balanced"], report
    samples = json_samples(out)
    assert set(samples) == built["matched"]
    assert all(s["article_pubmed_status"] == "matched" for s in samples.values())


def test_hugging_face_loads_the_enriched_dataset(built, tmp_path):
    from datasets import load_dataset

    dataset = built["dataset"]
    manifest = json.loads((dataset / "manifest.json").read_text())
    loaded = 0
    for group in manifest["groups"]:
        rows = load_dataset(str(dataset), group, split="train", cache_dir=str(tmp_path / "hf"))
        for row in rows:
            expected = expected_pubmed(built, row["__key__"])
            assert row["json"]["article_mesh_terms"] == expected["article_mesh_terms"]
            assert row["json"]["article_pubmed_status"] == expected["article_pubmed_status"]
            loaded += 1
    assert loaded == len(built["figures"])


def test_a_plain_extract_still_shards_with_empty_pubmed_fields(built, tmp_path):
    out = tmp_path / "plain"
    report = shard_pipeline.run(["--input", str(built["extract"]), "--output", str(out), *QUIET])
    assert report["balanced"] and report["stages"]["shard"]["out"] == len(built["figures"])
    for sample in json_samples(out).values():
        assert sample["article_mesh_terms"] == [] and sample["article_pubmed_status"] == ""
        assert sample["article_publication_types"] == [] and sample["article_text"]


def _old_extract(built: dict, folder: Path) -> Path:
    """The extract as one made before the PubMed columns: its figure and articles files
    lack them entirely."""
    for part in ("figures", "articles"):
        (folder / "extract" / part).mkdir(parents=True)
        for path in sorted((built["extract"] / "extract" / part).glob("*.parquet")):
            table = pq.read_table(path)
            pq.write_table(
                table.drop_columns(list(PUBMED_COLUMNS)), folder / "extract" / part / path.name
            )
    shutil.copy(built["extract"] / "run_report.json", folder / "run_report.json")
    return folder


def test_an_old_extract_shards_and_its_enrich_output_adds_the_fields(built, tmp_path):
    old = _old_extract(built, tmp_path / "old")
    names = pq.read_schema(next((old / "extract" / "figures").glob("*.parquet"))).names
    assert "article_mesh_terms" not in names
    out = tmp_path / "old_dataset"
    report = shard_pipeline.run(["--input", str(old), "--output", str(out), *QUIET])
    assert report["balanced"] and report["stages"]["shard"]["out"] == len(built["figures"])
    assert all(not s["article_mesh_terms"] for s in json_samples(out).values())
    # An enrich of that extract: its articles files have the columns, its figures do not.
    enr = tmp_path / "old_enr"
    fake_enrich(old, enr, {built["figures"][k]["article_accession_id"] for k in built["matched"]})
    out = tmp_path / "old_enriched_dataset"
    report = shard_pipeline.run(["--input", str(enr), "--output", str(out), *QUIET])
    assert report["balanced"], report
    for key, sample in json_samples(out).items():
        assert sample["article_mesh_terms"] == expected_pubmed(built, key)["article_mesh_terms"]
        assert (
            sample["article_pubmed_status"] == expected_pubmed(built, key)["article_pubmed_status"]
        )


def test_a_new_enrich_is_another_run_not_a_resume(built, tmp_path):
    enr = tmp_path / "enr"
    accessions = {built["figures"][k]["article_accession_id"] for k in built["matched"]}
    fake_enrich(built["extract"], enr, accessions)
    out = tmp_path / "dataset"
    argv = ["--input", str(enr), "--output", str(out), *QUIET]
    assert shard_pipeline.run(argv)["balanced"]
    assert shard_pipeline.run(argv)["mode"] == "resume"
    # enrich again, from newer MEDLINE files: other terms.
    fake_enrich(built["extract"], enr, accessions, mesh=["Neoplasms", "Mice", "Animals"])
    with pytest.raises(SystemExit, match="holds another run"):
        shard_pipeline.run(argv)
    report = shard_pipeline.run([*argv, "--overwrite"])
    assert report["balanced"] and report["mode"] == "overwrite"
    terms = {k: s["article_mesh_terms"] for k, s in json_samples(out).items()}
    assert {k for k, t in terms.items() if t == ["Neoplasms", "Mice", "Animals"]} == built[
        "matched"
    ]


# ---- embed and annotate ---------------------------------------------------------------------


def test_embed_and_annotate_take_the_enrich_output(built, tmp_path):
    emb, ann = tmp_path / "emb", tmp_path / "ann"
    report = embed_pipeline.run(["--input", str(built["enr"]), "--output", str(emb), *QUIET])
    assert report["balanced"] and report["stages"]["embed"]["out"] == len(built["figures"])
    figure_files = sorted(p.name for p in (built["extract"] / "extract" / "figures").iterdir())
    assert sorted(p.name for p in (emb / "embeddings").iterdir()) == figure_files
    report = annotate_pipeline.run(
        ["--input", str(built["enr"]), "--embeddings", str(emb), "--output", str(ann)]
        + ["--clusters", "2", *QUIET]
    )
    assert report["balanced"], report
    rows = read_table(ann / "annotations")
    assert sorted(r["key"] for r in rows) == sorted(built["figures"])
    assert (ann / "gallery" / "index.html").exists()


# ---- refusals, before any work --------------------------------------------------------------


def _cli(main, argv: list, capsys) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def test_a_stale_link_is_refused_in_one_line(built, tmp_path, capsys):
    extract = tmp_path / "extract"
    shutil.copytree(built["extract"], extract)
    enr = tmp_path / "enr"
    fake_enrich(extract, enr, set())
    report = extract / "run_report.json"
    report.write_text(report.read_text() + " ")  # another extract run into that folder
    for main, more in (
        (shard_pipeline.main, []),
        (embed_pipeline.main, []),
        (annotate_pipeline.main, ["--embeddings", tmp_path / "emb"]),
    ):
        out = tmp_path / "out"
        code, err = _cli(main, ["--input", enr, "--output", out, *more], capsys)
        assert code == 1 and len(err.strip().splitlines()) == 1, err
        assert "figures.json" in err and "run enrich again" in err, err
        assert not out.exists()


def test_an_output_over_the_linked_figures_is_refused(built, tmp_path, capsys):
    for main, more in (
        (shard_pipeline.main, []),
        (embed_pipeline.main, []),
        (annotate_pipeline.main, ["--embeddings", tmp_path / "emb"]),
    ):
        for out in (built["extract"], built["extract"] / "extract" / "figures" / "x"):
            code, err = _cli(main, ["--input", built["enr"], "--output", out, *more], capsys)
            assert code == 2 and len(err.strip().splitlines()) == 1, err
            assert "the figures --input" in err and "links to" in err, err
    assert not (built["extract"] / "extract" / "figures" / "x").exists()
