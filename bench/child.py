"""Run one pipeline in a child process and measure it: what both benchmarks share."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


# Run from a small process: a child's peak RSS (ru_maxrss) includes what its parent held
# when it forked, so a benchmark holding gigabytes would inflate every child it measures.
_TRAMPOLINE = """
import json, os, subprocess, sys
child = subprocess.Popen(sys.argv[2:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(child.pid, 0)
with open(sys.argv[1], "w") as out:
    json.dump([os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime,
               usage.ru_maxrss], out)
"""


def measure(command: list[str]) -> dict:
    """Wall time, CPU time and peak RSS of a command run as a child process (wait4)."""
    with tempfile.NamedTemporaryFile(suffix=".json") as result:
        started = time.time()
        subprocess.run(
            [sys.executable, "-c", _TRAMPOLINE, result.name, *command], cwd=REPO, check=True
        )
        wall = time.time() - started
        code, cpu, maxrss = json.loads(Path(result.name).read_text())
    if code != 0:
        raise SystemExit(f"failed: {' '.join(command)}")
    return {
        "command": " ".join(command),
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "peak_rss_mib": round(maxrss / 1024, 1),
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


def cached_corpus(workdir: Path, articles: int, image_side: int, name: str = "corpus") -> Path:
    """A generated sample corpus under `workdir`, made once (`.complete` holds the seconds
    it took) and reused by later runs."""
    import os

    from transforms.pmc.sample_corpus import generate_corpus

    root = workdir / f"{name}-{articles}-{image_side}"
    done = root / ".complete"
    if not done.exists():
        started = time.time()
        generate_corpus(str(root), articles, seed=0, image_side=image_side, workers=os.cpu_count())
        done.write_text(f"{time.time() - started:.1f}\n")
    return root
