"""An article's text is held once, whatever its figure count: stored once per article in
extract/articles, never copied into its figure rows, and joined back into every sample's
JSON where the shard stage writes it (and kept by subset)."""

from __future__ import annotations

import io
import json
import random
import shutil
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import read_table, run_extract

from pipelines import shard as shard_pipeline
from pipelines import subset as subset_pipeline
from transforms.records import ARTICLE_SCHEMA, FIGURE_FILE_SCHEMA, FIGURE_SCHEMA
from transforms.shard.sources import ArticleColumns, text_column
from transforms.shard.write_shards import _values

FIGURES = {"PMC101": 30, "PMC102": 2}


def _jpeg(seed: int) -> bytes:
    from PIL import Image

    rng = random.Random(seed)
    image = Image.frombytes("L", (40, 40), bytes(rng.randrange(256) for _ in range(1600)))
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=85)
    return out.getvalue()


def body_of(pmcid: str) -> str:
    return (f"Body of {pmcid}: " + f"the {pmcid} cells were counted. " * 3000).strip()


def article_xml(pmcid: str, figures: int) -> bytes:
    figs = "".join(
        f'<fig id="F{n}"><label>Figure {n}</label><caption><p>Panel {n} of {pmcid}.</p>'
        f'</caption><graphic xlink:href="f{n}"/></fig>'
        for n in range(1, figures + 1)
    )
    return (
        '<article xmlns:xlink="http://www.w3.org/1999/xlink" article-type="research-article">'
        "<front><journal-meta><journal-title-group><journal-title>J Test</journal-title>"
        "</journal-title-group></journal-meta><article-meta>"
        f'<article-id pub-id-type="pmc">{pmcid.removeprefix("PMC")}</article-id>'
        "<title-group><article-title>T</article-title></title-group>"
        '<permissions><license xlink:href="https://creativecommons.org/licenses/by/4.0/">'
        "<license-p>CC BY</license-p></license></permissions></article-meta></front>"
        f"<body><sec><p>{body_of(pmcid)}</p>{figs}</sec></body></article>"
    ).encode()


def json_texts(dataset: Path) -> dict[str, str]:
    """{key: article_text} of every sample's JSON in a dataset's tars."""
    out = {}
    for path in sorted(dataset.glob("webdataset/*/*.tar")):
        with tarfile.open(path) as tar:
            for member in tar:
                if member.name.endswith(".json"):
                    meta = json.loads(tar.extractfile(member).read())
                    out[meta["key"]] = meta["article_text"]
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("article-text")
    corpus = root / "corpus"
    seed = 0
    for pmcid, count in FIGURES.items():
        folder = corpus / pmcid
        folder.mkdir(parents=True)
        (folder / f"{pmcid}.xml").write_bytes(article_xml(pmcid, count))
        for n in range(1, count + 1):
            seed += 1
            (folder / f"f{n}.jpg").write_bytes(_jpeg(seed))
    extract = root / "extract"
    report = run_extract(["--source", str(corpus), "--output", str(extract)])
    assert report["balanced"], report
    dataset = root / "dataset"
    assert shard_pipeline.run(["--input", str(extract), "--output", str(dataset)])["balanced"]
    return {"root": root, "extract": extract, "dataset": dataset, "report": report}


def test_figure_rows_do_not_copy_the_text(built):
    extract = built["extract"] / "extract"
    figures = sorted((extract / "figures").glob("*.parquet"))
    assert figures and all("article_text" not in pq.read_schema(p).names for p in figures)
    assert len(read_table(extract / "figures")) == sum(FIGURES.values())
    articles = read_table(extract / "articles")
    assert {a["article_accession_id"]: a["article_text"] for a in articles} == {
        pmcid: body_of(pmcid) for pmcid in FIGURES
    }
    # Every figure file has its articles file: same name, sibling folder.
    assert {p.name for p in figures} <= {p.name for p in (extract / "articles").glob("*")}
    assert "article_text" in ARTICLE_SCHEMA.names and "article_text" in FIGURE_SCHEMA.names
    assert "article_text" not in FIGURE_FILE_SCHEMA.names


def test_every_sample_json_carries_its_article_text(built):
    texts = json_texts(built["dataset"])
    assert len(texts) == sum(FIGURES.values())
    for key, text in texts.items():
        assert text == body_of(key.split("_")[0]), key
    # The shard's Parquet index leaves the text out (it is in the JSON and extract/articles).
    index = pq.read_table(built["dataset"] / "parquet")
    assert "article_text" not in index.column_names and index.num_rows == len(texts)


