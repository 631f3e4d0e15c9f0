"""Streaming routes: whole shards with HTTP Range, single samples, and filtered subsets as tars.

    GET|HEAD /shards/{group}/{name}.tar   a shard, 200 whole or 206 for one `Range: bytes=...`
    GET /samples/{key}.jpg                a sample's image, read from its tar by offset
    GET /samples/{key}                    a sample's JSON member
    GET /subset?where=...&limit=N         a tar of the matching samples, in id order

A shard is named by lookup in the manifest (group and file name), so no request reaches a
file the manifest does not list. Bytes go out in chunks as they are read: a response never
holds a shard. A missing or damaged shard fails the request that needs it (404
`shard_missing`, 502 `shard_unreadable`); the server goes on serving the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterator

import anyio
import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from server.byte_ranges import Unsatisfiable, content_range, parse_range
from server.dataset import DatasetFiles
from server.errors import ApiError, error_response
from server.limits import Limits
from transforms.shard.webdataset_tar import end_of_archive

TAR = "application/x-tar"
MAX_KEY_CHARS = 512

Locate = Callable[[str], "tuple[str, int, int] | None"]


def merged_spans(places: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    """Byte ranges of one shard that follow each other joined into one (one read each)."""
    spans: list[tuple[str, int, int]] = []
    for shard, offset, size in places:
        if spans and spans[-1][0] == shard and spans[-1][1] + spans[-1][2] == offset:
            spans[-1] = (shard, spans[-1][1], spans[-1][2] + size)
        else:
            spans.append((shard, offset, size))
    return spans


async def read_ahead(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """The chunks of a blocking iterator, each read in a worker thread while the one before
    it is being sent, so reading the file (or object store) and writing the socket overlap.
    """
    loop = asyncio.get_running_loop()
    pending = loop.run_in_executor(None, next, chunks, None)
    try:
        while (chunk := await pending) is not None:
            pending = loop.run_in_executor(None, next, chunks, None)
            yield chunk
    finally:
        # A client gone mid-body cancels the response: let the read in flight end (shielded)
        # before the iterator is closed, which closes its file.
        with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
            await pending
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


def router(files: DatasetFiles, locate: Locate, limits: Limits = Limits()) -> APIRouter:
    api = APIRouter(tags=["stream"])

    # HEAD is the same route kept out of the schema (one operation a path and method there).
    @api.get(
        "/shards/{group}/{name}.tar",
        response_class=Response,
        summary="A WebDataset shard; one HTTP Range (bytes=a-b, a-, -n) gives 206",
    )
    @api.head("/shards/{group}/{name}.tar", response_class=Response, include_in_schema=False)
    def shard(group: str, name: str, request: Request):
        shard = files.shard_of(group, name)
        entry = files.entry(shard)
        size = int(entry["bytes"])
        etag = f'"{entry["sha256"]}"'
        headers = {"Accept-Ranges": "bytes", "ETag": etag}
        asked = request.headers.get("range")
        if_range = request.headers.get("if-range")
        if if_range is not None and if_range.strip() != etag:
            asked = None  # the client holds another version: it gets the whole shard
        try:
            span = parse_range(asked, size)
        except Unsatisfiable as err:
            response = error_response(
                416, "range_not_satisfiable", f"range {err} is outside shard {shard} ({size} bytes)"
            )
            response.headers.update({**headers, "Content-Range": f"bytes */{size}"})
            return response
        start, length = span if span else (0, size)
        status = 206 if span else 200
        if span:
            headers["Content-Range"] = content_range(start, length, size)
        headers["Content-Length"] = str(length)
        if request.method == "HEAD":
            files.check(shard)
            return Response(status_code=status, headers=headers, media_type=TAR)
        # open_range fails here, before the headers, when the shard is missing or cut.
        # DatasetFiles' 1 MiB chunks, one read ahead: 2 and 4 MiB measured no better (the
        # kernel's copies dominate) and slower from a cold disk (bench/shard_streaming.py).
        chunks = read_ahead(files.open_range(shard, start, length))
        return StreamingResponse(chunks, status_code=status, headers=headers, media_type=TAR)

    def members(key: str) -> dict[str, bytes]:
        place = locate(key) if len(key) <= MAX_KEY_CHARS else None
        if place is None:
            raise ApiError(404, "sample_not_found", f"no sample {key[:80]!r} in the dataset")
        return files.sample_members(*place)

    # Registered before /samples/{key}, which would otherwise take "<key>.jpg" as a key.
    @api.get(
        "/samples/{key}.jpg",
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}}},
        summary="A sample's image, read from its shard by offset",
    )
    def sample_image(key: str):
        jpg = members(key).get("jpg")
        if jpg is None:
            raise ApiError(502, "shard_unreadable", f"sample {key} has no jpg member")
        return Response(jpg, media_type="image/jpeg")

    @api.get("/samples/{key}", summary="A sample's JSON member (every field but the image)")
    def sample_json(key: str):
        data = members(key).get("json")
        try:
            return JSONResponse(json.loads(data))
        except (TypeError, ValueError):
            raise ApiError(502, "shard_unreadable", f"sample {key} has no readable JSON") from None

    @api.get(
        "/subset",
        response_class=Response,
        responses={200: {"content": {TAR: {}}}},
        summary="A tar of the samples a filter selects, in id order (at most `limit`)",
    )
    def subset(where: str | None = None, limit: int | None = None):
        cap = limits.max_subset_samples
        if where is not None and len(where) > limits.max_where_chars:
            raise ApiError(
                400,
                "invalid_where",
                f"where is {len(where)} characters; at most {limits.max_where_chars}",
            )
        limit = cap if limit is None else limit
        if not 1 <= limit <= cap:
            raise ApiError(400, "limit_out_of_range", f"limit must be 1..{cap}, not {limit}")
        ids = np.flatnonzero(files.matching(where))
        matching = len(ids)
        spans = merged_spans(files.placements(ids[:limit]))
        for name in dict.fromkeys(s[0] for s in spans):
            files.check(name)  # a shard gone or cut fails the request before any byte is sent
        body = sum(s[2] for s in spans)
        tail = end_of_archive(body)

        def stream() -> Iterator[bytes]:
            for name, offset, size in spans:
                yield from files.open_range(name, offset, size)
            yield tail

        headers = {
            "Content-Length": str(body + len(tail)),
            "Content-Disposition": 'attachment; filename="subset.tar"',
            "X-Subset-Samples": str(min(limit, matching)),
            "X-Subset-Matching": str(matching),
        }
        return StreamingResponse(stream(), headers=headers, media_type=TAR)

    return api
