"""Read, list and write files at local paths, gs:// and s3:// URIs.

Local paths and gs:// go through Beam's FileSystems, so whatever Beam can reach works.
s3:// goes through boto3 directly: the PMC Cloud bucket is read anonymously (Beam's S3
filesystem always signs requests and needs credentials), and `S3Config.endpoint_url` points
at mirrors and local servers.
"""

from __future__ import annotations

import fnmatch
import io
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from apache_beam.io.filesystems import FileSystems


@dataclass(frozen=True)
class S3Config:
    endpoint_url: str | None = None
    region: str = "us-east-1"
    anonymous: bool | None = None  # None: anonymous unless credentials are configured


@dataclass(frozen=True)
class FileInfo:
    uri: str
    size: int
    last_modified: str  # ISO 8601 UTC, "" where unknown


_local = threading.local()


def _use_emulator_without_auth() -> None:
    # A GCS emulator needs no credentials. Without this, google-auth probes the GCE metadata
    # server (NO_GCE_CHECK stops that), and Beam retries its failed credential lookup with
    # backoff, 15-30 s per process, before going anonymous anyway: settle it up front.
    if not os.environ.get("STORAGE_EMULATOR_HOST"):
        return
    os.environ.setdefault("NO_GCE_CHECK", "True")
    try:
        from apache_beam.internal.gcp.auth import _Credentials as cache  # Beam's per-process
    except ImportError:
        return
    lock = getattr(cache, "_credentials_lock", None)
    if lock is None or not hasattr(cache, "_credentials_init"):
        return  # another Beam version: only the retries' delay is left
    with lock:
        if not cache._credentials_init:
            cache._credentials, cache._credentials_init = None, True


def _gcs(uri: str) -> None:
    """Before Beam's GCS filesystem serves `uri`: honour an emulator set after import."""
    if uri.startswith("gs://") and os.environ.get("STORAGE_EMULATOR_HOST"):
        _use_emulator_without_auth()


_use_emulator_without_auth()


def _s3_client(config: S3Config):
    cache = getattr(_local, "s3", None)
    if cache is None:
        cache = _local.s3 = {}
    if config not in cache:
        import boto3
        from botocore import UNSIGNED
        from botocore.config import Config

        session = boto3.session.Session()
        anonymous = config.anonymous
        if anonymous is None:
            anonymous = session.get_credentials() is None
        botocore_config = Config(
            signature_version=UNSIGNED if anonymous else None,
            retries={"max_attempts": 8, "mode": "adaptive"},
            max_pool_connections=32,
        )
        cache[config] = session.client(
            "s3",
            region_name=config.region,
            endpoint_url=config.endpoint_url,
            config=botocore_config,
        )
    return cache[config]


def split_s3(uri: str) -> tuple[str, str]:
    rest = uri[len("s3://") :]
    bucket, _, key = rest.partition("/")
    return bucket, key


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def join(base: str, *parts: str) -> str:
    if "://" in base:
        out = base.rstrip("/")
        for part in parts:
            out = f"{out}/{part.strip('/')}"
        return out
    return os.path.join(base, *parts)