def test_subset_keeps_the_article_text(built, tmp_path):
    output = tmp_path / "subset"
    report = subset_pipeline.run(
        [
            "--input",
            str(built["dataset"]),
            "--output",
            str(output),
            "--where",
            "figure_id in ('F2', 'F7')",
        ]
    )
    assert report["balanced"], report
    texts = json_texts(output)
    assert sorted(texts) == ["PMC101_F2", "PMC101_F7", "PMC102_F2"]
    assert all(text == body_of(key.split("_")[0]) for key, text in texts.items())


def _figures_alone(built, folder: Path, with_text: bool) -> None:
    """The extract's figure rows in a folder with no articles beside it; `with_text`: as an
    older extract wrote them, each row carrying its article's text."""
    table = pq.read_table(built["extract"] / "extract" / "figures")
    if with_text:
        table = table.append_column(
            "article_text",
            pa.array([body_of(k) for k in table.column("article_accession_id").to_pylist()]),
        )
    folder.mkdir()
    pq.write_table(table, folder / "part-0.parquet")


def test_figure_file_that_carries_the_text_keeps_it(built, tmp_path):
    _figures_alone(built, tmp_path / "figures", with_text=True)
    output = tmp_path / "dataset"
    report = shard_pipeline.run(
        ["--input", str(tmp_path / "figures" / "*.parquet"), "--output", str(output)]
    )
    assert report["balanced"], report
    texts = json_texts(output)
    assert len(texts) == sum(FIGURES.values())
    assert all(text == body_of(key.split("_")[0]) for key, text in texts.items())
    # The same samples, byte for byte, as from the extract's own figure and article files.
    assert {p.name: p.read_bytes() for p in output.glob("webdataset/*/*.tar")} == {
        p.name: p.read_bytes() for p in built["dataset"].glob("webdataset/*/*.tar")
    }


def _shard(argv: list[str], capsys) -> tuple[int, str]:
    """`biomedica shard ARGV` as a user runs it: exit status and stderr."""
    code = shard_pipeline.main(argv)
    return code, capsys.readouterr().err


def test_figure_file_without_articles_is_refused_before_the_job(built, tmp_path, capsys):
    """Copying extract/figures alone would give every sample an empty text: refused, in one
    line naming the missing file and the flag that accepts it."""
    _figures_alone(built, tmp_path / "figures", with_text=False)
    output = tmp_path / "dataset"
    code, err = _shard(
        ["--input", str(tmp_path / "figures" / "*.parquet"), "--output", str(output)], capsys
    )
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert str(tmp_path / "articles" / "part-0.parquet") in err
    assert "--without_article_text" in err
    assert not output.exists()


def test_one_figure_file_without_articles_among_others_is_refused(built, tmp_path, capsys):
    extract = tmp_path / "extract"
    for part in ("figures", "articles"):
        shutil.copytree(built["extract"] / "extract" / part, extract / "extract" / part)
    gone = sorted((extract / "extract" / "articles").glob("*.parquet"))[-1]
    gone.unlink()
    code, err = _shard(["--input", str(extract), "--output", str(tmp_path / "dataset")], capsys)
    assert code == 1 and str(gone) in err and "--without_article_text" in err, err


def test_without_article_text_writes_empty_texts_and_says_so(built, tmp_path, capsys):
    _figures_alone(built, tmp_path / "figures", with_text=False)
    output = tmp_path / "dataset"
    argv = ["--input", str(tmp_path / "figures" / "*.parquet"), "--output", str(output)]
    code, err = _shard([*argv, "--without_article_text"], capsys)
    assert code == 0, err
    report = json.loads((output / "run_report.json").read_text())
    assert report["balanced"] and report["stages"]["shard"]["out"] == sum(FIGURES.values())
    assert set(json_texts(output).values()) == {""}
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["parameters"]["without_article_text"] is True


def test_article_missing_from_its_articles_file_is_counted_and_marked(built, tmp_path):
    """An articles file that lacks one article: its samples keep an empty text, each with a
    `fixes` entry, and the run report counts them."""
    extract = tmp_path / "extract"
    for part in ("figures", "articles"):
        shutil.copytree(built["extract"] / "extract" / part, extract / "extract" / part)
    for path in (extract / "extract" / "articles").glob("*.parquet"):
        table = pq.read_table(path)
        keep = [a != "PMC102" for a in table.column("article_accession_id").to_pylist()]
        pq.write_table(table.filter(pa.array(keep)), path)
    output = tmp_path / "dataset"
    report = shard_pipeline.run(["--input", str(extract), "--output", str(output)])
    assert report["balanced"], report
    shard = report["stages"]["shard"]
    assert shard["out"] == sum(FIGURES.values())
    assert shard["samples_without_article_text"] == FIGURES["PMC102"]
    fixes = json_fields(output, "fixes")
    for key, text in json_texts(output).items():
        if key.startswith("PMC102_"):
            assert text == "" and "article_text_not_found" in fixes[key], key
        else:
            assert text == body_of("PMC101") and "article_text_not_found" not in fixes[key]


