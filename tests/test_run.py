"""`biomedica run`: the whole pipeline in one command, each stage's output under --output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import json_samples

from pipelines import run as run_all
from pipelines import shard
from pipelines.runner import main_of
from transforms.pmc.sample_corpus import generate_corpus

QUIET = ["--log_level", "ERROR"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("run") / "corpus"
    generate_corpus(str(root), 10, seed=7, image_side=128)
    return root


@pytest.fixture(scope="module")
def whole(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "out"
    argv = ["--source", str(corpus), "--output", str(out), *QUIET]
    argv += ["--medline", str(corpus / "pubmed" / "*.xml.gz"), "--clusters", "2"]
    argv += ["--samples_per_shard", "20"]
    return out, run_all.run(argv)


def test_every_stage_runs_and_writes_under_the_output(whole):
    out, report = whole
    assert report["balanced"] and "error" not in report
    assert list(report["stages"]) == ["extract", "enrich", "embed", "annotate", "shard", "index"]
    for stage, folder in run_all.FOLDERS.items():
        own = json.loads((out / folder / "run_report.json").read_text())
        assert own["balanced"] and own["pipeline"] == stage
        assert report["stages"][stage]["output"] == str(out / folder)
    assert json.loads((out / "run_report.json").read_text()) == report
    assert report["dataset"] == str(out / "dataset" / "webdataset")
    assert Path(report["card"]).is_file() and Path(report["gallery"]).is_file()
    assert report["index"] == str(out / "index")
    index = json.loads((out / "index" / "manifest.json").read_text())
    assert index["dataset"] == str(out / "dataset") and index["embeddings"] == str(out / "embed")
    dataset = json.loads((out / "dataset" / "manifest.json").read_text())
    assert index["samples"] == dataset["totals"]["samples"] > 0
    # Stages were wired to each other: enrich read extract, embed/annotate/shard read enrich.
    enrich = json.loads((out / "enrich" / "run_report.json").read_text())
    assert enrich["input"] == str(out / "extract")
    annotate = json.loads((out / "annotate" / "run_report.json").read_text())
    assert annotate["input"] == str(out / "enrich")


def test_samples_carry_pubmed_fields_and_labels(whole):
    out, _ = whole
    samples = json_samples(out / "dataset")
    assert samples
    statuses = {s["article_pubmed_status"] for s in samples.values()}
    assert "matched" in statuses
    matched = [s for s in samples.values() if s["article_pubmed_status"] == "matched"]
    assert matched and sum(bool(s["article_mesh_terms"]) for s in matched) > len(matched) // 2
    assert all(s["image_cluster_id"] is not None for s in samples.values())


def test_a_stage_reruns_alone_on_the_run_s_folders(whole, tmp_path):
    out, _ = whole
    again = tmp_path / "dataset"
    report = shard.run(
        [
            "--input",
            str(out / "enrich"),
            "--annotations",
            str(out / "annotate"),
            "--output",
            str(again),
            "--samples_per_shard",
            "20",
            *QUIET,
        ]
    )
    assert report["balanced"]
    first = json.loads((out / "dataset" / "manifest.json").read_text())
    second = json.loads((again / "manifest.json").read_text())
    assert [(s["path"], s["sha256"]) for s in first["shards"]] == [
        (s["path"], s["sha256"]) for s in second["shards"]
    ]


def test_flags_go_to_the_stages_that_define_them(corpus, tmp_path):
    out = tmp_path / "out"
    argv = ["--source", str(corpus), "--output", str(out), "--medline", "m/*.xml.gz"]
    argv += ["--clusters", "8", "--max_pixels", "1000000", "--direct_num_workers", "2"]
    argv += ["--samples_per_shard=50", "--batch_size", "4", "--overwrite"]
    _, steps, _ = run_all.plan(argv)
    got = dict(steps)
    assert list(got) == ["extract", "enrich", "embed", "annotate", "shard", "index"]

    def has(stage, *tokens):
        text = " ".join(got[stage])
        return all(t in text for t in tokens)

    assert has("extract", f"--source {corpus}", "--max_pixels 1000000", f"--output {out}/extract")
    assert not has("extract", "--clusters") and not has("extract", "--medline")
    assert has("enrich", "--medline m/*.xml.gz", f"--input {out}/extract")
    assert has("embed", "--batch_size 4", "--max_pixels 1000000", f"--input {out}/enrich")
    assert has("annotate", "--clusters 8", f"--embeddings {out}/embed")
    assert has("shard", "--samples_per_shard=50", f"--annotations {out}/annotate")
    assert has("index", f"--dataset {out}/dataset", f"--embeddings {out}/embed")
    assert not has("index", "--clusters") and not has("shard", "--recall_target")
    for stage in got:  # Beam's flags and the shared ones: every stage
        assert has(stage, "--direct_num_workers 2", "--overwrite"), stage
        assert "--stages" not in got[stage]


def test_without_pubmed_flags_enrich_is_skipped(corpus, tmp_path):
    out = tmp_path / "out"
    _, steps, _ = run_all.plan(["--source", str(corpus), "--output", str(out)])
    got = dict(steps)
    assert "enrich" not in got
    assert f"--input {out}/extract" in " ".join(got["shard"])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--embeddings", "x"], "--embeddings is set by run itself"),
        (["--stages", "extract,polish"], "--stages: polish"),
        (["--ncbi_email", "a@b.org"], "enrich runs only with --medline or --eutils"),
        (["--clusterz", "3"], "did you mean --clusters"),
        (["--where", "x"], "--where is a flag of biomedica subset"),
    ],
)
def test_usage_errors_before_any_work(corpus, tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    code = main_of(run_all.run, "run")(["--source", str(corpus), "--output", str(out), *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_help_lists_every_stage_s_flags(capsys):
    with pytest.raises(SystemExit):
        run_all.run(["--help"])
    shown = capsys.readouterr().out
    for flag in ("--source", "--medline", "--model", "--clusters", "--samples_per_shard"):
        assert flag in shown
    assert "--stages" in shown


# ---- incremental: --since an earlier run ------------------------------------------------------


def _stamp(paths, when: str) -> None:
    import os
    from datetime import datetime

    moment = datetime.fromisoformat(when).timestamp()
    for path in paths:
        for found in [path, *path.rglob("*")] if path.is_dir() else [path]:
            os.utime(found, (moment, moment))


def test_since_takes_only_what_is_new_and_lists_what_it_replaces(tmp_path):
    import shutil

    import pyarrow.parquet as pq

    corpus = tmp_path / "corpus"
    generate_corpus(str(corpus), 8, seed=11, image_side=96)
    _stamp([corpus], "2026-01-01T00:00:00+00:00")
    flags = ["--clusters", "2", "--samples_per_shard", "20", *QUIET]
    first = run_all.run(["--source", str(corpus), "--output", str(tmp_path / "r1"), *flags])
    assert first["balanced"] and first["watermark"] == "2026-01-01T00:00:00Z"

    # Three new articles, and one earlier article changed since.
    more = tmp_path / "more"
    generate_corpus(str(more), 3, seed=12, image_side=96, start_pmcid=9_000_101)
    added = []
    for folder in sorted(more.glob("PMC*")):
        shutil.copytree(folder, corpus / folder.name)
        added.append(corpus / folder.name)
    for meta in sorted((more / "metadata").glob("*.json")):
        shutil.copy(meta, corpus / "metadata" / meta.name)
        added.append(corpus / "metadata" / meta.name)
    changed = sorted(corpus.glob("PMC9000002.*"))
    _stamp(added + changed + list((corpus / "metadata").glob("PMC9000002.*")), "2026-06-01")

    second = run_all.run(
        ["--source", str(corpus), "--output", str(tmp_path / "r2"), "--since", str(tmp_path / "r1")]
        + flags
    )
    assert second["balanced"], second
    since = second["since"]
    assert since["watermark"] == "2026-01-01T00:00:00Z"
    extract = json.loads((tmp_path / "r2" / "extract" / "run_report.json").read_text())
    taken = extract["stages"]["discover"]["out"]
    assert taken == 4 and since["skipped_unchanged"] >= 7
    assert second["watermark"] == "2026-06-01T00:00:00Z"
    # The earlier clustering model, reused.
    annotate = json.loads((tmp_path / "r2" / "annotate" / "run_report.json").read_text())
    assert annotate["cluster_model"] != "trained"
    # The new dataset holds the new samples only; replaces.parquet the earlier ones of
    # PMC9000002.
    keys = set(json_samples(tmp_path / "r2" / "dataset"))
    assert keys and all(k.startswith(("PMC90001", "PMC9000002")) for k in keys)
    replaces = pq.read_table(tmp_path / "r2" / "replaces.parquet").to_pylist()
    earlier = {k for k in json_samples(tmp_path / "r1" / "dataset") if k.startswith("PMC9000002")}
    assert {r["key"] for r in replaces} == earlier and earlier
    assert since["replaced_samples"] == len(earlier)

    # Nothing new since the second run: says so and succeeds, no stage after extract.
    third = run_all.run(
        ["--source", str(corpus), "--output", str(tmp_path / "r3"), "--since", str(tmp_path / "r2")]
        + flags
    )
    assert third["balanced"] and "nothing new" in third["note"]
    assert list(third["stages"]) == ["extract"]
