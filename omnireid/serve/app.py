"""The gallery search HTTP API (FastAPI): search by image, add and remove gallery items.

Every endpoint but ``GET /health`` needs ``Authorization: Bearer <token>`` (the OpenAPI schema and
its docs page included). Request bodies are bounded (413 past ``max_upload_bytes``, checked while
reading, not only from ``Content-Length``), images are bounded in pixels, and an unusable image or
field is a 400 with a message. Images are sent either as ``multipart/form-data`` (file field
``image``) or as JSON (``"image"``: base64). Model calls are micro-batched
(:mod:`omnireid.serve.batching`); index changes are durable before the reply
(:mod:`omnireid.serve.index`).
"""
from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from .batching import MicroBatcher
from .encoder import BadImageError, ImageEncoder, decode_image
from .index import GalleryIndex, GalleryIndexError

logger = logging.getLogger(__name__)


@dataclass
class ServeSettings:
    """Limits and knobs of one server; ``token`` None disables authentication (explicitly insecure)."""

    token: str | None
    max_upload_bytes: int = 10 * 2**20
    max_image_pixels: int = 40_000_000
    max_k: int = 1000
    max_batch: int = 32
    max_wait_ms: float = 2.0
    compact_every: int = 10_000  # changes since the snapshot before the index is compacted into a new one


# ------------------------------------------------------------------------------------------------
# response models (they make the OpenAPI schema)
# ------------------------------------------------------------------------------------------------
class Hit(BaseModel):
    id: str
    score: float = Field(description="cosine similarity, higher is more similar")
    metadata: dict[str, Any]


class SearchResponse(BaseModel):
    k: int
    results: list[Hit]


class GalleryItem(BaseModel):
    id: str
    metadata: dict[str, Any]


class GalleryChange(BaseModel):
    id: str
    gallery_size: int


class Health(BaseModel):
    status: str
    gallery_size: int


class Problem(BaseModel):
    detail: str


_ERRORS = {400: {"model": Problem, "description": "bad image or field"},
           401: {"model": Problem, "description": "missing or wrong bearer token"},
           413: {"model": Problem, "description": "request body too large"}}


def _image_body(extra: dict[str, Any]) -> dict:
    """OpenAPI request body: multipart with a file, or JSON with base64."""
    multipart = {"type": "object", "required": ["image"],
                 "properties": {"image": {"type": "string", "format": "binary"},
                                **{k: {"type": v["type"], "description": v["description"]} for k, v in extra.items()}}}
    as_json = {"type": "object", "required": ["image"],
               "properties": {"image": {"type": "string", "format": "byte", "description": "base64 image file"},
                              **extra}}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": multipart},
                                                          "application/json": {"schema": as_json}}}}


