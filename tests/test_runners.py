"""The extract job gives the same figures on every local Beam runner.

Without --runner the job runs on the in-process FnApiRunner (pipelines/runner.py). Beam's
DirectRunner first tries the Prism runner, which it downloads from GitHub; offline the
download fails at once and it falls back to the FnApiRunner. The tests point
--prism_location at a missing file so that the fallback happens the same way on a machine
with network access, instead of a download and a run on Prism.
"""

from __future__ import annotations

import logging

import pytest
from conftest import PORTABLE_RUNNER, read_table, run_extract

from transforms.pmc.sample_corpus import generate_corpus

pytestmark = pytest.mark.slow

MULTI_PROCESS = ["--direct_running_mode", "multi_processing", "--direct_num_workers", "2"]
RUNNERS = {
    "direct-multi-processing": ["--runner", "DirectRunner", *MULTI_PROCESS],
    "in-process-multi-processing": MULTI_PROCESS,
    "portable-embed-loopback": PORTABLE_RUNNER,
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("runner-corpus")
    generate_corpus(str(root), 12, seed=3, image_side=200)
    return root


def run(corpus, out, flags: list[str]) -> tuple[dict, dict[str, str]]:
    report = run_extract(["--source", str(corpus), "--output", str(out), *flags])
    figures = read_table(out / "extract" / "figures")
    hashes = {row["key"]: row["image_hash"] for row in figures}
    assert len(hashes) == len(figures), "figure keys are not unique"
    return report, hashes


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    """The default: no --runner, the in-process FnApiRunner in this process."""
    report, hashes = run(corpus, tmp_path_factory.mktemp("in-process"), [])
    return report, hashes


def test_in_process_runner(reference):
    report, hashes = reference
    assert report["balanced"], report
    assert len(hashes) == report["stages"]["dedupe"]["out"] > 20
    assert report["stages"]["dedupe"]["duplicates"] >= 1


@pytest.mark.parametrize("name", list(RUNNERS))
def test_runner_matches_in_process(name, corpus, reference, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="apache_beam.runners")
    flags = list(RUNNERS[name])
    if "DirectRunner" in flags:
        flags += ["--prism_location", str(tmp_path / "no-prism.zip")]
    report, hashes = run(corpus, tmp_path / "out", flags)
    assert report["balanced"], report
    assert report["stages"] == reference[0]["stages"]
    assert sorted(hashes) == sorted(reference[1])
    assert hashes == reference[1]

    messages = [(r.name, r.getMessage()) for r in caplog.records]
    if "DirectRunner" in flags:
        assert any("Falling back to DirectRunner" in m for _, m in messages)
    if "multi_processing" in flags:
        # The SDK workers ran as subprocesses: their log lines come back through the runner.
        assert any(n.endswith("local_job_service") and "Worker" in m for n, m in messages)
