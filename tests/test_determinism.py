"""The same source and flags give the same extract files and the same dataset, byte for
byte, whatever the runner's worker count and however it cut the work into bundles."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import run_extract

from pipelines import shard as shard_pipeline
from transforms import article_files
from transforms.pmc.sample_corpus import generate_corpus

MULTI_PROCESS = ["--direct_running_mode", "multi_processing", "--direct_num_workers", "2"]
PER_FILE = 4  # articles per extract file: a 14-article corpus gives several files


def files(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under root."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def articles_of(path: Path, column: str = "article_accession_id") -> list:
    return pq.read_table(path, columns=[column]).column(column).to_pylist()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("determinism")
    corpus = root / "corpus"
    generate_corpus(str(corpus), 14, seed=5, image_side=120)
    patch = pytest.MonkeyPatch()
    # Read when the graph is built, then carried into every worker with the graph.
    patch.setattr(article_files, "ARTICLES_PER_FILE", PER_FILE)
    out = {}
    try:
        for name, flags in (("one", ["--direct_num_workers", "1"]), ("two", MULTI_PROCESS)):
            extract = root / f"extract-{name}"
            report = run_extract(["--source", str(corpus), "--output", str(extract), *flags])
            assert report["balanced"], report
            dataset = root / f"dataset-{name}"
            shard = shard_pipeline.run(
                ["--input", str(extract), "--output", str(dataset), "--samples_per_shard", "5"]
                + flags
            )
            assert shard["balanced"], shard
            out[name] = {"extract": extract, "dataset": dataset, "report": report}
    finally:
        patch.undo()
    return out


@pytest.mark.slow
def test_extract_files_are_named_and_ordered_by_content(runs):
    one, two = runs["one"]["extract"], runs["two"]["extract"]
    parts = ("extract/figures", "extract/articles", "extract/duplicates", "dead_letter")
    for part in parts:
        assert files(one / part) == files(two / part), part
    figures = sorted((one / "extract" / "figures").glob("*.parquet"))
    listed = runs["one"]["report"]["stages"]["discover"]["out"]
    count = -(-listed // PER_FILE)
    assert count >= 3
    assert [p.name for p in figures] == [
        article_files.file_name(i, count)
        for i in range(count)
        if (one / "extract" / "figures" / article_files.file_name(i, count)).exists()
    ]
    assert len(figures) >= 2
    # A figure file's articles are those of the articles file of the same name, in order.
    seen = set()
    for path in figures:
        sibling = one / "extract" / "articles" / path.name
        in_figures = articles_of(path)
        assert in_figures == sorted(in_figures)
        assert set(in_figures) <= set(articles_of(sibling))
        assert articles_of(sibling) == sorted(articles_of(sibling))
        assert not seen & set(in_figures)  # an article lies in one file only
        seen |= set(in_figures)
    # Within an article, figures run in their numbers' order (F2 before F10).
    for path in figures:
        keys = articles_of(path, "key")
        assert keys == sorted(keys, key=lambda k: [int(p) if p.isdigit() else p for p in _runs(k)])


def _runs(key: str) -> list[str]:
    import re

    return re.findall(r"\d+|\D+", key)


@pytest.mark.slow
def test_shards_from_two_worker_counts_are_identical(runs):
    one, two = runs["one"]["dataset"], runs["two"]["dataset"]
    manifest_one = json.loads((one / "manifest.json").read_text())
    manifest_two = json.loads((two / "manifest.json").read_text())
    assert manifest_one["totals"]["samples"] > 20
    assert [(s["path"], s["sha256"], s["parquet_sha256"]) for s in manifest_one["shards"]] == [
        (s["path"], s["sha256"], s["parquet_sha256"]) for s in manifest_two["shards"]
    ]
    assert files(one / "webdataset") == files(two / "webdataset")
    assert files(one / "parquet") == files(two / "parquet")
    assert files(one / "dead_letter") == files(two / "dead_letter")


# ---- the writer alone: however the runner cuts the rows into bundles -----------------------------

SCHEMA = pa.schema(
    [
        ("article_accession_id", pa.string()),
        ("article_version", pa.int64()),
        ("source_location", pa.string()),
        ("key", pa.string()),
        ("image_hash", pa.string()),
        ("caption", pa.string()),
        ("image_source", pa.string()),
        ("image", pa.binary()),
    ]
)


def _rows() -> list[dict]:
    rows = []
    for a in range(9):
        for n in (1, 2, 10, 3, 11):  # document order; F2 sorts before F10
            rows.append(
                {
                    "article_accession_id": f"PMC{a}",
                    "article_version": 1,
                    "source_location": f"s/{a}",
                    "key": f"PMC{a}_F{n}",
                    "image_hash": f"h{a}{n}",
                    "caption": f"Figure {n}",
                    "image_source": f"s/{a}/f{n}",
                    "image": bytes([a, n]) * 300_000,  # pages (1 MB) end within a row group
                }
            )
    return rows


def _write(
    tmp: Path, bundles: list[list[dict]], flush_rows: int, dropped: dict
) -> dict[str, bytes]:
    from transforms.sinks import _Stage, _WriteFile, figure_order

    stage = _Stage(str(tmp / "staging"), SCHEMA, figure_order, (flush_rows, 1 << 30))
    pieces: dict[int, list] = {}
    for bundle in bundles:
        stage.start_bundle()
        for row in bundle:
            stage.process(row, 3)
        for out in stage.finish_bundle():
            index, piece = out.value
            pieces.setdefault(index, []).append(piece)
    writer = _WriteFile(str(tmp / "out"), SCHEMA, (4, 1 << 30))
    kept = sum(n for item in pieces.items() for n in writer.process(item, 3, dropped))
    assert kept == 45 - len(dropped)
    return {p.name: p.read_bytes() for p in sorted((tmp / "out").glob("*"))}


@pytest.mark.parametrize("dropped", [{}, {"PMC3_F10": "PMC3_F1", "PMC0_F1": "PMC1_F1"}])
def test_same_rows_in_other_bundles_give_the_same_files(tmp_path, dropped):
    """Bundles of any size and order, flushed anywhere (mid-article too): same bytes."""
    rows = _rows()
    whole = _write(tmp_path / "a", [rows], 1000, dropped)
    shuffled = list(reversed(rows))
    cut = _write(tmp_path / "b", [shuffled[:7], shuffled[7:30], shuffled[30:]], 2, dropped)
    assert whole == cut
    assert len(whole) >= 2
    assert all(name.startswith("part-") and name.endswith("-of-00003.parquet") for name in whole)
    keys = [k for name in sorted(whole) for k in articles_of(tmp_path / "a" / "out" / name, "key")]
    assert len(keys) == 45 - len(dropped) and not set(dropped) & set(keys)
    first = [k for k in keys if k.startswith("PMC4_")]
    assert first == [f"PMC4_F{n}" for n in (1, 2, 3, 10, 11)]


def test_a_bundle_stages_into_one_file_whatever_files_it_feeds(tmp_path):
    """All of PMC is thousands of output files: a bundle holds one open staging writer (one
    staged file), and each output file is told where its rows lie in it."""
    from transforms.sinks import _Stage, figure_order

    staging = tmp_path / "staging"
    stage = _Stage(str(staging), SCHEMA, figure_order, (2, 1 << 30))
    for bundle in (_rows()[:30], _rows()[30:]):
        stage.start_bundle()
        for row in bundle:
            stage.process(row, 3)
        assert stage.file is not None  # the one writer of this bundle
        out = [o.value for o in stage.finish_bundle()]
        assert len({index for index, _ in out}) >= 2  # it fed several output files
        assert len({path for _, (path, _) in out}) == 1  # from one staged file
    staged = sorted(p.name for p in staging.iterdir())
    assert len(staged) == 2 and all(name.endswith(".arrow") for name in staged)


def test_an_empty_bundle_stages_nothing(tmp_path):
    from transforms.sinks import _Stage, figure_order

    stage = _Stage(str(tmp_path / "staging"), SCHEMA, figure_order, (2, 1 << 30))
    stage.start_bundle()
    assert list(stage.finish_bundle()) == []
    assert not (tmp_path / "staging").exists()


def _sorted_table(directory: Path, records: list[dict]) -> dict[str, bytes]:
    import apache_beam as beam

    from transforms.sinks import WriteSortedTable

    schema = pa.schema([("key", pa.string()), ("duplicate_of", pa.string())])
    with beam.Pipeline() as p:
        _ = (
            p
            | beam.Create(records)
            | WriteSortedTable(str(directory), schema, lambda d: d["key"], rows_per_file=3)
        )
    return {f.name: f.read_bytes() for f in sorted(directory.glob("*"))}


def test_sorted_table_is_spread_over_files_each_sorted_on_its_own(tmp_path):
    """Duplicates of all of PMC never meet on one worker: n files from the count, each
    sorted by key; the same records in another order give the same bytes."""
    records = [{"key": f"PMC{i}_F1", "duplicate_of": f"PMC{i + 100}_F1"} for i in range(10)]
    one = _sorted_table(tmp_path / "a", records)
    two = _sorted_table(tmp_path / "b", list(reversed(records)))
    assert one == two
    assert all(name.endswith("-of-00004.parquet") for name in one)
    assert len(one) >= 2
    keys = []
    for name in one:
        part = articles_of(tmp_path / "a" / name, "key")
        assert part == sorted(part)
        keys += part
    assert sorted(keys) == sorted(r["key"] for r in records)


def test_sorted_table_of_nothing_is_one_empty_file(tmp_path):
    written = _sorted_table(tmp_path / "a", [])
    assert list(written) == ["part-00000-of-00001.parquet"]
    assert pq.read_table(tmp_path / "a" / "part-00000-of-00001.parquet").num_rows == 0