def json_fields(dataset: Path, field: str) -> dict:
    out = {}
    for path in sorted(dataset.glob("webdataset/*/*.tar")):
        with tarfile.open(path) as tar:
            for member in tar:
                if member.name.endswith(".json"):
                    meta = json.loads(tar.extractfile(member).read())
                    out[meta["key"]] = meta[field]
    return out


def test_extract_that_found_nothing_new_shards_only_with_allow_empty(tmp_path, capsys):
    """An incremental extract that found nothing writes no figure files: shard says so and
    names --allow_empty; with it, an empty dataset (0 samples) and status 0."""
    extract = tmp_path / "extract"
    (extract / "extract").mkdir(parents=True)
    (extract / "run_report.json").write_text("{}")
    output = tmp_path / "dataset"
    code, err = _shard(["--input", str(extract), "--output", str(output)], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "no figure files" in err and "--allow_empty" in err
    code, err = _shard(["--input", str(extract), "--output", str(output), "--allow_empty"], capsys)
    assert code == 0, err
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["totals"]["samples"] == 0 and manifest["shards"] == []


# ---- the join, unit by unit ----------------------------------------------------------------------


def _articles_file(path: Path, rows: list[tuple]) -> str:
    table = pa.table(
        {
            "article_accession_id": [r[0] for r in rows],
            "article_version": pa.array([r[1] for r in rows], pa.int64()),
            "source_location": [r[2] for r in rows],
            "article_text": [r[3] for r in rows],
        }
    )
    pq.write_table(table, path, row_group_size=3)
    return str(path)


def test_article_texts_in_any_order(tmp_path, monkeypatch):
    from transforms.article_files import article_id
    from transforms.shard import sources

    monkeypatch.setattr(sources, "ARTICLE_BATCH_ROWS", 2)  # several batches per file
    rows = [(f"PMC{n}", 1, "s", f"text {n}") for n in range(10)]
    rows += [("PMC5", 2, "s", "text 5, version 2"), ("PMC5", None, "s", "text 5, no version")]
    texts = ArticleColumns(_articles_file(tmp_path / "a.parquet", rows))
    asked = [("PMC1", 1), ("PMC8", 1), ("PMC2", 1), ("PMC5", 2), ("PMC5", 1), ("PMC5", None)]
    asked += [("PMC9", 1), ("PMC0", 1), ("PMC9", 1), ("PMC404", 1), ("PMC3", 1)]
    got = [texts.text(article_id(a, v, "s")) for a, v in asked]
    assert got == [
        "text 1",
        "text 8",
        "text 2",
        "text 5, version 2",
        "text 5",
        "text 5, no version",
        "text 9",
        "text 0",
        "text 9",
        "",  # not in the file
        "text 3",
    ]
    assert texts.text(article_id("PMC1", 1, "elsewhere")) == ""
    # A batch of figures in any order: at most two scans of the file; and once the whole
    # file was seen, articles it lacks cost no scan at all.
    opened = []
    read = sources._read_parquet
    monkeypatch.setattr(sources, "_read_parquet", lambda *a: opened.append(1) or read(*a))
    figures = pa.table(
        {
            "article_accession_id": ["PMC7", "PMC3", "PMC7", "PMC404", "PMC9", "PMC0"],
            "article_version": pa.array([1, 1, 1, 1, 1, 1], pa.int64()),
            "source_location": ["s"] * 6,
        }
    )
    column = texts.column(figures)
    assert column.to_pylist() == ["text 7", "text 3", "text 7", "", "text 9", "text 0"]
    assert len(column.dictionary) == 5 and len(opened) <= 2
    opened.clear()
    assert [texts.text(article_id(f"PMC{n}", 1, "s")) for n in (500, 501, 502)] == [""] * 3
    assert opened == []


def test_a_text_is_held_once_however_many_rows_share_it():
    body = "x" * 1_000_000
    column = text_column([body] * 1000 + ["other"])
    assert len(column.dictionary) == 2 and column.nbytes < 2_000_000
    values = _values(pa.chunked_array([column.slice(0, 600), column.slice(600)]))
    assert len(values) == 1001 and values[-1] == "other"
    assert all(v is values[0] for v in values[:1000])
