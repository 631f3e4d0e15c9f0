"""One run at a time per output: a lock file with the run's id, host, pid and a heartbeat.

A second run into an output while the first is live would delete the first one's staging
(each run clears what it finds before it starts). The lock is taken before any work, its
heartbeat refreshed while the run lasts, checked again before the final moves, and removed
when the run ends. A lock whose heartbeat stopped long ago (a killed run on another machine)
or whose process is gone (same host) is stale: taken over with a warning.

Every write is conditional, never check-then-write: the lock is created only if absent
(O_EXCL locally, `ifGenerationMatch=0` on gs://, `If-None-Match: *` on s3://) and refreshed
or removed only if it is still the one this run wrote (the same file, generation or ETag).
A heartbeat that finds the lock gone or another run's marks this run lost: its final steps
(`check`, `assert_held`) then fail instead of moving files into an output another run owns.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass

from transforms import storage

LOCK_FILE = "_run_lock.json"
RECORD_BYTES = 512  # records padded to one size: a local refresh overwrites in place
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


class _Taken(Exception):
    """A conditional write found the lock file not as this run expected it."""


class _Local:
    """O_EXCL create; refresh by overwriting the very file created (its descriptor), so a
    file another run created after a takeover is never written; remove only that file."""

    def __init__(self, uri: str):
        self.uri = uri
        self.fd: int | None = None
        self.record = b""  # what this run last wrote

    def read(self) -> bytes | None:
        try:
            with open(self.uri, "rb") as held:
                return held.read()
        except (FileNotFoundError, NotADirectoryError):  # creating it says what is wrong
            return None

    def create(self, data: bytes) -> None:
        os.makedirs(os.path.dirname(self.uri) or ".", exist_ok=True)
        try:
            self.fd = os.open(self.uri, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        except FileExistsError:
            raise _Taken from None
        os.write(self.fd, data)
        self.record = data

    def _ours(self) -> bool:
        """The path still names the file this run created, and it still holds this run's
        record (a tool that rewrote it in place made it another's)."""
        try:
            if self.fd is None or not os.path.samestat(os.fstat(self.fd), os.stat(self.uri)):
                return False
            return os.pread(self.fd, RECORD_BYTES, 0) == self.record
        except (FileNotFoundError, ValueError):
            return False

    def replace(self, data: bytes) -> None:
        if not self._ours():
            raise _Taken
        os.pwrite(self.fd, data, 0)  # same size: readers never see a shorter file
        self.record = data

    def remove(self) -> None:
        if self._ours():
            os.remove(self.uri)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class _S3:
    """put_object If-None-Match: * to create; If-Match: <ETag> to refresh and delete."""

    def __init__(self, uri: str):
        self.bucket, self.key = storage.split_s3(uri)
        self.client = storage._s3_client(storage.S3Config())
        self.etag: str | None = None

    @staticmethod
    def _failed(err: Exception) -> bool:
        code = str(getattr(err, "response", {}).get("Error", {}).get("Code", ""))
        return code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")

    def read(self) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.key)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None

    def _put(self, data: bytes, **condition) -> None:
        try:
            put = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=data, **condition)
        except Exception as err:
            if self._failed(err):
                raise _Taken from None
            raise
        self.etag = put["ETag"]

    def create(self, data: bytes) -> None:
        self._put(data, IfNoneMatch="*")

    def replace(self, data: bytes) -> None:
        self._put(data, IfMatch=self.etag)

    def remove(self) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=self.etag)
        except Exception as err:
            if self._failed(err):
                return  # another run's lock now: it stays
            # A store without conditional deletes: compare, then delete (a small window).
            logging.debug("conditional delete refused (%s): comparing first", err)
            head = self.client.head_object(Bucket=self.bucket, Key=self.key)
            if head.get("ETag") == self.etag:
                self.client.delete_object(Bucket=self.bucket, Key=self.key)

    def close(self) -> None:
        pass


class _GCS:
    """ifGenerationMatch=0 to create; ifGenerationMatch=<generation> to refresh and delete."""

    def __init__(self, uri: str):
        from google.cloud import storage as gcs

        bucket, _, self.name = uri[len("gs://") :].partition("/")
        if os.environ.get("STORAGE_EMULATOR_HOST"):
            from google.auth.credentials import AnonymousCredentials

            client = gcs.Client(project="emulator", credentials=AnonymousCredentials())
        else:
            client = gcs.Client()
        self.bucket = client.bucket(bucket)
        self.generation: int | None = None

    def read(self) -> bytes | None:
        from google.api_core.exceptions import NotFound

        try:
            return self.bucket.blob(self.name).download_as_bytes()
        except NotFound:
            return None

    def _put(self, data: bytes, generation: int) -> None:
        from google.api_core.exceptions import PreconditionFailed

        blob = self.bucket.blob(self.name)
        try:
            blob.upload_from_string(
                data, content_type="application/json", if_generation_match=generation
            )
        except PreconditionFailed:
            raise _Taken from None
        self.generation = blob.generation

    def create(self, data: bytes) -> None:
        self._put(data, 0)

    def replace(self, data: bytes) -> None:
        self._put(data, self.generation)

    def remove(self) -> None:
        from google.api_core.exceptions import NotFound, PreconditionFailed

        try:
            self.bucket.blob(self.name).delete(if_generation_match=self.generation)
        except (NotFound, PreconditionFailed):
            pass

    def close(self) -> None:
        pass


