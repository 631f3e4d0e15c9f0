"""Shared test fixtures: where the real PMC data lies, and a way to run the extract job."""

from __future__ import annotations

import json
import os
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
