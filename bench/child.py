"""Run one pipeline in a child process and measure it: what both benchmarks share."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def measure(command: list[str]) -> dict:
    """Wall time, CPU time and peak RSS of a child process (from wait4)."""
    started = time.time()
    child = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.time() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(command)}")
    return {
        "command": " ".join(command),
        "wall_s": round(wall, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
    }


def run_pipeline(name: str, output: Path, *flags: str) -> tuple[dict, dict]:
    """(run report, measures) of `python -m pipelines.<name> --output ... --overwrite`, one
    worker."""
    command = [
        sys.executable,
        "-m",
        f"pipelines.{name}",
        *flags,
        "--output",
        str(output),
        "--overwrite",
        "--direct_num_workers",
        "1",
    ]
    measured = measure(command)
    report = json.loads((output / "run_report.json").read_text())
    return report, {**measured, "balanced": report["balanced"]}
