"""OpenCLIP's own trainer learns from a dataset's shards streamed over HTTP.

A 40-article sample corpus is extracted and sharded into small shards, served over HTTP, and
examples/train_openclip_streaming.py runs `open_clip_train` on them with a tiny ViT on the CPU
for a few dozen steps. The evidence is the trainer's own output (its out.log `Loss:` lines,
params.txt, the checkpoint) and the server's access log (every shard of the group fetched).

The server is `biomedica serve` (shards at /shards/<group>/<n>.tar, dataset manifest at
/api/manifest), over the dataset and its index (pixels embeddings).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import free_port, run_extract

from pipelines import shard as shard_pipeline
from transforms.pmc.sample_corpus import generate_corpus

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "train_openclip_streaming.py"
GROUP = "commercial"
PER_SHARD = 16
BATCH = 16
EPOCHS = 7  # 6 full batches an epoch here: 42 steps
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "2"}
# uvicorn's access log: "GET /shards/commercial/000001.tar HTTP/1.1" 200
SHARD_GET = re.compile(r'"GET /shards/(\w+)/(\d{6})\.tar HTTP/1\.[01]" 200')
LOSS = re.compile(r"Train Epoch: (\d+) \[\s*(\d+)/(\d+) .* Loss: ([0-9.]+) \(")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("train_streaming")
    corpus, extract, dataset = root / "corpus", root / "extract", root / "dataset"
    generate_corpus(str(corpus), 40, seed=0, image_side=128)
    assert run_extract(["--source", str(corpus), "--output", str(extract)])["balanced"]
    report = shard_pipeline.run(
        ["--input", str(extract), "--output", str(dataset), "--samples_per_shard", str(PER_SHARD)]
    )
    assert report["balanced"], report
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert manifest["groups"][GROUP]["shards"] >= 4, manifest["groups"]
    return {"root": root, "extract": extract, "dataset": dataset, "manifest": manifest}


@dataclass
class Server:
    url: str  # http://127.0.0.1:PORT
    shards_base: str  # where <group>/<n>.tar lie on it
    source_flags: list[str]  # what tells the example where the manifest and shards are
    log: Path


def _python(*argv: str, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, *argv], cwd=REPO, env=ENV, capture_output=True, text=True, **kw
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@contextlib.contextmanager
def serving(built: dict):
    root, dataset = built["root"], built["dataset"]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = root / f"server-{port}.log"
    embeddings, index = root / "embed", root / "index"
    if not index.exists():
        embed = ["--input", str(built["extract"]), "--output", str(embeddings)]
        _python("-m", "pipelines.embed", *embed)
        _python(
            "-m", "pipelines.index", "--dataset", str(dataset),
            "--embeddings", str(embeddings), "--output", str(index),
        )  # fmt: skip
    command = ["-m", "pipelines.serve", "--dataset", str(dataset), "--index", str(index)]
    command += ["--port", str(port), "--log_level", "INFO"]
    base, flags = f"{url}/shards", ["--server", url]
    probe = f"{base}/{GROUP}/000000.tar"
    with open(log, "w") as sink:
        process = subprocess.Popen(
            [sys.executable, *command], cwd=REPO, env=ENV, stdout=sink, stderr=sink
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(
                    urllib.request.Request(probe, method="HEAD"), timeout=5
                ):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"server did not come up: {log.read_text()[-2000:]}"
                    ) from None
                time.sleep(0.3)
        yield Server(url, base, flags, log)
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def server(built):
    with serving(built) as running:
        yield running


def example(*argv: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(EXAMPLE), *argv],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def shard_gets(log: Path) -> list[tuple[str, int]]:
    return [(g, int(i)) for g, i in SHARD_GET.findall(log.read_text())]


# ---- the run --------------------------------------------------------------------------------


def test_tiny_clip_trains_on_streamed_shards(built, server, tmp_path):
    manifest = built["manifest"]
    group = manifest["groups"][GROUP]
    logs = tmp_path / "logs"
    started = time.monotonic()
    done = example(
        *server.source_flags, "--group", GROUP, "--tiny", "--",
        "--batch-size", str(BATCH), "--epochs", str(EPOCHS), "--lr", "1e-3", "--warmup", "3",
        "--log-every-n-steps", "1", "--save-frequency", "0", "--seed", "0",
        "--logs", str(logs), "--name", "tiny",
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-4000:]
    run = logs / "tiny"

    # It was given the server's URLs, for this group's shards and the manifest's sample count.
    params = dict(
        line.split(": ", 1)
        for line in (run / "params.txt").read_text().splitlines()
        if ": " in line
    )
    assert params["train_data"].startswith(server.url + "/"), params["train_data"]
    assert f"/{GROUP}/" in params["train_data"] and params["dataset_type"] == "webdataset"
    assert params["train_num_samples"] == str(group["samples"])
    assert params["model"] == "biomedica-tiny" and params["device"] == "cpu"

    # It read them: every shard of the group came from the server, no other group's did.
    fetched = shard_gets(server.log)
    assert {g for g, _ in fetched} == {GROUP}, fetched
    assert {i for _, i in fetched} == set(range(group["shards"]))

    # It trained: a few dozen steps, every one logged; the loss fell clearly.
    steps = [
        (int(e), int(seen), float(loss))
        for e, seen, _, loss in LOSS.findall((run / "out.log").read_text())
    ]
    assert len(steps) >= 36, steps
    assert {e for e, _, _ in steps} == set(range(EPOCHS))
    seen = sum(max(s for e, s, _ in steps if e == epoch) for epoch in range(EPOCHS))
    assert seen >= 36 * BATCH  # samples the trainer counted
    first = [loss for _, _, loss in steps[:3]]
    last = [loss for e, _, loss in steps if e == EPOCHS - 1]
    start, end = sum(first) / len(first), sum(last) / len(last)
    assert end < 0.85 * start, (start, end, steps)

    # And saved the model.
    checkpoint = run / "checkpoints" / f"epoch_{EPOCHS}.pt"
    assert checkpoint.stat().st_size > 1_000_000
    print(f"\ntrained {len(steps)} steps in {elapsed:.0f} s; loss {start:.3f} -> {end:.3f}")


# ---- what the example refuses, and what it builds ----------------------------------------------


def test_dry_run_builds_the_brace_url_and_sample_count(built, server):
    done = example(
        *server.source_flags, "--group", f"{GROUP},other", "--dry_run", "--", "--lr", "1"
    )
    assert done.returncode == 0, done.stderr
    argv = json.loads(done.stdout)
    groups = built["manifest"]["groups"]
    data = argv[argv.index("--train-data") + 1]
    last = groups[GROUP]["shards"] - 1
    assert data.split("::") == [
        f"{server.shards_base}/{GROUP}/{{000000..{last:06d}}}.tar",
        f"{server.shards_base}/other/000000.tar",
    ]
    samples = groups[GROUP]["samples"] + groups["other"]["samples"]
    assert argv[argv.index("--train-num-samples") + 1] == str(samples)
    assert argv[-2:] == ["--lr", "1"]  # the user's flags last, unchanged


def test_missing_shard_is_refused_before_training(built, tmp_path):
    # A copy of the dataset's manifest naming one shard more than the folder holds.
    manifest = dict(built["manifest"])
    extra = dict(manifest["shards"][0], index=999, path=f"webdataset/{GROUP}/000999.tar")
    manifest["shards"] = [*manifest["shards"], extra]
    fake = tmp_path / "dataset"
    fake.mkdir()
    (fake / "manifest.json").write_text(json.dumps(manifest))
    with serving(built) as running:
        done = example(
            "--dataset", str(fake), "--shards_base", running.shards_base, "--group", GROUP,
            "--tiny", "--", "--logs", str(tmp_path / "logs"),
        )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: shard {running.shards_base}/{GROUP}/000999.tar cannot be streamed: HTTP 404"
    )
    assert not (tmp_path / "logs").exists()  # the trainer never started


def test_unknown_group_and_unreadable_manifest_are_one_line(built, tmp_path):
    done = example("--dataset", str(built["dataset"]), "--group", "nope", "--dry_run")
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "error: group nope has no shards in the manifest (groups: commercial, noncommercial, other)"
    )
    done = example("--dataset", str(tmp_path), "--dry_run")
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"error: cannot read {tmp_path}/manifest.json")


def _example_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_openclip_streaming", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_urls_for_gaps_and_object_stores():
    module = _example_module()
    shards = [(GROUP, i, 10) for i in (0, 1, 2, 5)] + [("other", 0, 3)]
    manifest = {
        "shards": [
            {"group": g, "index": i, "samples": n, "path": f"webdataset/{g}/{i:06d}.tar"}
            for g, i, n in shards
        ]
    }
    data, samples, count = module.training_source(manifest, "s3://b/ds/webdataset/", [GROUP])
    assert (samples, count) == (40, 4)
    assert data == (
        f"pipe:aws s3 cp s3://b/ds/webdataset/{GROUP}/{{000000..000002}}.tar -"
        f"::pipe:aws s3 cp s3://b/ds/webdataset/{GROUP}/000005.tar -"
    )
    assert module.expand(data)[-1] == f"pipe:aws s3 cp s3://b/ds/webdataset/{GROUP}/000005.tar -"
    data, samples, _ = module.training_source(manifest, "gs://b/ds/webdataset", None)
    assert data.endswith("::gs://b/ds/webdataset/other/000000.tar") and samples == 43
    with pytest.raises(module.SourceError, match="URL separator"):
        module.training_source(manifest, "http://[::1]:8080/shards", None)
