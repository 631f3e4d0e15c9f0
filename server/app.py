"""The HTTP service: `create_app(dataset_uri, index_uri)` -> a FastAPI app. Beam-free.

Everything is loaded once, here, before the app serves: the dataset's manifest
(DatasetFiles), the index (faiss files, SQLite), the embedding model the index names. A
dataset or index that cannot be served fails here, in one line (IndexUnusable, or the
loader's own error), not on the first request.

Read-only by construction: every route is a GET but /search/image, which reads its upload
into memory (bounded) and writes nothing; no route builds a path from request text (shards
are looked up in the manifest, page assets in a fixed list).

Routes: /search, /search/image, /facets, /healthz, /api/manifest, the shard and sample routes
of server.shards, / (the search page) and /page/<asset>. OpenAPI at /openapi.json, docs at
/docs (FastAPI's own).
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse

from server import errors
from server.errors import ApiError
from server.index_files import IndexFiles, IndexUnusable, check_dataset
from server.limits import MULTIPART_SLACK, BodyLimit, Limits
from server.search import Searcher
from transforms import storage

log = logging.getLogger(__name__)

PAGE = Path(__file__).resolve().parent / "page"
# The page's files, by the name a request may use: nothing else under PAGE is served.
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
UPLOAD_FIELD = "file"

_UPLOAD_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": [UPLOAD_FIELD],
                "properties": {UPLOAD_FIELD: {"type": "string", "format": "binary"}},
            }
        }
    },
}


def load_embedder(index: IndexFiles, s3: storage.S3Config, limits: Limits):
    """The model the index's vectors were made with (IDX/manifest.json's `model`, which is
    the embed run's embed_model.json)."""
    from transforms.embed import models

    model = index.manifest.get("model") or {}
    if not model.get("model"):
        raise IndexUnusable(f"{index.uri}: the manifest names no embedding model")
    # One query at a time: a batch of 1 (the embed stage pads to its batch size; the last
    # bits of a vector may differ, the neighbours do not).
    return models.load_embedder(
        model["model"], model.get("weights"), "auto", 1, s3, max_pixels=limits.max_pixels
    )


def create_app(
    dataset_uri: str,
    index_uri: str,
    s3: storage.S3Config = storage.S3Config(),
    limits: Limits = Limits(),
) -> FastAPI:
    from server import shards
    from server.dataset import DatasetFiles

    index = IndexFiles(index_uri, s3)
    try:
        files = DatasetFiles(dataset_uri, s3)
    except Exception as err:
        raise IndexUnusable(f"{dataset_uri} is not a dataset: manifest.json: {err}") from None
    check_dataset(index, files)
    searcher = Searcher(files, index, load_embedder(index, s3, limits), limits)
    searcher.facets()  # one pass over the samples table now, not on a first request

    app = FastAPI(
        title="biomedica",
        summary="Search and stream a BIOMEDICA-style image-caption dataset",
        version=str(index.manifest.get("version", 1)),
    )
    errors.install(app)
    app.add_middleware(BodyLimit, limit=limits.max_upload_bytes + MULTIPART_SLACK)
    app.state.searcher, app.state.files, app.state.index = searcher, files, index
    app.include_router(shards.router(files, index.locate, limits))

    @app.get("/search", tags=["search"])
    def search(
        q: str = Query("", description="words searched in captions, in-line references, titles"),
        k: int = Query(20, description=f"results, 1..{limits.max_k}"),
        where: str | None = Query(None, description="filter, the language of `subset --where`"),
        semantic: bool = Query(True, description="also search by meaning (text-tower models)"),
    ):
        return searcher.search(q, k, where, semantic)

    @app.post("/search/image", tags=["search"], openapi_extra={"requestBody": _UPLOAD_BODY})
    async def search_image(
        request: Request,
        k: int = Query(20, description=f"results, 1..{limits.max_k}"),
        where: str | None = Query(None, description="filter, the language of `subset --where`"),
    ):
        # The form is parsed here, not by a File() parameter: BodyLimit's refusal, raised
        # while the body streams in, must reach the error handler as itself (FastAPI turns
        # errors of its own form parsing into a generic 400).
        try:
            form = await request.form(max_files=1, max_fields=4)
        except ApiError:
            raise
        except Exception:
            raise ApiError(
                400, "image_undecodable", f"send the image as multipart field {UPLOAD_FIELD!r}"
            ) from None
        try:
            upload = form.get(UPLOAD_FIELD)
            if upload is None or isinstance(upload, str):
                raise ApiError(
                    400, "image_undecodable", f"no file in multipart field {UPLOAD_FIELD!r}"
                )
            data = await upload.read(limits.max_upload_bytes + 1)
            name = upload.filename or UPLOAD_FIELD
        finally:
            await form.close()
        return await run_in_threadpool(searcher.search_image, data, name, k, where)

    @app.get("/facets", tags=["search"])
    def facets():
        return searcher.facets()

    @app.get("/healthz", tags=["service"])
    def healthz():
        return {"status": "ok", "samples": index.samples}

    @app.get("/api/manifest", tags=["service"])
    def manifest():
        return {"dataset": files.manifest, "index": index.manifest}

    @app.get("/", include_in_schema=False)
    def page():
        return asset("index.html")

    @app.get("/page/{name}", include_in_schema=False)
    def asset(name: str):
        media = ASSETS.get(name)
        path = PAGE / name if media else None
        if path is None or not path.is_file():
            return JSONResponse(
                errors.body(404, "not_found", f"no page asset {name!r}"), status_code=404
            )
        return FileResponse(path, media_type=media)

    return app