def _iso(timestamp) -> str:
    if timestamp is None:
        return ""
    if isinstance(timestamp, datetime):
        moment = timestamp if timestamp.tzinfo else timestamp.replace(tzinfo=UTC)
    else:
        moment = datetime.fromtimestamp(float(timestamp), tz=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class StorageError(Exception):
    pass


class TooLarge(StorageError):
    """An object over the size bound it was read with: refused, its bytes not returned."""

    def __init__(self, size: int | None, limit: int):
        said = f"{size} bytes" if size is not None else f"more than {limit} bytes"
        super().__init__(f"{said} > limit {limit}")
        self.size, self.limit = size, limit


def _size(uri: str) -> int | None:
    try:
        return FileSystems.match([uri])[0].metadata_list[0].size_in_bytes
    except Exception:
        return None


def read_bytes(uri: str, s3: S3Config = S3Config(), max_bytes: int | None = None) -> bytes:
    """The whole object; StorageError if it is missing, TooLarge if larger than max_bytes."""
    try:
        if is_s3(uri):
            bucket, key = split_s3(uri)
            response = _s3_client(s3).get_object(Bucket=bucket, Key=key)
            size = response.get("ContentLength")
            if max_bytes is not None and size is not None and size > max_bytes:
                response["Body"].close()
                raise TooLarge(size, max_bytes)
            if max_bytes is None:
                return response["Body"].read()
            data = response["Body"].read(max_bytes + 1)  # a length the server did not say
            if len(data) > max_bytes:
                response["Body"].close()
                raise TooLarge(size, max_bytes)
            return data
        if max_bytes is not None and "://" not in uri and os.path.isfile(uri):
            size = os.path.getsize(uri)  # refused before any byte is read
            if size > max_bytes:
                raise TooLarge(size, max_bytes)
        _gcs(uri)
        with FileSystems.open(uri, compression_type="uncompressed") as handle:
            if max_bytes is None:
                return handle.read()
            data = handle.read(max_bytes + 1)
            if len(data) > max_bytes:
                raise TooLarge(_size(uri), max_bytes)
            return data
    except StorageError:
        raise
    except Exception as err:  # botocore, IOError, Beam's BeamIOError all mean "not readable"
        raise StorageError(f"{type(err).__name__}: {err}") from None


def open_stream(uri: str, s3: S3Config = S3Config()) -> io.RawIOBase:
    """A forward-only binary stream (for tar packages too large to hold in memory)."""
    try:
        if is_s3(uri):
            bucket, key = split_s3(uri)
            return _s3_client(s3).get_object(Bucket=bucket, Key=key)["Body"]
        _gcs(uri)
        return FileSystems.open(uri, compression_type="uncompressed")
    except Exception as err:
        raise StorageError(f"{type(err).__name__}: {err}") from None


def exists(uri: str, s3: S3Config = S3Config()) -> bool:
    if is_s3(uri):
        bucket, key = split_s3(uri)
        try:
            _s3_client(s3).head_object(Bucket=bucket, Key=key)
            return True
        except Exception:
            return False
    _gcs(uri)
    return FileSystems.exists(uri)


def list_prefix(prefix: str, s3: S3Config = S3Config(), folder: bool = True) -> Iterator[FileInfo]:
    """Every file under a folder (recursively), with size and modification time.

    On S3 `folder=False` lists a raw key prefix ("PMC1" also matches "PMC12/..."); a folder
    ("PMC1.1") never matches its neighbours ("PMC1.10/...").
    """
    if is_s3(prefix):
        bucket, key = split_s3(prefix)
        if folder and key and not key.endswith("/"):
            key += "/"
        paginator = _s3_client(s3).get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=key):
            for obj in page.get("Contents", []):
                yield FileInfo(
                    f"s3://{bucket}/{obj['Key']}", obj["Size"], _iso(obj["LastModified"])
                )
        return
    if "://" not in prefix:
        root = prefix
        if os.path.isdir(root):
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames.sort()
                for name in sorted(filenames):
                    path = os.path.join(dirpath, name)
                    stat = os.stat(path)
                    yield FileInfo(path, stat.st_size, _iso(stat.st_mtime))
            return
    _gcs(prefix)
    pattern = prefix.rstrip("/") + "/**" if not prefix.endswith("*") else prefix
    for result in FileSystems.match([pattern])[0].metadata_list:
        yield FileInfo(
            result.path, result.size_in_bytes, _iso(result.last_updated_in_seconds or None)
        )


def glob(pattern: str, s3: S3Config = S3Config()) -> list[FileInfo]:
    """Files matching a glob (`*`, `**`, `?`); a plain path matches itself."""
    _gcs(pattern)
    if not any(ch in pattern for ch in "*?["):
        if is_s3(pattern):
            return [f for f in list_prefix(pattern, s3, folder=False) if f.uri == pattern]
        if FileSystems.exists(pattern):
            matched = FileSystems.match([pattern])[0].metadata_list
            return [
                FileInfo(m.path, m.size_in_bytes, _iso(m.last_updated_in_seconds or None))
                for m in matched
            ]
        return []
    if is_s3(pattern):
        literal = pattern.split("*")[0].split("?")[0].split("[")[0]
        return sorted(
            (
                f
                for f in list_prefix(literal, s3, folder=False)
                if fnmatch.fnmatchcase(f.uri, pattern)
            ),
            key=lambda f: f.uri,
        )
    matched = FileSystems.match([pattern])[0].metadata_list
    return sorted(
        (
            FileInfo(m.path, m.size_in_bytes, _iso(m.last_updated_in_seconds or None))
            for m in matched
        ),
        key=lambda f: f.uri,
    )


