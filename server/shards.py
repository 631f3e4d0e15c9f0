"""Sample routes over a dataset's shards.

Minimal stand-in written by the search helper (the sample routes only); the streaming
helper's router (shards with Range, subsets) replaces it.
"""

from __future__ import annotations

import json

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from server.errors import ApiError


def router(files, locate) -> APIRouter:
    routes = APIRouter()

    def members(key: str) -> dict[str, bytes]:
        where = locate(key)
        if where is None:
            raise ApiError(404, "sample_not_found", f"no sample {key!r} in this dataset")
        return files.sample_members(*where)

    @routes.get("/samples/{key}.jpg", tags=["samples"])
    def sample_image(key: str):
        return Response(members(key).get("jpg", b""), media_type="image/jpeg")

    @routes.get("/samples/{key}", tags=["samples"])
    def sample_json(key: str):
        return JSONResponse(json.loads(members(key).get("json", b"{}")))

    return routes
