"""Shared test fixtures: where the real PMC data lies, and a way to run the extract job."""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[1]
# CI clones the repo with shared/ beside it; never copy its files into the project.
SHARED = Path(os.environ.get("BIOMEDICA_SHARED", REPO.parent / "shared"))
PMC = SHARED / "pmc"


@pytest.fixture(scope="session")
def pmc_dir() -> Path:
    if not PMC.is_dir():
        pytest.fail(f"real PMC data not found at {PMC} (set BIOMEDICA_SHARED)")
    return PMC


def read_table(directory) -> list[dict]:
    """Every row of the Parquet files in a folder, as dicts."""
    files = sorted(Path(directory).glob("*.parquet"))
    rows: list[dict] = []
    for f in files:
        rows.extend(pq.read_table(f).to_pylist())
    return rows


def read_dead_letters(output) -> list[dict]:
    rows = []
    for f in sorted(Path(output, "dead_letter").glob("*.jsonl")):
        rows.extend(json.loads(line) for line in f.read_text().splitlines() if line.strip())
    return rows


def run_extract(argv: list[str]) -> dict:
    from pipelines.extract import run

    return run(argv)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def moto_s3():
    """A moto S3 server on 127.0.0.1: (endpoint, a client holding dummy credentials).

    Only that client owns buckets and uploads; objects meant for anonymous reads need
    ACL public-read."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    owner = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    try:
        yield endpoint, owner
    finally:
        server.stop()


@contextlib.contextmanager
def gcs_emulator(bucket: str):
    """A gcp-storage-emulator on 127.0.0.1 with `bucket`, and a client of it.

    STORAGE_EMULATOR_HOST points Beam's gs:// filesystem at it for the duration; the
    environment is restored afterwards.
    """
    from gcp_storage_emulator.server import create_server
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage as gcs

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket)
    server.start()
    saved = {name: os.environ.get(name) for name in ("STORAGE_EMULATOR_HOST", "NO_GCE_CHECK")}
    os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
    try:
        yield gcs.Client(project="test", credentials=AnonymousCredentials())
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.stop()


@pytest.fixture
def no_credential_retries(monkeypatch):
    """Fail the test if Beam looks up GCP credentials (it retries with backoff, 15-30 s per
    process, before going anonymous): against an emulator, storage settles that up front.

    The cache starts unsettled, so a run that does not settle it calls the lookup and fails.
    """
    from apache_beam.internal.gcp import auth

    def refuse(_options):
        raise AssertionError("Beam looked up GCP credentials: storage did not settle them")

    monkeypatch.setattr(auth._Credentials, "_credentials_init", False)
    monkeypatch.setattr(auth._Credentials, "_credentials", None, raising=False)
    monkeypatch.setattr(auth._Credentials, "_get_service_credentials", staticmethod(refuse))


PORTABLE_RUNNER = [
    "--runner",
    "PortableRunner",
    "--job_endpoint",
    "embed",
    "--environment_type",
    "LOOPBACK",
]


def shard_members(dataset: Path, suffix: str) -> dict[str, bytes]:
    """{sample key: bytes} of the members ending in `suffix` of a dataset's shards."""
    import tarfile

    found = {}
    for path in sorted(Path(dataset).glob("webdataset/*/*.tar")):
        with tarfile.open(path) as tar:
            for member in tar:
                if member.name.endswith(suffix):
                    found[member.name[: -len(suffix)]] = tar.extractfile(member).read()
    return found


def json_samples(dataset: Path) -> dict[str, dict]:
    """{key: sample JSON} of a dataset's shards."""
    samples = (json.loads(data) for data in shard_members(dataset, ".json").values())
    return {meta["key"]: meta for meta in samples}


def wait_for(condition, timeout: float = 20.0, what: str = "condition"):
    """condition()'s first true value within `timeout` seconds (browser tests poll pages)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