# ------------------------------------------------------------------------------------------------
# request body size limit (ASGI middleware: counts bytes as they arrive)
# ------------------------------------------------------------------------------------------------
class _BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    """413 for a body larger than ``limit`` bytes, by ``Content-Length`` or while it streams in."""

    def __init__(self, app, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await self._reject(send)
        received = 0
        started = False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _BodyTooLarge()
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await self._reject(send)

    async def _reject(self, send) -> None:
        body = json.dumps({"detail": f"request body larger than {self.limit} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


# ------------------------------------------------------------------------------------------------
# the app
# ------------------------------------------------------------------------------------------------
def create_app(index: GalleryIndex, encoder: ImageEncoder, settings: ServeSettings) -> FastAPI:
    """The API over ``index`` (owned: compacted and closed at shutdown) and ``encoder``."""
    batcher = MicroBatcher(encoder, max_batch=settings.max_batch, max_wait_ms=settings.max_wait_ms)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()
            await run_in_threadpool(index.close)

    app = FastAPI(title="omnireid gallery search", version="1", lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None,
                  description="Search a gallery by image, add and remove items. Bearer token on every "
                              "endpoint but /health.")
    app.state.batcher = batcher
    app.state.index = index
    bearer = HTTPBearer(auto_error=False, description="the server's token (OMNIREID_SERVE_TOKEN or --token-file)")

    async def require_token(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if settings.token is None:
            return
        if credentials is None or not hmac.compare_digest(credentials.credentials.encode(), settings.token.encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    auth = [Depends(require_token)]

    @app.exception_handler(_BodyTooLarge)
    async def too_large(request: Request, exc: _BodyTooLarge):
        return JSONResponse({"detail": f"request body larger than {settings.max_upload_bytes} bytes"},
                            status_code=413, headers={"connection": "close"})

    @app.exception_handler(BadImageError)
    async def bad_image(request: Request, exc: BadImageError):
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"detail": problems}, status_code=400)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception):  # a bug: logged with its traceback, never sent
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal server error"}, status_code=500)

    async def features_of(data: bytes) -> np.ndarray:
        image = await run_in_threadpool(decode_image, data, settings.max_image_pixels)
        return await batcher.submit(await run_in_threadpool(encoder.prepare, image))

    @app.get("/health", response_model=Health, tags=["service"])
    async def health() -> Health:
        return Health(status="ok", gallery_size=len(index))

    @app.post("/search", response_model=SearchResponse, dependencies=auth, tags=["search"], responses=_ERRORS,
              openapi_extra=_image_body({"k": {"type": "integer", "description": "number of results (default 10)"}}))
    async def search(request: Request) -> SearchResponse:
        """The ``k`` gallery items most similar to the image, best first."""
        data, fields = await _read_image_request(request, settings)
        k = _int_field(fields, "k", 10, 1, settings.max_k)
        feature = await features_of(data)
        hits = await run_in_threadpool(index.search, feature[None, :], k)
        return SearchResponse(k=k, results=[Hit(id=h.id, score=h.score, metadata=h.meta) for h in hits[0]])

    @app.post("/gallery", status_code=201, response_model=GalleryChange, dependencies=auth, tags=["gallery"],
              responses={**_ERRORS, 409: {"model": Problem, "description": "the id is already in the gallery"}},
              openapi_extra=_image_body({"id": {"type": "string", "description": "the new item's id"},
                                         "metadata": {"type": "object", "description": "JSON object stored with "
                                                      "the item (a JSON string in multipart)"}}))
    async def add(request: Request) -> GalleryChange:
        """Add an image to the gallery; the reply comes after the change is on disk (fsync'ed)."""
        data, fields = await _read_image_request(request, settings)
        item_id = fields.get("id")
        if not isinstance(item_id, str) or not item_id.strip():
            raise HTTPException(400, "field 'id' (a non-empty string) is required")
        metadata = _metadata_field(fields)
        if item_id in index:  # checked again, atomically, by index.add
            raise HTTPException(409, f"id {item_id!r} is already in the gallery")
        feature = await features_of(data)
        try:
            await run_in_threadpool(_add_and_maybe_compact, index, item_id, feature, metadata, settings)
        except GalleryIndexError as exc:
            raise HTTPException(409, str(exc)) from None
        return GalleryChange(id=item_id, gallery_size=len(index))

    @app.get("/gallery/{item_id:path}", response_model=GalleryItem, dependencies=auth, tags=["gallery"],
             responses={401: _ERRORS[401], 404: {"model": Problem, "description": "unknown id"}})
    async def get_item(item_id: str) -> GalleryItem:
        meta = index.get(item_id)
        if meta is None:
            raise HTTPException(404, f"id {item_id!r} is not in the gallery")
        return GalleryItem(id=item_id, metadata=meta)

    @app.delete("/gallery/{item_id:path}", response_model=GalleryChange, dependencies=auth, tags=["gallery"],
                responses={401: _ERRORS[401], 404: {"model": Problem, "description": "unknown id"}})
    async def remove(item_id: str) -> GalleryChange:
        """Remove an item; the reply comes after the change is on disk."""
        try:
            await run_in_threadpool(index.remove, [item_id])
        except GalleryIndexError:
            raise HTTPException(404, f"id {item_id!r} is not in the gallery") from None
        return GalleryChange(id=item_id, gallery_size=len(index))

    @app.get("/openapi.json", include_in_schema=False, dependencies=auth)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=auth)
    async def docs():
        return get_swagger_ui_html(openapi_url="/openapi.json", title="omnireid gallery search")

    app.add_middleware(BodySizeLimit, limit=settings.max_upload_bytes)
    return app


def _add_and_maybe_compact(index: GalleryIndex, item_id: str, feature: np.ndarray, metadata: dict,
                           settings: ServeSettings) -> None:
    index.add([item_id], feature[None, :], [metadata], durable=True)
    if index.unsaved >= settings.compact_every:
        index.compact()


async def _read_image_request(request: Request, settings: ServeSettings) -> tuple[bytes, dict[str, Any]]:
    """(image bytes, other fields) from a multipart or JSON body."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        try:
            form = await request.form(max_files=1, max_fields=16)
        except _BodyTooLarge:
            raise
        except Exception as exc:  # noqa: BLE001 - malformed multipart bodies raise several types
            raise HTTPException(400, f"malformed multipart body: {exc}") from None
        upload = form.get("image")
        if upload is None or isinstance(upload, str):
            raise HTTPException(400, "the multipart body needs a file field 'image'")
        data = await upload.read()
        return data, {k: v for k, v in form.items() if k != "image"}
    if content_type == "application/json":
        try:
            body = json.loads(await request.body())
        except ValueError as exc:
            raise HTTPException(400, f"the body is not valid JSON: {exc}") from None
        if not isinstance(body, dict) or not isinstance(body.get("image"), str):
            raise HTTPException(400, "the JSON body must be an object with a base64 string 'image'")
        try:
            data = base64.b64decode(body["image"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise HTTPException(400, f"'image' is not valid base64: {exc}") from None
        return data, {k: v for k, v in body.items() if k != "image"}
    raise HTTPException(415, "send multipart/form-data with a file field 'image', or application/json with a "
                             "base64 'image'")


def _int_field(fields: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = fields.get(name, default)
    try:
        number = int(value)
        if isinstance(value, float) or str(number) != str(value).strip():
            raise ValueError
    except (TypeError, ValueError):
        raise HTTPException(400, f"'{name}' must be an integer, got {value!r}") from None
    if not low <= number <= high:
        raise HTTPException(400, f"'{name}' must be between {low} and {high}, got {number}")
    return number


def _metadata_field(fields: dict[str, Any]) -> dict:
    value = fields.get("metadata", {})
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise HTTPException(400, f"'metadata' is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise HTTPException(400, "'metadata' must be a JSON object")
    return value
