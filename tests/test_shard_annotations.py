"""`shard --annotations`: samples carry annotate's labels, subset filters on them, the card
charts them.

An extract of a small generated corpus is cut into two figure files; an annotations folder
is written beside it by hand (ANNOTATION_SCHEMA Parquet, one file per figure file, the
same names), labelling each sample by the kind of picture the corpus drew for it, with one
key left out.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import json_samples, run_extract

from pipelines import shard as shard_pipeline
from pipelines import subset as subset_pipeline
from transforms.pmc.sample_corpus import MANIFEST_NAME, figure_kinds, generate_corpus, row_kind
from transforms.records import ANNOTATION_FIELDS, ANNOTATION_SCHEMA
from transforms.shard import dataset_card

# Labels by the kind of picture (BIOMEDICA-like global concepts).
PRIMARY = {
    "micrograph": ["Microscopy"],
    "plot": ["Graphics"],
    "heatmap": ["Graphics", "Genomics"],
    "blot": ["Immuno Assays"],
    "photograph": ["Clinical Imaging"],
    "scan": ["Radiology"],
    "diagram": ["Illustrative Diagrams"],
}
LABEL_PAIRS = (("primary", "Microscopy"), ("source", "expert"))
FILES = ("part-00000-of-00002.parquet", "part-00001-of-00002.parquet")


def annotation_of(key: str, kind: str, n: int) -> dict:
    """The annotation the test gives a sample: its kind's labels; every fifth sample's
    cluster is unlabelled (no source, no labels)."""
    cluster = sorted(PRIMARY).index(kind)
    unlabelled = n % 5 == 4
    return {
        "key": key,
        "image_cluster_id": cluster,
        "image_cluster_distance": 0.25 + n / 100,
        "image_label_id": None if unlabelled else cluster,
        "image_panel_type": None if unlabelled else ("multiple" if n % 3 == 0 else "single"),
        "image_panel_subtype": None if unlabelled else "single panel",
        "image_primary_label": [] if unlabelled else PRIMARY[kind],
        "image_secondary_label": [] if unlabelled else [kind],
        "image_label_source": None if unlabelled else ("expert" if n % 2 else "caption_vote"),
        "image_label_score": None if unlabelled else (1.0 if n % 2 else 0.5),
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("annotated")
    corpus, extracted = root / "corpus", root / "extracted"
    generate_corpus(str(corpus), 14, seed=2, image_side=128)
    assert run_extract(["--source", str(corpus), "--output", str(extracted)])["balanced"]
    kinds = figure_kinds(json.loads((corpus / MANIFEST_NAME).read_text()))
    # The extract cut into two figure files, each with the whole articles file beside it.
    extract = root / "extract"
    (extract / "extract" / "figures").mkdir(parents=True)
    (extract / "extract" / "articles").mkdir(parents=True)
    figures = pq.read_table(next((extracted / "extract" / "figures").glob("*.parquet")))
    [articles] = (extracted / "extract" / "articles").glob("*.parquet")
    half = figures.num_rows // 2
    for name, part in zip(FILES, (figures.slice(0, half), figures.slice(half)), strict=True):
        pq.write_table(part, extract / "extract" / "figures" / name)
        shutil.copy(articles, extract / "extract" / "articles" / name)
    # The annotations: every key but one (the first of the second file).
    ann = root / "ann"
    (ann / "annotations").mkdir(parents=True)
    expected, n = {}, 0
    for name in FILES:
        rows = []
        for row in pq.read_table(extract / "extract" / "figures" / name).to_pylist():
            kind = row_kind(kinds, row)
            assert kind is not None, row["key"]
            annotation = annotation_of(row["key"], kind, n)
            n += 1
            expected[row["key"]] = annotation
            rows.append(annotation)
        if name == FILES[1]:
            left_out = rows.pop(0)["key"]
        pq.write_table(pa.Table.from_pylist(rows, ANNOTATION_SCHEMA), ann / "annotations" / name)
    dataset = root / "dataset"
    report = shard_pipeline.run(
        ["--input", str(extract), "--output", str(dataset), "--annotations", str(ann)]
        + ["--samples_per_shard", "5"]
    )
    return {
        "root": root,
        "extract": extract,
        "ann": ann,
        "dataset": dataset,
        "report": report,
        "expected": expected,
        "left_out": left_out,
        "rows": figures.num_rows,
    }


def empty_labels(key: str) -> dict:
    return {
        name: [] if name in ("image_primary_label", "image_secondary_label") else None
        for name in ANNOTATION_FIELDS
    }


def test_samples_carry_their_labels(built):
    report = built["report"]
    assert report["balanced"], report
    shard = report["stages"]["shard"]
    assert shard["in"] == shard["out"] == built["rows"] > 20
    assert shard["samples_without_annotation"] == 1
    assert report["parameters"]["annotations"] == str(built["ann"])
    samples = json_samples(built["dataset"])
    index = {row["key"]: row for row in read_parquet_index(built["dataset"])}
    assert set(samples) == set(index) == set(built["expected"])
    labelled = 0
    for key, meta in samples.items():
        if key == built["left_out"]:
            want = empty_labels(key)
            assert "annotation_not_found" in meta["fixes"] and index[key]["fixes"] == meta["fixes"]
        else:
            want = {k: v for k, v in built["expected"][key].items() if k != "key"}
            assert "annotation_not_found" not in meta["fixes"], key
        for source in (meta, index[key]):
            got = {name: source[name] for name in ANNOTATION_FIELDS}
            assert got == want, key
        labelled += bool(meta["image_primary_label"])
    assert 0 < labelled < len(samples)


def read_parquet_index(dataset: Path) -> list[dict]:
    rows = []
    for path in sorted(dataset.glob("parquet/*/*.parquet")):
        rows.extend(pq.read_table(path).to_pylist())
    return rows


def test_card_charts_the_label_mix(built):
    dataset = built["dataset"]
    card = (dataset / "README.md").read_text()
    assert "## Labels" in card and "No labels" not in card
    samples = json_samples(dataset)
    groups = [g for g in ("commercial", "noncommercial", "other") if f"| {g} |" in card]
    per_label: dict[str, dict[str, int]] = {}
    per_source: dict[str, int] = {}
    for meta in samples.values():
        for label in meta["image_primary_label"] or ["(no label)"]:
            counts = per_label.setdefault(label, {})
            counts[meta["image_set"]] = counts.get(meta["image_set"], 0) + 1
        source = meta["image_label_source"] or "(none)"
        per_source[source] = per_source.get(source, 0) + 1
    for label, counts in per_label.items():
        cells = " | ".join(f"{counts.get(g, 0):,}" for g in groups)
        assert f"| {label} | {cells} | {sum(counts.values()):,} |" in card, label
    for source, n in per_source.items():
        assert re.search(rf"^\| {re.escape(source)} \| .* \| {n:,} \|$", card, flags=re.M), source
    for name in ("primary_labels", "label_sources"):
        assert f"(charts/{name}.png)" in card
        assert (dataset / "charts" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The same counts draw the same bytes; no labels at all: the card says so, no chart.
    labels = [((g, what, value), 3) for g in groups for what, value in LABEL_PAIRS]
    manifest = json.loads((dataset / "manifest.json").read_text())
    first = dataset_card.build_card(manifest, [], labels)
    assert first == dataset_card.build_card(manifest, [], labels)
    bare = dataset_card.build_card(manifest, [], [(("commercial", "source", ""), 4)])
    assert "No labels" in bare["README.md"].decode()
    assert not [path for path in bare if "label" in path]


@pytest.mark.parametrize(
    ("where", "wanted"),
    [
        ("'Microscopy' in image_primary_label", lambda a: "Microscopy" in a["image_primary_label"]),
        ("image_panel_type == 'multiple'", lambda a: a["image_panel_type"] == "multiple"),
        (
            "any_of(image_primary_label, ['Radiology', 'Genomics']) and image_label_score >= 1",
            lambda a: (
                bool({"Radiology", "Genomics"} & set(a["image_primary_label"]))
                and (a["image_label_score"] or 0) >= 1
            ),
        ),
        ("len(image_primary_label) == 0", lambda a: not a["image_primary_label"]),
    ],
)
def test_subset_on_labels(built, tmp_path, where, wanted):
    samples = json_samples(built["dataset"])
    expected = {key for key, meta in samples.items() if wanted(meta)}
    assert 0 < len(expected) < len(samples), where
    output = tmp_path / "subset"
    report = subset_pipeline.run(
        ["--input", str(built["dataset"]), "--output", str(output), "--where", where]
    )
    assert report["balanced"] and report["stages"]["subset"]["out"] == len(expected), report
    chosen = json_samples(output)
    assert set(chosen) == expected
    for key, meta in chosen.items():  # the subset keeps the labels
        assert {n: meta[n] for n in ANNOTATION_FIELDS} == {
            n: samples[key][n] for n in ANNOTATION_FIELDS
        }


def _shard(argv: list[str], capsys) -> tuple[int, str]:
    code = shard_pipeline.main(argv)
    return code, capsys.readouterr().err


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_refusals_are_one_line(built, tmp_path, capsys):
    argv = ["--input", str(built["extract"]), "--output", str(tmp_path / "dataset")]
    # No annotations/ folder.
    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = _shard([*argv, "--annotations", str(empty)], capsys)
    assert code == 1 and "has no annotations/ folder" in _one_line(err), err
    # A figure file without its annotations file.
    partial = tmp_path / "partial"
    shutil.copytree(built["ann"], partial)
    (partial / "annotations" / FILES[1]).unlink()
    code, err = _shard([*argv, "--annotations", str(partial)], capsys)
    line = _one_line(err)
    assert code == 1 and str(partial / "annotations" / FILES[1]) in line and "missing" in line
    # An annotations file without the label columns.
    wrong = tmp_path / "wrong"
    shutil.copytree(built["ann"], wrong)
    path = wrong / "annotations" / FILES[0]
    pq.write_table(pq.read_table(path).drop_columns(["image_primary_label"]), path)
    code, err = _shard([*argv, "--annotations", str(wrong)], capsys)
    line = _one_line(err)
    assert code == 1 and "lacks the annotation columns image_primary_label" in line, err
    assert not (tmp_path / "dataset").exists()


def test_annotations_are_part_of_the_run(built, tmp_path):
    """Another annotations folder into the same output is another run: refused without
    --overwrite; the same one resumes and keeps every shard."""
    output = tmp_path / "dataset"
    shutil.copytree(built["dataset"], output)
    other = tmp_path / "other_ann"
    shutil.copytree(built["ann"], other)
    argv = ["--input", str(built["extract"]), "--output", str(output), "--samples_per_shard", "5"]
    with pytest.raises(SystemExit, match="holds another run"):
        shard_pipeline.run([*argv, "--annotations", str(other)])
    with pytest.raises(SystemExit, match="holds another run"):
        shard_pipeline.run(argv)
    report = shard_pipeline.run([*argv, "--annotations", str(built["ann"])])
    assert report["mode"] == "resume" and report["balanced"], report
    assert report["stages"]["shard"]["shards_kept"] == len(list(output.glob("webdataset/*/*")))
