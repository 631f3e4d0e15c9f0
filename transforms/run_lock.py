"""One run at a time per output: a lock file with the run's id, host, pid and a heartbeat.

A second run into an output while the first is live would delete the first one's staging
(each run clears what it finds before it starts). The lock is taken before any work, its
heartbeat refreshed while the run lasts, checked again before the final moves, and removed
when the run ends. A lock whose heartbeat stopped long ago (a killed run on another machine)
or whose process is gone (same host) is stale: taken over with a warning.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid

from transforms import storage

LOCK_FILE = "_run_lock.json"
HEARTBEAT_SECONDS = 20.0
STALE_SECONDS = 180.0  # many missed heartbeats: the run is gone


class LockError(Exception):
    """Another run holds the output, or took it over from this one."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user's), or we cannot tell: assume alive
    return True


def stale_reason(lock: dict, now: float | None = None) -> str:
    """Why a lock left in an output no longer protects a run ("" when the run is live)."""
    now = time.time() if now is None else now
    try:
        beat, host, pid = float(lock["heartbeat"]), str(lock["host"]), int(lock["pid"])
    except (KeyError, TypeError, ValueError):
        return "unreadable lock"
    if now - beat > STALE_SECONDS:
        return f"no heartbeat for {int(now - beat)} s"
    if host == socket.gethostname() and not _pid_alive(pid):
        return f"process {pid} on this host is gone"
    return ""


class RunLock:
    """`with RunLock(output): ...` holds the output for the block (see the module doc)."""

    def __init__(self, output: str, heartbeat_seconds: float = HEARTBEAT_SECONDS):
        self.output = output
        self.uri = storage.join(output, LOCK_FILE)
        self.run_id = uuid.uuid4().hex[:12]
        self.heartbeat_seconds = heartbeat_seconds
        self.lost = ""  # why this run no longer holds the lock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _record(self) -> bytes:
        return json.dumps(
            {
                "run_id": self.run_id,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "started": getattr(self, "started", time.time()),
                "heartbeat": time.time(),
            }
        ).encode()

    def _read(self) -> dict | None:
        try:
            return json.loads(storage.read_bytes(self.uri))
        except Exception:  # absent, or a half-written file: treated alike below
            return None if not storage.exists(self.uri) else {}

    def acquire(self) -> None:
        self.started = time.time()
        held = self._read()
        if held is not None:
            why = stale_reason(held)
            if not why:
                raise LockError(
                    f"{self.output} is in use by run {held.get('run_id')} "
                    f"(host {held.get('host')}, pid {held.get('pid')}); wait for it to end"
                )
            logging.warning(
                "taking over the stale lock of run %s in %s (%s)",
                held.get("run_id"),
                self.output,
                why,
            )
            storage.remove(self.uri)
        self._create()
        if (self._read() or {}).get("run_id") != self.run_id:  # another run won the race
            held = self._read() or {}
            raise LockError(f"{self.output} was just taken by run {held.get('run_id')}")
        self._thread = threading.Thread(target=self._beat, name="run-lock", daemon=True)
        self._thread.start()

    def _create(self) -> None:
        if "://" in self.uri:  # object stores: write, then read back who holds it
            storage.atomic_write(self.uri, [self._record()])
            return
        os.makedirs(self.output, exist_ok=True)
        try:  # exclusive create: of two local runs starting at once, one wins
            fd = os.open(self.uri, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            held = self._read() or {}
            raise LockError(f"{self.output} was just taken by run {held.get('run_id')}") from None
        with os.fdopen(fd, "wb") as out:
            out.write(self._record())

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds):
            try:
                self.check()
                storage.atomic_write(self.uri, [self._record()])
            except LockError as err:
                self.lost = str(err)
                return
            except Exception as err:  # a failed refresh must not end the run
                logging.debug("lock heartbeat failed: %s", err)

    def check(self) -> None:
        """Raise LockError unless this run still holds the output."""
        if self.lost:
            raise LockError(self.lost)
        held = self._read()
        if not held or held.get("run_id") != self.run_id:
            other = (held or {}).get("run_id")
            raise LockError(
                f"{self.output}: this run ({self.run_id}) lost its lock"
                + (f" to run {other}" if other else " (the lock file was removed)")
            )

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            if (self._read() or {}).get("run_id") == self.run_id:
                storage.remove(self.uri)
        except Exception as err:  # releasing must not hide the run's own outcome
            logging.warning("could not remove the lock %s: %s", self.uri, err)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
