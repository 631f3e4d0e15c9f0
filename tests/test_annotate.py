"""annotate: clustering quality and reuse, caption concepts, label sources, the cluster
summary, dead letters and the report, on inputs these tests write themselves (embeddings
files with planted clusters, small figure files with captions and images)."""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import gcs_emulator, read_dead_letters, read_table
from PIL import Image

MODEL_ID = "pixels-v1"
DIM = 64
FILES = 2


# ---- inputs -----------------------------------------------------------------------------


def planted(clusters: int, per_cluster: int, seed: int = 0, dim: int = DIM):
    """Unit vectors around `clusters` random unit centres: (vectors, true cluster per row)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    truth = np.repeat(np.arange(clusters), per_cluster)
    rng.shuffle(truth)
    vectors = centres[truth] + 0.05 * rng.standard_normal((len(truth), dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32), truth


def jpeg(shade: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (shade, 255 - shade, 128)).save(out, "JPEG")
    return out.getvalue()


CAPTIONS = {
    0: "(A) Western blot of p53 in lysates. (B) Quantification of the immunoblot.",
    1: "Brain MRI of the patient, T2-weighted (A) and FLAIR (B).",
}


def write_inputs(
    root: Path,
    vectors,
    truth,
    captions=CAPTIONS,
    files=FILES,
    model=MODEL_ID,
    fingerprint: str | None = "pixels-v1",
):
    """EXTRACT_OUT (root/extract: figure files with key, caption, image) and EMB (root/emb:
    embeddings files of the same names, embed_model.json, whose weights_fingerprint is
    `fingerprint`, left out where None). Keys: S<row>."""
    extract = root / "extract" / "extract" / "figures"
    emb = root / "emb" / "embeddings"
    extract.mkdir(parents=True, exist_ok=True)
    emb.mkdir(parents=True, exist_ok=True)
    from transforms.records import embedding_schema

    keys = [f"S{i:05d}" for i in range(len(vectors))]
    for f in range(files):
        rows = list(range(f, len(vectors), files))
        name = f"part-{f:05d}-of-{files:05d}.parquet"
        pq.write_table(
            pa.table(
                {
                    "key": [keys[i] for i in rows],
                    "caption": [captions.get(int(truth[i]), f"Figure {i}.") for i in rows],
                    "image": [jpeg(int(truth[i]) * 30 % 256) for i in rows],
                }
            ),
            extract / name,
        )
        table = pa.Table.from_pylist(
            [
                {"key": keys[i], "model": model, "image_embedding": vectors[i].tolist()}
                for i in rows
            ],
            schema=embedding_schema(vectors.shape[1], caption=False),
        )
        pq.write_table(table, emb / name)
    info = {
        "version": 1,
        "model": "pixels",
        "model_id": model,
        "weights": "none",
        "random_weights": False,
        "dim": int(vectors.shape[1]),
        "caption": False,
        "input": str(root / "extract"),
    }
    if fingerprint is not None:
        info["weights_fingerprint"] = fingerprint
    (root / "emb" / "embed_model.json").write_text(json.dumps(info))
    return root / "extract", root / "emb", dict(zip(keys, truth.tolist(), strict=True))


def annotate(extract, emb, out, *more):
    from pipelines.annotate import run

    argv = ["--input", str(extract), "--embeddings", str(emb), "--output", str(out)]
    return run([*argv, "--log_level", "ERROR", *[str(m) for m in more]])


def annotations(out: Path) -> list[dict]:
    return read_table(out / "annotations")


# ---- clustering (pure) ------------------------------------------------------------------


def test_planted_clusters_found():
    from sklearn.metrics import adjusted_rand_score

    from transforms.annotate import clustering

    vectors, truth = planted(8, 150)
    model = clustering.train(vectors, 8, 25, 0, MODEL_ID)
    ids, distances = clustering.assign(model, vectors)
    assert adjusted_rand_score(truth, ids) >= 0.9
    assert distances.dtype == np.float32 and (distances >= 0).all()
    assert model.meta["pca_dims"] == 25 and model.meta["clusters"] == 8


def test_saved_model_gives_the_same_ids(tmp_path):
    from transforms.annotate import clustering

    vectors, _ = planted(6, 100)
    model = clustering.train(vectors, 6, 10, 0, MODEL_ID)
    clustering.save(str(tmp_path), model.to_bytes(), model.meta)
    data, meta = clustering.read_saved(str(tmp_path / clustering.MODEL_FILE))
    again = clustering.from_bytes(data, meta)
    fresh, _ = planted(6, 30, seed=1)  # new data: same vectors first, then others
    both = np.concatenate([vectors[:50], fresh])
    assert (
        clustering.assign(again, both)[0][:50] == clustering.assign(model, vectors[:50])[0]
    ).all()
    saved = json.loads((tmp_path / clustering.META_FILE).read_text())
    assert saved["sha256"] == hashlib.sha256(data).hexdigest()
    assert {saved["embedding_model"], saved["input_dim"], saved["clusters"]} == {MODEL_ID, DIM, 6}
    # Same sample, same bytes.
    assert clustering.train(vectors, 6, 10, 0, MODEL_ID).to_bytes() == model.to_bytes()


def test_clusters_capped_and_recorded(caplog):
    """(The launcher's warning: test_capped_clusters_said_in_report_and_model.)"""
    from transforms.annotate import clustering

    vectors, _ = planted(3, 10)
    with caplog.at_level("INFO"):
        model = clustering.train(vectors, 50, 25, 0, MODEL_ID)
    assert model.meta["clusters"] == 3 and model.meta["capped"] is True
    assert model.meta["clusters_requested"] == 50 and model.meta["pca_dims"] == 25
    assert "--clusters 50 capped to 3" in caplog.text


def test_model_for_other_embeddings_refused(tmp_path):
    from transforms.annotate import clustering

    vectors, _ = planted(2, 20)
    model = clustering.train(vectors, 2, 5, 0, MODEL_ID)
    with pytest.raises(clustering.ModelMismatch, match="open_clip:ViT-B-32"):
        clustering.check_compatible(model.meta, "open_clip:ViT-B-32", DIM, "m")
    with pytest.raises(clustering.ModelMismatch, match="dim 32"):
        clustering.check_compatible(model.meta, MODEL_ID, 32, "m")
    clustering.save(str(tmp_path), model.to_bytes(), model.meta)
    (tmp_path / clustering.MODEL_FILE).write_bytes(b"not faiss")
    with pytest.raises(ValueError, match="sha256"):
        clustering.read_saved(str(tmp_path))


# ---- captions and labels (pure) ---------------------------------------------------------


@pytest.mark.parametrize(
    "caption, expected",
    [
        ("Western blotting of lysates", ["immunoblot"]),
        ("Representative immunoblots", ["immunoblot"]),
        ("Axial CT and MRI of the abdomen", ["computerized tomography", "magnetic resonance"]),
        ("CT angiography of the neck", ["angiography"]),  # the longest phrase wins
        ("fMRI activation maps", ["functional magnetic resonance"]),
        ("Data are mean ± SEM of three experiments", []),  # SEM: standard error
        ("the act of knowing; ct and mri in lower case", []),  # abbreviations: as written
        ("H&E stained sections", ["light microscopy"]),
        ("IHC staining for Ki-67", ["immunohistochemistry"]),
        ("Kaplan–Meier curves and ROC curves", ["survival curve", "roc curve"]),
        ("Confocal images; flow cytometry", ["confocal microscopy", "flowcytometry"]),
        ("Chest X-ray on admission", ["x-ray radiography"]),
        ("Transabdominal ultrasound", ["ultrasound"]),
        ("Schematic of the proposed mechanism", ["diagram"]),
        ("Photograph of the field site", ["natural image"]),
        ("Table 1 lists the brain network", []),  # generic names are no evidence
    ],
)
def test_concepts_in_captions(caption, expected):
    from transforms.annotate.caption_concepts import default_finder

    assert default_finder().concepts(caption) == expected


@pytest.mark.parametrize(
    "caption, kind",
    [
        ("(A) Control. (B) Treated.", "multiple"),
        ("Sections (a-d) of the liver", "multiple"),
        ("Left panel: control", "multiple"),
        ("A, Axial view. B, Coronal view.", "multiple"),
        ("Overview of the study (see Methods)", "single"),
        ("Kaplan-Meier curve of overall survival", "single"),
        ("A. thaliana seedlings", "single"),
    ],
)
def test_panel_cues(caption, kind):
    from transforms.annotate.caption_concepts import panel_type

    assert panel_type(caption) == kind


def test_every_synonym_names_a_taxonomy_concept():
    from transforms.annotate.taxonomy import SYNONYMS, load_taxonomy, phrases

    taxonomy = load_taxonomy()
    assert set(SYNONYMS) <= set(taxonomy.global_of)
    assert len(taxonomy.concepts) == 16 and len(taxonomy.locals) == 119
    assert phrases(taxonomy)["MRI"] == "magnetic resonance"


def test_vote_and_choice():
    from transforms.annotate import labels
    from transforms.annotate.taxonomy import load_taxonomy

    taxonomy = load_taxonomy()
    counts = Counter({"immunoblot": 6, "bar plot": 4, "scatter plot": 1})
    label = labels.vote(counts, 10, 7, 10, taxonomy, labels.CAPTION_VOTE)
    assert label.local_class == ("immunoblot", "bar plot")
    assert label.global_class == ("Immuno Assays", "Plots and Charts")
    assert label.score == 0.6 and label.panel_type == "multiple"
    assert label.panel_subtype == "single panel"  # no image panel among them
    weak = labels.vote(Counter({"map": 1}), 20, 0, 20, taxonomy, labels.CAPTION_VOTE)
    assert labels.choose(None, [weak]) is None  # 5% of the voters: a suggestion only
    expert = labels.Label(labels.EXPERT, "single", "single panel", ("Maps",), ("map",), 1.0)
    assert labels.choose(expert, [label]) is expert
    assert labels.choose(None, [label]) is label


def test_zero_shot_on_synthetic_vectors():
    from transforms.annotate import labels
    from transforms.annotate.taxonomy import load_taxonomy

    taxonomy = load_taxonomy()
    concepts, prompts = labels.prompt_texts(taxonomy)
    assert len(prompts) == len(concepts) * len(labels.PROMPTS) and "ambiguous" not in concepts
    rng = np.random.default_rng(0)
    # A text tower stand-in: each concept's prompts near one direction of its own.
    directions = rng.standard_normal((len(concepts), 32)).astype(np.float32)
    texts = np.repeat(directions, len(labels.PROMPTS), axis=0)
    texts += 0.01 * rng.standard_normal(texts.shape).astype(np.float32)
    matrix = labels.concept_matrix(texts, concepts)
    assert np.allclose(np.linalg.norm(matrix, axis=1), 1, atol=1e-5)
    mri = concepts.index("magnetic resonance")
    images = directions[[mri] * 5 + [concepts.index("bar plot")]] + 0.1
    found = labels.nearest_concepts(images, matrix, concepts)
    assert found == ["magnetic resonance"] * 5 + ["bar plot"]
    label = labels.vote(Counter(found), len(found), 0, 0, taxonomy, labels.ZERO_SHOT)
    assert label.local_class == ("magnetic resonance",) and label.score == pytest.approx(5 / 6)
    assert labels.zero_shot_allowed({"caption": True, "random_weights": True})[0] is False
    assert labels.zero_shot_allowed({"caption": False, "random_weights": False})[0] is False
    assert labels.zero_shot_allowed({"caption": True, "random_weights": False})[0] is True


def test_expert_file_checked_entry_by_entry():
    from transforms.annotate import labels
    from transforms.annotate.taxonomy import load_taxonomy

    good = {
        "panel_type": "single",
        "panel_subtype": "single panel",
        "global_class": ["Microscopy"],
        "local_class": ["confocal microscopy"],
    }
    content = {
        "0": good,
        "1": {**good, "panel_type": "several"},
        "2": {**good, "local_class": ["hologram"]},
        "x": good,
        "3": "microscopy",
        "4": {k: v for k, v in good.items() if k != "panel_subtype"},
        "900": good,
    }
    parsed = labels.parse_expert_labels(json.dumps(content).encode(), load_taxonomy())
    assert sorted(parsed.labels) == [0, 900]
    assert sorted((k, r) for k, r, _ in parsed.bad) == [
        ("1", "label_bad_panel_type"),
        ("2", "label_unknown_concept"),
        ("3", "label_not_an_object"),
        ("4", "label_missing_field"),
        ("x", "label_bad_cluster_id"),
    ]
    assert parsed.split(10) == ({0: parsed.labels[0]}, [900])
    with pytest.raises(ValueError, match="not JSON"):
        labels.parse_expert_labels(b"{", load_taxonomy())
    # BIOMEDICA's own file, where present, reads without a bad entry.
    from conftest import SHARED

    theirs = SHARED / "biomedica" / "cluster_labels.json"
    if theirs.exists():
        assert labels.parse_expert_labels(theirs.read_bytes(), load_taxonomy()).bad == []


# ---- the pipeline -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def planted_inputs(tmp_path_factory):
    """Four planted clusters of 60; clusters 0 and 1 have western blot and MRI captions."""
    root = tmp_path_factory.mktemp("annotate")
    vectors, truth = planted(4, 60, seed=3)
    extract, emb, truth_of = write_inputs(root, vectors, truth)
    return extract, emb, truth_of, vectors, truth


@pytest.fixture(scope="module")
def annotated(planted_inputs, tmp_path_factory):
    extract, emb, *_ = planted_inputs
    out = tmp_path_factory.mktemp("ann") / "out"
    result = annotate(extract, emb, out, "--clusters", 4, "--gallery_members", 3)
    return out, result


def test_pipeline_labels_clusters_by_caption_vote(planted_inputs, annotated):
    from sklearn.metrics import adjusted_rand_score

    _, _, truth_of, _, _ = planted_inputs
    out, result = annotated
    rows = annotations(out)
    assert len(rows) == len(truth_of) == 240
    assert (
        adjusted_rand_score(
            [truth_of[r["key"]] for r in rows], [r["image_cluster_id"] for r in rows]
        )
        >= 0.9
    )
    by_truth = {}
    for r in rows:
        by_truth.setdefault(truth_of[r["key"]], []).append(r)
    blot, mri = by_truth[0][0], by_truth[1][0]
    assert blot["image_primary_label"] == ["Immuno Assays"]
    assert blot["image_secondary_label"] == ["immunoblot"]
    assert mri["image_primary_label"] == ["Clinical Imaging"]
    assert mri["image_secondary_label"][0] == "magnetic resonance"
    for r in by_truth[0] + by_truth[1]:
        assert r["image_label_source"] == "caption_vote" and r["image_label_score"] == 1.0
        assert r["image_label_id"] == r["image_cluster_id"]
        assert r["image_panel_type"] == "multiple"
    assert blot["image_panel_subtype"] == "single panel"
    assert mri["image_panel_subtype"] == "multiple panels: images"
    for r in by_truth[2] + by_truth[3]:  # captions naming no concept: no label
        assert r["image_label_source"] is None and r["image_label_id"] is None
        assert r["image_primary_label"] == [] and r["image_cluster_distance"] >= 0
    assert result["balanced"] is True
    assert result["stages"]["annotate"]["in"] == result["stages"]["annotate"]["out"] == 240
    assert result["stages"]["clustering"]["clusters"] == 4
    assert "zero-shot skipped" in result["zero_shot"]


def test_annotation_files_mirror_embedding_files(planted_inputs, annotated):
    from transforms.records import ANNOTATION_SCHEMA

    _, emb, *_ = planted_inputs
    out, _ = annotated
    for f in sorted((emb / "embeddings").glob("*.parquet")):
        ann = pq.read_table(out / "annotations" / f.name)
        assert ann.schema.equals(ANNOTATION_SCHEMA)
        assert ann.column("key").to_pylist() == pq.read_table(f).column("key").to_pylist()


def test_summary_json_parquet_and_thumbnails(planted_inputs, annotated):
    out, _ = annotated
    summary = json.loads((out / "clusters.json").read_text())
    assert summary["version"] == 1 and summary["clusters"] == 4
    assert summary["cluster_model"] == "cluster_model-v1.faiss" and summary["pca_dims"] == 25
    assert summary["embedding_model"] == MODEL_ID and summary["random_weights"] is False
    assert summary["panel_types"] == ["single", "multiple"]
    assert "Immuno Assays" in summary["taxonomy"]
    assert [c["cluster_id"] for c in summary["cluster_list"]] == [0, 1, 2, 3]
    assert sum(c["size"] for c in summary["cluster_list"]) == 240
    for cluster in summary["cluster_list"]:
        nearest = cluster["nearest"]
        assert len(nearest) == 3
        assert nearest == sorted(nearest, key=lambda m: (m["distance"], m["key"]))
        for member in nearest:
            assert (out / "gallery" / member["thumbnail"]).is_file()
        assert cluster["expert"] is None
    blot = next(c for c in summary["cluster_list"] if c["applied"]["local_class"] == ["immunoblot"])
    assert blot["top_terms"][0] == {"term": "immunoblot", "count": 60}
    assert blot["suggested"][0]["source"] == "caption_vote"
    assert blot["nearest"][0]["terms"] == ["immunoblot"]
    assert blot["applied"]["label_id"] == blot["cluster_id"]
    table = pq.read_table(out / "clusters.parquet").to_pylist()
    assert [r["cluster_id"] for r in table] == [0, 1, 2, 3]
    assert table[blot["cluster_id"]]["secondary_label"] == ["immunoblot"]
    assert (out / "cluster_model-v1.faiss").is_file() and (out / "cluster_model-v1.json").is_file()


def test_same_inputs_same_bytes(planted_inputs, annotated, tmp_path):
    extract, emb, *_ = planted_inputs
    first, _ = annotated
    again = tmp_path / "again"
    annotate(extract, emb, again, "--clusters", 4, "--gallery_members", 3)
    for part in [
        "cluster_model-v1.faiss",
        "cluster_model-v1.json",
        "clusters.json",
        "clusters.parquet",
    ]:
        assert (first / part).read_bytes() == (again / part).read_bytes(), part
    for f in (first / "annotations").glob("*.parquet"):
        assert f.read_bytes() == (again / "annotations" / f.name).read_bytes()


def test_reused_model_keeps_ids_on_new_data(planted_inputs, annotated, tmp_path):
    """Next year's run: some samples are new, the old ones keep their cluster ids."""
    _, _, truth_of, vectors, truth = planted_inputs
    out, _ = annotated
    before = {r["key"]: r["image_cluster_id"] for r in annotations(out)}
    fresh, fresh_truth = planted(4, 15, seed=3)  # same centres, new samples
    both = np.concatenate([vectors[:100], fresh])
    extract, emb, _ = write_inputs(tmp_path, both, np.concatenate([truth[:100], fresh_truth]))
    later = tmp_path / "later"
    result = annotate(extract, emb, later, "--cluster_model", out / "cluster_model-v1.faiss")
    after = {r["key"]: r["image_cluster_id"] for r in annotations(later)}
    assert all(after[f"S{i:05d}"] == before[f"S{i:05d}"] for i in range(100))
    assert result["stages"]["clustering"]["reused_model"] == 1
    assert (later / "cluster_model-v1.faiss").read_bytes() == (
        out / "cluster_model-v1.faiss"
    ).read_bytes()


def test_model_reused_from_gcs(planted_inputs, annotated, tmp_path, no_credential_retries):
    extract, emb, *_ = planted_inputs
    out, _ = annotated
    with gcs_emulator("models") as client:
        bucket = client.bucket("models")
        for name in ("cluster_model-v1.faiss", "cluster_model-v1.json"):
            bucket.blob(f"2026/{name}").upload_from_string((out / name).read_bytes())
        later = tmp_path / "from-gcs"
        annotate(extract, emb, later, "--cluster_model", "gs://models/2026/cluster_model-v1.faiss")
    assert [r["image_cluster_id"] for r in annotations(later)] == [
        r["image_cluster_id"] for r in annotations(out)
    ]


def test_expert_labels_reach_every_member(planted_inputs, annotated, tmp_path):
    extract, emb, *_ = planted_inputs
    out, _ = annotated
    good = {
        "panel_type": "single",
        "panel_subtype": "single panel",
        "global_class": ["Microscopy"],
        "local_class": ["confocal microscopy"],
    }
    labels_file = tmp_path / "cluster_labels.json"
    labels_file.write_text(json.dumps({"2": good, "7": good, "3": {**good, "panel_type": "x"}}))
    later = tmp_path / "expert"
    result = annotate(extract, emb, later, "--cluster_model", out, "--cluster_labels", labels_file)
    rows = [r for r in annotations(later) if r["image_cluster_id"] == 2]
    assert rows and all(
        r["image_label_source"] == "expert"
        and r["image_label_score"] == 1.0
        and r["image_label_id"] == 2
        and r["image_secondary_label"] == ["confocal microscopy"]
        and r["image_panel_type"] == "single"
        for r in rows
    )
    stage = result["stages"]["cluster_labels"]
    assert stage == {**stage, "in": 3, "out": 1, "outside_clustering": 1, "dead_letter": 1}
    assert stage["balanced"] and result["balanced"]
    dead = [d for d in read_dead_letters(later) if d["stage"] == "cluster_labels"]
    assert [(d["key"], d["reason"]) for d in dead] == [("3", "label_bad_panel_type")]
    summary = json.loads((later / "clusters.json").read_text())
    assert summary["cluster_list"][2]["expert"] == good
    assert summary["cluster_list"][2]["applied"]["source"] == "expert"


def test_bad_embedding_rows_are_dead_letters(tmp_path):
    from transforms.records import embedding_schema

    vectors, truth = planted(2, 30, seed=5)
    extract, emb, _ = write_inputs(tmp_path, vectors, truth, files=1)
    name = "part-00000-of-00001.parquet"
    rows = pq.read_table(emb / "embeddings" / name).to_pylist()
    rows[0]["image_embedding"] = [float("nan")] * DIM
    rows[1]["model"] = "timm:resnet18"
    rows[2]["image_embedding"] = [0.0] * DIM  # all zero: no direction at all
    rows[3]["image_embedding"] = (3 * vectors[3]).tolist()  # not normalised
    rows.append(dict(rows[4]))  # the same key twice in one file
    pq.write_table(
        pa.Table.from_pylist(rows, schema=embedding_schema(DIM, False)), emb / "embeddings" / name
    )
    (emb / "embeddings" / "part-99999-of-99999.parquet").write_bytes(b"PAR1 broken")
    wrong = pa.Table.from_pylist(
        [{"key": "SHORT", "model": MODEL_ID, "image_embedding": [0.5] * 8}],
        schema=embedding_schema(8, False),
    )
    pq.write_table(wrong, emb / "embeddings" / "part-00001-of-00001.parquet")
    figures = extract / "extract" / "figures"
    for other, key in (
        ("part-00001-of-00001.parquet", "SHORT"),
        ("part-99999-of-99999.parquet", "X"),
    ):
        pq.write_table(
            pa.table({"key": [key], "caption": [""], "image": [jpeg(9)]}), figures / other
        )
    out = tmp_path / "out"
    result = annotate(extract, emb, out, "--clusters", 2)
    reasons = sorted((d["key"], d["reason"]) for d in read_dead_letters(out))
    assert reasons == [
        ("S00000", "embedding_not_finite"),
        ("S00001", "embedding_model_mismatch"),
        ("S00002", "embedding_not_unit"),
        ("S00003", "embedding_not_unit"),
        ("S00004", "embedding_duplicate_key"),
        ("SHORT", "embedding_wrong_dim"),
        ("part-99999-of-99999.parquet", "embeddings_unreadable"),
    ]
    stage = result["stages"]["annotate"]
    assert stage["in"] == 60 + 1 + 1 + 1 and stage["out"] == 56 and stage["dead_letter"] == 7
    assert "no_figure_row" not in stage and result["balanced"] is True
    keys = [r["key"] for r in annotations(out)]
    assert keys.count("S00004") == 1 and not {"S00000", "S00002", "S00003"} & set(keys)


def test_capped_clusters_said_in_report_and_model(planted_inputs, tmp_path, capsys):
    extract, emb, *_ = planted_inputs
    out = tmp_path / "out"
    result = annotate(extract, emb, out, "--clusters", 500, "--cluster_sample", 100)
    assert "--clusters 500 capped to 10" in capsys.readouterr().err
    assert result["stages"]["clustering"]["clusters"] == 10
    assert result["stages"]["clustering"]["capped"] == 1
    meta = json.loads((out / "cluster_model-v1.json").read_text())
    assert meta["clusters"] == 10 and meta["clusters_requested"] == 500 and meta["capped"]
    assert meta["sample_size"] == 100


# ---- the command line -------------------------------------------------------------------


def cli(argv, capsys):
    from pipelines import cli as entry

    try:
        code = entry.main(["annotate", *[str(a) for a in argv]])
    except SystemExit as stop:
        code = stop.code
    return code, capsys.readouterr().err


def test_unknown_flag_and_bad_values_one_line(planted_inputs, tmp_path, capsys):
    extract, emb, *_ = planted_inputs
    base = ["--input", extract, "--embeddings", emb, "--output", tmp_path / "o"]
    code, err = cli([*base, "--clustres", "4"], capsys)
    assert code == 2 and "did you mean --clusters" in err and len(err.strip().splitlines()) == 1
    code, err = cli([*base, "--clusters", "0"], capsys)
    assert code == 2 and "--clusters must be at least 1" in err
    code, err = cli(["--input", extract, "--output", tmp_path / "o"], capsys)
    assert code == 2 and "missing --embeddings" in err
    code, err = cli([*base[:4], "--output", emb / "inside"], capsys)
    assert code == 2 and "lies inside --embeddings" in err
    assert not (tmp_path / "o").exists()


def test_model_for_other_embeddings_one_line(planted_inputs, annotated, tmp_path, capsys):
    out, _ = annotated
    vectors, truth = planted(2, 20, dim=32)
    extract, emb, _ = write_inputs(tmp_path, vectors, truth, files=1)
    argv = ["--input", extract, "--embeddings", emb, "--output", tmp_path / "o"]
    code, err = cli([*argv, "--cluster_model", out / "cluster_model-v1.faiss"], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "trained on pixels-v1 embeddings of dim 64" in err and "dim 32" in err
    assert not (tmp_path / "o").exists()
    code, err = cli([*argv, "--cluster_labels", tmp_path / "none.json"], capsys)
    assert code == 1 and "--cluster_labels" in err and len(err.strip().splitlines()) == 1


def test_zero_shot_labels_clusters_captions_leave_open(planted_inputs, tmp_path, monkeypatch):
    """A model with a real text tower (its prompt embeddings stood in for here): clusters
    whose captions name nothing get the zero-shot vote; caption votes still come first."""
    from transforms.annotate import labels
    from transforms.annotate.taxonomy import load_taxonomy

    extract, emb, truth_of, vectors, truth = planted_inputs
    info = json.loads((emb / "embed_model.json").read_text())
    text_tower = tmp_path / "emb"
    (text_tower / "embeddings").mkdir(parents=True)
    for f in (emb / "embeddings").glob("*.parquet"):
        (text_tower / "embeddings" / f.name).write_bytes(f.read_bytes())
    checkpoint = tmp_path / "w.pt"
    checkpoint.write_bytes(b"weights")  # annotate checks it is there before work
    info.update(caption=True, random_weights=False, model="open_clip:test", weights=str(checkpoint))
    (text_tower / "embed_model.json").write_text(json.dumps(info))
    concepts, _ = labels.prompt_texts(load_taxonomy())
    rng = np.random.default_rng(1)
    matrix = rng.standard_normal((len(concepts), DIM)).astype(np.float32)
    for planted_cluster, concept in ((2, "bar plot"), (3, "pie chart")):
        centre = vectors[truth == planted_cluster].mean(axis=0)
        matrix[concepts.index(concept)] = 10 * centre / np.linalg.norm(centre)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    calls = []

    def prompt_matrix(model, weights, taxonomy):
        calls.append((model, weights))
        return concepts, matrix

    monkeypatch.setattr(labels, "prompt_matrix", prompt_matrix)
    out = tmp_path / "out"
    result = annotate(extract, text_tower, out, "--clusters", 4)
    assert calls == [("open_clip:test", str(checkpoint))]
    assert result["zero_shot"].startswith("zero-shot:")
    by_truth = {}
    for r in annotations(out):
        by_truth.setdefault(truth_of[r["key"]], set()).add(
            (r["image_label_source"], tuple(r["image_secondary_label"]), r["image_label_score"])
        )
    assert by_truth[2] == {("zero_shot", ("bar plot",), 1.0)}
    assert by_truth[3] == {("zero_shot", ("pie chart",), 1.0)}
    assert {source for source, _, _ in by_truth[0]} == {"caption_vote"}
    summary = json.loads((out / "clusters.json").read_text())
    sources = [[s["source"] for s in c["suggested"]] for c in summary["cluster_list"]]
    assert sorted(sources) == [["caption_vote", "zero_shot"]] * 2 + [["zero_shot"]] * 2


def test_second_run_into_an_output_needs_overwrite(planted_inputs, annotated, capsys):
    extract, emb, *_ = planted_inputs
    out, _ = annotated
    argv = ["--input", extract, "--embeddings", emb, "--output", out, "--clusters", 4]
    code, err = cli(argv, capsys)
    assert code == 1 and "pass --overwrite" in err and len(err.strip().splitlines()) == 1
    assert (out / "clusters.json").is_file()


# ---- review fixes: votes, label files, inputs, weights, empty runs, report ----------------


def test_vote_names_the_global_concept_most_members_name():
    """A plot cluster whose members each name one kind of plot is "Plots and Charts", though
    "immunohistochemistry" is its most frequent single term; the local concepts are voted
    within the winning global concept."""
    from transforms.annotate import labels
    from transforms.annotate.taxonomy import load_taxonomy

    taxonomy = load_taxonomy()
    local = Counter(
        {
            "bar plot": 3,
            "line plot": 3,
            "scatter plot": 3,
            "roc curve": 3,
            "immunohistochemistry": 4,
        }
    )
    by_global = Counter({"Plots and Charts": 12, "Immuno Assays": 4})
    label = labels.vote(local, 16, 0, 16, taxonomy, labels.CAPTION_VOTE, by_global)
    assert label.global_class == ("Plots and Charts",)
    assert label.local_class == ("bar plot", "line plot", "roc curve")  # ties by name, at most 3
    assert label.score == 0.75
    # A member naming two plots votes once for their global concept.
    mixed = Counter({"bar plot": 2, "line plot": 2, "immunoblot": 3})
    label = labels.vote(
        mixed,
        4,
        0,
        4,
        taxonomy,
        labels.CAPTION_VOTE,
        Counter({"Plots and Charts": 2, "Immuno Assays": 3}),
    )
    assert label.global_class == ("Immuno Assays", "Plots and Charts")
    assert label.local_class == ("immunoblot", "bar plot") and label.score == 0.75


def test_caption_stats_count_a_member_once_per_global_concept():
    from transforms.annotate import summary
    from transforms.annotate.taxonomy import load_taxonomy

    stats = summary.ClusterStats()
    plots = ("Plots and Charts",)
    stats.add("a", 0.1, "bar and line plots", ["bar plot", "line plot"], False, 4, None, plots)
    stats.add("b", 0.2, "scatter plot", ["scatter plot"], False, 4, None, plots)
    stats.add("c", 0.3, "IHC", ["immunohistochemistry"], False, 4, None, ("Immuno Assays",))
    merged = summary.merge([stats, summary.ClusterStats()], 4)
    assert merged.global_concepts == Counter({"Plots and Charts": 2, "Immuno Assays": 1})
    (label,) = summary.suggestions(merged, load_taxonomy())
    assert label.global_class[0] == "Plots and Charts" and label.score == pytest.approx(2 / 3)


def test_expert_file_repeating_a_cluster_id_keeps_the_first():
    from transforms.annotate import labels
    from transforms.annotate.taxonomy import load_taxonomy

    def entry(concept: str) -> str:
        return json.dumps(
            {
                "panel_type": "single",
                "panel_subtype": "single panel",
                "global_class": [concept],
                "local_class": [],
            }
        )

    # json.dumps cannot write a name twice: the file is put together by hand.
    text = f'{{"1": {entry("Microscopy")}, "1": {entry("Maps")}, "01": {entry("Maps")}}}'
    parsed = labels.parse_expert_labels(text.encode(), load_taxonomy())
    assert parsed.labels[1].global_class == ("Microscopy",)
    assert [(k, r) for k, r, _ in parsed.bad] == [
        ("1", "label_duplicate_cluster_id"),
        ("01", "label_duplicate_cluster_id"),
    ]


def test_model_records_and_checks_the_embedding_weights(planted_inputs, annotated):
    from transforms.annotate import clustering

    out, _ = annotated
    meta = json.loads((out / "cluster_model-v1.json").read_text())
    assert meta["embedding_weights"] == "pixels-v1"
    clustering.check_compatible(meta, MODEL_ID, DIM, "m", "pixels-v1")
    for other in ("sha256:00ff", None):
        with pytest.raises(clustering.ModelMismatch, match="weights"):
            clustering.check_compatible(meta, MODEL_ID, DIM, "m", other)
    older = {**meta, "embedding_weights": None}
    clustering.check_compatible(older, MODEL_ID, DIM, "m", None)  # both older: no way to tell
    with pytest.raises(clustering.ModelMismatch, match="no weights fingerprint"):
        clustering.check_compatible(older, MODEL_ID, DIM, "m", "pixels-v1")


def test_model_of_other_weights_refused_in_one_line(planted_inputs, annotated, tmp_path, capsys):
    _, _, _, vectors, truth = planted_inputs
    out, _ = annotated
    model = out / "cluster_model-v1.faiss"
    for fingerprint in ("sha256:" + "ab" * 32, None):
        root = tmp_path / str(fingerprint)[:6]
        extract, emb, _ = write_inputs(root, vectors, truth, fingerprint=fingerprint)
        argv = ["--input", extract, "--embeddings", emb, "--output", root / "o"]
        code, err = cli([*argv, "--cluster_model", model], capsys)
        assert code == 1 and len(err.strip().splitlines()) == 1, err
        assert "pixels-v1" in err and (fingerprint or "no weights fingerprint") in err
        assert not (root / "o").exists()


def test_another_or_missing_extract_refused_before_work(planted_inputs, tmp_path, capsys):
    extract, emb, _, vectors, truth = planted_inputs
    argv = ["--embeddings", emb, "--output", tmp_path / "o"]
    code, err = cli(["--input", tmp_path / "nope", *argv], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "part-00000-of-00002.parquet is missing" in err and "(and 1 more)" in err
    # Another extract with the same file names: its keys are not the embedded ones.
    other, _, _ = write_inputs(tmp_path / "other", vectors[:50], truth[:50])
    code, err = cli(["--input", other, *argv], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "190 embedded samples are not in the figure files" in err and "S00050" in err
    assert not (tmp_path / "o").exists()


def _empty_embed_output(root: Path, with_file: bool) -> tuple[Path, Path]:
    """What `embed --allow_empty` leaves from an empty extract: embed_model.json, and no
    embeddings file (or one with no rows)."""
    from transforms.records import embedding_schema

    extract, emb, _ = write_inputs(root, *planted(1, 10))
    for f in (emb / "embeddings").glob("*.parquet"):
        f.unlink()
    for f in (extract / "extract" / "figures").glob("*.parquet"):
        f.unlink()
    if with_file:
        name = "part-00000-of-00001.parquet"
        pq.write_table(embedding_schema(DIM, False).empty_table(), emb / "embeddings" / name)
        empty = pa.table({"key": pa.array([], pa.string()), "caption": pa.array([], pa.string())})
        pq.write_table(empty, extract / "extract" / "figures" / name)
    return extract, emb


@pytest.mark.parametrize("with_file", [False, True])
def test_empty_embed_output_refused_unless_allow_empty(tmp_path, capsys, with_file):
    extract, emb = _empty_embed_output(tmp_path, with_file)
    argv = ["--input", extract, "--embeddings", emb, "--output", tmp_path / "o"]
    code, err = cli(argv, capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "embed --allow_empty" in err and "pass --allow_empty" in err
    assert not (tmp_path / "o").exists()
    code, err = cli([*argv, "--allow_empty", "--log_level", "ERROR"], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "o" / "run_report.json").read_text())
    assert report["balanced"] and report["stages"]["annotate"]["in"] == 0
    written = sorted(p.name for p in (tmp_path / "o" / "annotations").glob("*.parquet"))
    assert written == (["part-00000-of-00001.parquet"] if with_file else [])
    assert not (tmp_path / "o" / "cluster_model-v1.faiss").exists()


def test_no_usable_row_fails_with_its_dead_letters(tmp_path, capsys):
    vectors, truth = planted(2, 10)
    extract, emb, _ = write_inputs(tmp_path, vectors, truth, model="timm:other")
    info = json.loads((emb / "embed_model.json").read_text())
    (emb / "embed_model.json").write_text(json.dumps({**info, "model_id": MODEL_ID}))
    argv = ["--input", extract, "--embeddings", emb, "--output", tmp_path / "o"]
    code, err = cli([*argv, "--log_level", "ERROR"], capsys)
    assert code == 1 and "nothing annotated" in err
    reasons = Counter(d["reason"] for d in read_dead_letters(tmp_path / "o"))
    assert reasons == {"embedding_model_mismatch": 20}
    report = json.loads((tmp_path / "o" / "run_report.json").read_text())
    assert report["balanced"] and report["stages"]["annotate"]["dead_letter"] == 20
    code, err = cli([*argv, "--overwrite", "--allow_empty", "--log_level", "ERROR"], capsys)
    assert code == 0, err


def test_missing_zero_shot_weights_refused_before_work(planted_inputs, tmp_path, capsys):
    extract, emb, *_ = planted_inputs
    text_tower = tmp_path / "emb"
    (text_tower / "embeddings").mkdir(parents=True)
    for f in (emb / "embeddings").glob("*.parquet"):
        (text_tower / "embeddings" / f.name).write_bytes(f.read_bytes())
    info = json.loads((emb / "embed_model.json").read_text())
    gone = tmp_path / "gone.pt"
    info.update(caption=True, random_weights=False, model="open_clip:test", weights=str(gone))
    (text_tower / "embed_model.json").write_text(json.dumps(info))
    argv = ["--input", extract, "--embeddings", text_tower, "--output", tmp_path / "o"]
    code, err = cli(argv, capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert f"embed_model.json's weights '{gone}': no such file" in err and "--weights" not in err
    assert not (tmp_path / "o").exists()


def test_report_stages_mean_something(planted_inputs, annotated, tmp_path):
    extract, emb, *_ = planted_inputs
    out, result = annotated
    assert result["balanced"]
    gallery, clustering = result["stages"]["gallery"], result["stages"]["clustering"]
    assert gallery["in"] == gallery["out"] == 4 * 3 and gallery["balanced"]
    assert clustering["in"] == clustering["out"] == 240 and clustering["trained_on"] == 240
    assert "reused_model" not in clustering
    later = tmp_path / "reused"
    again = annotate(extract, emb, later, "--cluster_model", out)
    reused = again["stages"]["clustering"]
    assert reused["in"] == reused["out"] == 240 and reused["reused_model"] == 1
    assert "trained_on" not in reused and again["balanced"]


def test_thumbnail_too_large_is_a_dead_letter_sample_kept(planted_inputs, tmp_path, monkeypatch):
    from transforms.annotate import steps
    from transforms.annotate.thumbnails import make_thumbnail

    # The real check, with a bound every figure here exceeds.
    monkeypatch.setattr(steps, "make_thumbnail", lambda image: make_thumbnail(image, max_pixels=99))
    extract, emb, truth_of, *_ = planted_inputs
    out = tmp_path / "out"
    result = annotate(extract, emb, out, "--clusters", 4, "--gallery_members", 2)
    gallery = result["stages"]["gallery"]
    assert gallery["in"] == gallery["dead_letter"] == 8 and result["balanced"]
    assert gallery["dead_letter_by_reason"] == {"image_too_large": 8}
    dead = read_dead_letters(out)
    assert {d["stage"] for d in dead} == {"gallery"} and len(dead) == 8
    assert sorted(r["key"] for r in annotations(out)) == sorted(truth_of)
    assert not (out / "gallery" / "thumbs").exists()


def test_help_shows_the_seed_default(capsys):
    from pipelines import cli as entry

    with pytest.raises(SystemExit) as stop:
        entry.main(["annotate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert stop.value.code in (0, None)
    assert "seed of the training sample and of k-means (default: 0)" in text


def test_keys_the_launcher_did_not_check_still_fail_the_run(
    planted_inputs, tmp_path, capsys, monkeypatch
):
    """The launcher checks the keys of a few files only (a Dataflow launcher cannot read
    thousands); the job finds the rest, annotates them without captions, and fails."""
    import shutil

    import pyarrow.parquet as pq

    from pipelines import annotate as job

    extract, emb, *_ = planted_inputs
    copy = tmp_path / "extract"
    shutil.copytree(extract, copy)
    second = sorted((copy / "extract" / "figures").glob("*.parquet"))[1]
    table = pq.read_table(second)
    pq.write_table(table.slice(10), second)  # its first ten figures are gone
    monkeypatch.setattr(job, "KEY_CHECK_FILES", 1)  # the launcher reads the first file only
    code, err = cli(["--input", copy, "--embeddings", emb, "--output", tmp_path / "o"], capsys)
    assert code == 1 and err.strip().splitlines()[-1].endswith(
        "10 embedded samples are not in the figure files of --input (annotated without "
        "caption votes or thumbnails); pass as --input the extract output that embed read"
    )
    written = json.loads((tmp_path / "o" / "run_report.json").read_text())
    assert written["stages"]["annotate"]["no_figure_row"] == 10 and written["balanced"]