def _store(uri: str):
    if uri.startswith("gs://"):
        return _GCS(uri)
    if storage.is_s3(uri):
        return _S3(uri)
    if "://" in uri:
        raise LockError(f"cannot lock {uri}: only local folders, gs:// and s3:// are supported")
    return _Local(uri)


_HELD: dict[str, RunLock] = {}  # the locks this process holds, by output


def _key(output: str) -> str:
    return output.rstrip("/") if "://" in output else os.path.realpath(output)


def assert_held(output: str, run_id: str | None = None) -> None:
    """Raise LockError unless the run is still the one that holds `output`: call it before
    moving a file into its final place. In the launcher's process (the in-process runner)
    it checks the heartbeat's verdict and reads the lock; elsewhere (other worker processes)
    it reads the lock file and compares `run_id` (the launcher's `RunLock.run_id`), when
    given, or else only requires a live lock."""
    lock = _HELD.get(_key(output))
    if lock is not None and (run_id is None or lock.run_id == run_id):
        lock.check()
        return
    uri = storage.join(output, LOCK_FILE)
    try:
        held = json.loads(_store(uri).read() or b"null")
    except ValueError:
        held = {}
    if not held:
        raise LockError(f"{output}: no run holds its lock any more")
    if run_id is not None and held.get("run_id") != run_id:
        raise LockError(f"{output}: run {run_id} lost its lock to run {held.get('run_id')}")
    if run_id is None and stale_reason(held):
        raise LockError(f"{output}: the run's lock is stale ({stale_reason(held)})")


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


@dataclass(frozen=True)
class Guard:
    """Called by a step before it moves a file into its final place: raises LockError
    unless run `run_id` still holds `output` (see assert_held). Picklable, so DoFns on any
    worker carry it; the pipeline gets it before the lock is taken (the id is chosen first).
    """

    output: str
    run_id: str

    def __call__(self) -> None:
        assert_held(self.output, self.run_id)


class RunLock:
    """`with RunLock(output): ...` holds the output for the block (see the module doc)."""

    def __init__(
        self, output: str, heartbeat_seconds: float | None = None, run_id: str | None = None
    ):
        self.output = output
        self.uri = storage.join(output, LOCK_FILE)
        self.run_id = run_id or new_run_id()
        self.heartbeat_seconds = heartbeat_seconds or HEARTBEAT_SECONDS
        self.lost = ""  # why this run no longer holds the lock
        self._store = _store(self.uri)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _record(self) -> bytes:
        record = json.dumps(
            {
                "run_id": self.run_id,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "started": getattr(self, "started", time.time()),
                "heartbeat": time.time(),
            }
        ).encode()
        return record.ljust(RECORD_BYTES)  # JSON allows the trailing spaces

    def _read(self) -> dict | None:
        """The lock in the output: None when absent, {} when unreadable."""
        for attempt in range(2):
            data = self._store.read()
            if data is None:
                return None
            try:
                held = json.loads(data)
                return held if isinstance(held, dict) else {}
            except ValueError:  # perhaps caught mid-write: look once more
                if attempt == 0:
                    time.sleep(0.2)
        return {}

    def _taken(self) -> LockError:
        held = self._read() or {}
        return LockError(f"{self.output} was just taken by run {held.get('run_id')}")

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
        try:  # only if absent: of two runs starting at once, one wins
            self._store.create(self._record())
        except _Taken:
            raise self._taken() from None
        _HELD[_key(self.output)] = self
        self._thread = threading.Thread(target=self._beat, name="run-lock", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds):
            try:
                self._store.replace(self._record())
            except _Taken:
                held = self._read() or {}
                other = held.get("run_id")
                self.lost = f"{self.output}: this run ({self.run_id}) lost its lock" + (
                    f" to run {other}" if other else " (the lock file was removed)"
                )
                logging.error("%s; the run will fail before its final steps", self.lost)
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
        if _HELD.get(_key(self.output)) is self:
            del _HELD[_key(self.output)]
        try:  # conditional: a lock another run took over stays
            self._store.remove()
        except Exception as err:  # releasing must not hide the run's own outcome
            logging.warning("could not remove the lock %s: %s", self.uri, err)
        finally:
            self._store.close()

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
