"""Progress of a local run on stderr: counts so far and a rate. Never fails a run.

DoFns call `tick("articles")`; the launching process runs a `Reporter` thread that prints
the sums every few seconds (a bar redrawn in place on a terminal, plain lines otherwise).
Workers in other processes (--direct_running_mode multi_processing) inherit PROGRESS_DIR
from the launcher's environment and write their own counts to a small file there, which
the reporter adds up. Without that variable (Dataflow, tests that build pipelines
themselves) a tick only bumps an in-process counter.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from collections import Counter

PROGRESS_DIR = "BIOMEDICA_PROGRESS_DIR"
INTERVAL = "BIOMEDICA_PROGRESS_SECONDS"  # how often counts are printed (and written)
_LAUNCHER = "BIOMEDICA_PROGRESS_PID"

_counts: Counter = Counter()
_lock = threading.Lock()
_last_write = 0.0


def _interval() -> float:
    try:
        return max(0.05, float(os.environ.get(INTERVAL, "") or 2.0))
    except ValueError:
        return 2.0


def tick(what: str, n: int = 1) -> None:
    """Count n more `what` done in this process (cheap; safe anywhere)."""
    global _last_write
    try:
        with _lock:
            _counts[what] += n
            folder = os.environ.get(PROGRESS_DIR)
            if not folder or os.environ.get(_LAUNCHER) == str(os.getpid()):
                return
            now = time.monotonic()
            if now - _last_write < _interval() / 2:
                return
            _last_write = now
            _write_own(folder)
    except Exception:
        pass  # progress is a courtesy: it never fails a run


def _write_own(folder: str) -> None:
    path = os.path.join(folder, f"{os.getpid()}.json")
    temp = f"{path}.tmp"
    with open(temp, "w") as out:
        json.dump(dict(_counts), out)
    os.replace(temp, path)


def _flush_at_exit() -> None:
    folder = os.environ.get(PROGRESS_DIR)
    if folder and _counts and os.environ.get(_LAUNCHER) != str(os.getpid()):
        try:
            with _lock:
                _write_own(folder)
        except Exception:
            pass


import atexit  # noqa: E402  (registered once the functions above exist)

atexit.register(_flush_at_exit)


_joined: str | None = None


@contextlib.contextmanager
def joined(folder: str | None):
    """A bundle run by a long-lived worker process (a Dask worker) for the run whose
    launcher made `folder`: it counts for that run (from zero, not on top of an earlier
    run's counts) and writes its counts there when the bundle ends. A folder this machine
    lacks (a worker on another machine) or none leaves progress off."""
    global _joined
    mine = os.environ.get(_LAUNCHER) == str(os.getpid())  # the launcher counts in-process
    if not folder or mine or not os.path.isdir(folder):
        yield
        return
    with _lock:
        if _joined != folder:
            _counts.clear()
            _joined = folder
        os.environ[PROGRESS_DIR] = folder
    try:
        yield
    finally:
        try:
            with _lock:
                _write_own(folder)
        except Exception:
            pass  # progress is a courtesy: it never fails a run


def totals(folder: str | None) -> Counter:
    """This process's counts plus those the workers wrote to `folder`."""
    with _lock:
        total = Counter(_counts)
    if folder:
        try:
            names = os.listdir(folder)
        except OSError:
            names = []
        for name in names:
            if not name.endswith(".json"):
                continue
            try:
                with open(os.path.join(folder, name)) as f:
                    total.update({k: int(v) for k, v in json.load(f).items()})
            except (OSError, ValueError, AttributeError):
                continue  # being replaced right now: next time
    return total


def format_line(label: str, counts: Counter, units: list[str], seconds: float, total=None) -> str:
    """`extract 0:00:12  120 articles (9.8/s)  840 figures` (with a bar when total is known)."""
    seconds = max(seconds, 1e-6)
    whole = int(seconds)
    parts = [f"{label} {whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"]
    for i, unit in enumerate(units):
        n = counts.get(unit, 0)
        rate = f" ({n / seconds:.1f}/s)" if i == 0 else ""
        parts.append(f"{n:,} {unit}{rate}")
    if total:
        done = min(1.0, counts.get(units[0], 0) / total)
        filled = int(done * 20)
        parts.insert(1, f"[{'#' * filled}{'.' * (20 - filled)}] {done:4.0%} of {total:,}")
    return "  ".join(parts)


class Reporter:
    """A thread in the launching process printing progress until stopped."""

    def __init__(self, label: str, units: list[str], total: int | None = None, stream=None):
        self.label, self.units, self.total = label, units, total
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.folder = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._env: dict = {}

    def start(self) -> Reporter:
        import tempfile

        try:
            self.folder = tempfile.mkdtemp(prefix="biomedica-progress-")
            self._env = {k: os.environ.get(k) for k in (PROGRESS_DIR, _LAUNCHER)}
            os.environ[PROGRESS_DIR] = self.folder
            os.environ[_LAUNCHER] = str(os.getpid())
        except Exception:
            self.folder = ""
        self.started = time.monotonic()
        self.base = totals(None)  # what earlier runs in this process counted
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
        self._thread.start()
        return self

    def _print(self, final: bool = False) -> None:
        try:
            counts = totals(self.folder)
            counts.subtract(self.base)
            line = format_line(
                self.label, counts, self.units, time.monotonic() - self.started, self.total
            )
            if self.tty:
                self.stream.write(f"\r\x1b[K{line}" + ("\n" if final else ""))
            else:
                self.stream.write(line + "\n")
            self.stream.flush()
        except Exception:
            pass

    def _run(self) -> None:
        # Plain lines (CI logs) less often than a bar redrawn in place.
        every = _interval() * (1 if self.tty else 2.5)
        while not self._stop.wait(every):
            self._print()

    def stop(self, print_last: bool = True) -> None:
        import shutil

        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if print_last:
            self._print(final=True)
        elif self.tty:
            self.stream.write("\n")
        for key, value in self._env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)