def write_bytes(uri: str, data, s3: S3Config = S3Config()) -> None:
    """Write bytes, or a list of byte strings one after the other (no joined copy)."""
    chunks = [data] if isinstance(data, (bytes, bytearray, memoryview)) else data
    if is_s3(uri):
        bucket, key = split_s3(uri)
        _s3_client(s3).put_object(Bucket=bucket, Key=key, Body=b"".join(chunks))
        return
    if "://" not in uri:
        os.makedirs(os.path.dirname(os.path.abspath(uri)), exist_ok=True)
    with FileSystems.create(uri, compression_type="uncompressed") as handle:
        for chunk in chunks:
            handle.write(chunk)


def sha256_of(uri: str, s3: S3Config = S3Config()) -> str | None:
    """sha256 hex of an existing file, None where there is none."""
    import hashlib

    if not exists(uri, s3):
        return None
    digest = hashlib.sha256()
    with open_stream(uri, s3) as stream:
        while chunk := stream.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


class AtomicWriter:
    """A file written in chunks aside and moved into place by commit(): a half-written file
    never has the final name, and abort() (or an error) leaves no trace.

    s3:// objects appear whole on PUT, so their chunks are held and sent on commit.
    """

    def __init__(self, uri: str, s3: S3Config = S3Config()):
        self.uri, self.s3 = uri, s3
        self.chunks: list | None = None
        self.handle = None
        if is_s3(uri):
            self.chunks = []
            return
        if "://" in uri:
            head, _, name = uri.rpartition("/")
            self.aside = f"{head}/_{name}.inprogress"
        else:
            head, name = os.path.split(uri)
            os.makedirs(head or ".", exist_ok=True)
            self.aside = os.path.join(head, f"_{name}.inprogress")
        self.handle = FileSystems.create(self.aside, compression_type="uncompressed")
        self.done = False

    def write(self, chunk) -> None:
        if self.chunks is not None:
            self.chunks.append(bytes(chunk))
        else:
            self.handle.write(chunk)

    def commit(self) -> None:
        if self.chunks is not None:
            write_bytes(self.uri, b"".join(self.chunks), self.s3)
            self.chunks = []
            return
        self.handle.close()
        self.done = True
        # The rename replaces an older file in one step: no moment without a complete file.
        FileSystems.rename([self.aside], [self.uri])

    def abort(self) -> None:
        """Drop what was written (nothing once committed)."""
        if self.chunks is not None:
            self.chunks = []
            return
        if self.done:
            return
        self.done = True
        self.handle.close()
        if FileSystems.exists(self.aside):
            FileSystems.delete([self.aside])


def atomic_write(uri: str, chunks, s3: S3Config = S3Config()) -> None:
    """Write chunks aside, then move into place (see AtomicWriter)."""
    writer = AtomicWriter(uri, s3)
    try:
        for chunk in chunks:
            writer.write(chunk)
    except BaseException:
        writer.abort()
        raise
    writer.commit()


def remove_tree(uri: str, s3: S3Config = S3Config()) -> None:
    """Delete a folder and everything under it (object stores: every object of the prefix)."""
    if "://" not in uri:
        import shutil

        shutil.rmtree(uri, ignore_errors=True)
        return
    files = [f.uri for f in list_prefix(uri.rstrip("/") + "/", s3)]
    if is_s3(uri):
        bucket, _ = split_s3(uri)
        client = _s3_client(s3)
        for start in range(0, len(files), 1000):
            keys = [{"Key": split_s3(f)[1]} for f in files[start : start + 1000]]
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
    elif files:
        FileSystems.delete(files)


def remove(uri: str, s3: S3Config = S3Config()) -> None:
    """Delete a file or a folder, whichever `uri` names (nothing if neither exists)."""
    if exists(uri, s3) and not ("://" not in uri and os.path.isdir(uri)):
        if is_s3(uri):
            bucket, key = split_s3(uri)
            _s3_client(s3).delete_object(Bucket=bucket, Key=key)
        else:
            FileSystems.delete([uri])
    remove_tree(uri, s3)
