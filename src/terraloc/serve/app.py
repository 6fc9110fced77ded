"""The FastAPI application: REST API, web page, health checks and docs.

``create_app(settings, loader)`` returns an app whose model is loaded in a background thread at
start-up (``/readyz`` answers 503 until it is ready). Uploads are read into memory, sniffed,
checked against the byte and pixel limits, then decoded and predicted in a worker thread of a
bounded :class:`~terraloc.serve.queue.InferenceQueue`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Query, Request, Security
from fastapi.middleware.cors import CORSMiddleware
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.requests import ClientDisconnect

import terraloc
from terraloc.config import package_data
from terraloc.serve.images import decode_upload
from terraloc.serve.middleware import (
    BodyLimitMiddleware,
    BodyTimeout,
    BodyTimeoutMiddleware,
    PayloadTooLarge,
    RequestContextMiddleware,
)
from terraloc.serve.predictor import Predictor
from terraloc.serve.public import public_paths
from terraloc.serve.queue import InferenceQueue, QueueFull
from terraloc.serve.settings import ServeSettings
from terraloc.serve.sniff import UnprocessableImage, UnsupportedMedia, inspect_image
from terraloc.serve.uploads import BadRequest, FileTooLarge, Upload, clip, read_uploads

log = logging.getLogger("terraloc.serve")
STATIC_DIR = Path(__file__).resolve().parent / "static"


class NotReady(RuntimeError):
    """The model is still loading or failed to load (HTTP 503)."""


class UploadsFull(RuntimeError):
    """Too many request bodies are being read at once (HTTP 503)."""


class Unauthorized(RuntimeError):
    """Missing or wrong API key (HTTP 401)."""


class ServiceState:
    """The loaded predictor (or why it is not there yet) and the inference queue."""

    def __init__(self, settings: ServeSettings, loader: Callable[[], Predictor]) -> None:
        self.settings = settings
        self.loader = loader
        self.predictor: Predictor | None = None
        self.description: dict[str, Any] = {}
        self.load_error: str | None = None
        self.load_seconds: float | None = None
        self.queue = InferenceQueue(settings.workers, settings.queue_size)
        self.started = time.time()
        self._loaded = threading.Event()

    def load(self) -> None:
        """Load the model (run in a background thread at start-up)."""
        t0 = time.perf_counter()
        log.info("loading model", extra={"event": "model_loading"})
        try:
            predictor = self.loader()
            description = public_paths(predictor.describe())
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.error("model failed to load", extra={"event": "model_failed", "error": self.load_error})
        else:
            self.description = description
            self.predictor = predictor
            self.load_seconds = round(time.perf_counter() - t0, 3)
            log.info("model ready", extra={"event": "model_ready", "load_seconds": self.load_seconds})
        finally:
            self._loaded.set()

    def wait_loaded(self, timeout: float | None = None) -> bool:
        """Block until loading finished (successfully or not); True if it finished."""
        return self._loaded.wait(timeout)

    def require(self) -> Predictor:
        if self.predictor is None:
            raise NotReady(f"model failed to load: {self.load_error}" if self.load_error else "model is loading")
        return self.predictor


def _error(status: int, message: str, request: Request, headers: dict[str, str] | None = None) -> JSONResponse:
    rid = request.scope.get("state", {}).get("request_id")
    return JSONResponse({"detail": message, "request_id": rid}, status_code=status, headers=headers)


def _error_record(name: str, message: str, model: dict[str, Any]) -> dict[str, Any]:
    """A failed image: the keys of ``ImagePrediction.to_json()``, no candidates, ``error`` set."""
    return {
        "image": name,
        "lat": None,
        "lon": None,
        "probability": None,
        "city": None,
        "admin1": None,
        "country": None,
        "candidates": [],
        "error": message,
        "width": None,
        "height": None,
        "model": model,
    }


_UPLOAD_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {
                    "file": {"type": "string", "format": "binary", "description": "the photo (JPEG, PNG, ...)"},
                    "top_k": {"type": "integer", "minimum": 1, "description": "number of candidate locations"},
                },
            }
        },
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["image"],
                "properties": {
                    "image": {"type": "string", "description": "base64 image bytes (a data: URL is accepted)"},
                    "name": {"type": "string", "description": "label echoed as 'image' in the result"},
                    "top_k": {"type": "integer", "minimum": 1},
                },
            }
        },
    },
}
_BATCH_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {
                    "file": {"type": "array", "items": {"type": "string", "format": "binary"}},
                    "top_k": {"type": "integer", "minimum": 1},
                },
            }
        },
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["images"],
                "properties": {
                    "images": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {"image": {"type": "string"}, "name": {"type": "string"}},
                        },
                    },
                    "top_k": {"type": "integer", "minimum": 1},
                },
            }
        },
    },
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or wrong API key"},
    413: {"description": "upload larger than the limit"},
    415: {"description": "not an image (content sniffed, not the file name) or unsupported Content-Type"},
    422: {"description": "missing field, bad top_k, truncated/corrupt image, or too many pixels"},
    503: {"description": "model not loaded yet, or inference queue full (see Retry-After)"},
}


def create_app(settings: ServeSettings, loader: Callable[[], Predictor] | Predictor) -> FastAPI:
    """Build the application.

    Args:
        settings: limits and switches.
        loader: a zero-argument callable returning the :class:`Predictor` (called in a background
            thread at start-up), or an already loaded predictor.
    """
    if isinstance(loader, Predictor) and not isinstance(loader, type):
        ready: Predictor = loader
        load_fn: Callable[[], Predictor] = lambda: ready  # noqa: E731
    else:
        load_fn = loader  # type: ignore[assignment]
    state = ServiceState(settings, load_fn)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        threading.Thread(target=state.load, name="terraloc-model-loader", daemon=True).start()
        yield
        state.queue.shutdown()

    app = FastAPI(
        title="terraloc",
        version=terraloc.__version__,
        description="Tell where on Earth a photo was taken. Upload a photo to `POST /v1/predict`; "
        "the answer is the same JSON as `terraloc predict --format json`.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.terraloc = state

    # --- errors: each user-facing exception maps to a status and extra headers -----------------
    def _handler(status: int | None, headers: Callable[[Any], dict[str, str] | None]) -> Any:
        async def handle(request: Request, exc: Exception) -> JSONResponse:
            # status None: the exception carries its own (BadRequest and its subclasses)
            code = status if status is not None else int(getattr(exc, "status", 400))
            return _error(code, str(exc), request, headers(exc))

        return handle

    close = {"Connection": "close"}
    busy = {"Retry-After": "1"}
    error_map: list[tuple[type[Exception], int | None, Callable[[Any], dict[str, str] | None]]] = [
        (PayloadTooLarge, 413, lambda _e: close),
        (BodyTimeout, 408, lambda _e: close),
        (UploadsFull, 503, lambda _e: busy),
        (FileTooLarge, 413, lambda _e: close),
        (BadRequest, None, lambda _e: None),
        (UnsupportedMedia, 415, lambda _e: None),
        (UnprocessableImage, 422, lambda _e: None),
        (QueueFull, 503, lambda e: {"Retry-After": str(e.retry_after)}),
        (NotReady, 503, lambda _e: {"Retry-After": "5"}),
        (Unauthorized, 401, lambda _e: {"WWW-Authenticate": 'Bearer realm="terraloc"'}),
    ]
    for exc_type, status, headers in error_map:
        app.add_exception_handler(exc_type, _handler(status, headers))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        # Anything unexpected still answers JSON (and is logged with its traceback).
        log.error("unhandled error", exc_info=exc, extra={"event": "error"})
        return _error(500, f"internal error ({type(exc).__name__})", request)

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, exc: ClientDisconnect) -> Response:
        log.info("client disconnected", extra={"event": "client_disconnect"})
        return Response(status_code=499)

    # --- auth -------------------------------------------------------------------------------
    expected = settings.api_key.encode("utf-8") if settings.api_key else None

    def check_key(request: Request) -> None:
        if expected is None:
            return
        auth = request.headers.get("authorization", "")
        given = auth[7:].strip() if auth[:7].lower() == "bearer " else request.headers.get("x-api-key", "")
        # Constant-time comparison; the lengths differ for most wrong keys, which compare_digest
        # also handles without leaking where they differ.
        if not given or not hmac.compare_digest(given.encode("utf-8"), expected):
            raise Unauthorized("missing or wrong API key (send 'Authorization: Bearer KEY' or 'X-API-Key: KEY')")

    if expected is None:
        require_key: Callable[..., None] = check_key
    else:
        # Declared as security schemes so /docs offers "Authorize"; the check itself is check_key.
        bearer = HTTPBearer(auto_error=False, description="the server's API key")
        header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the server's API key")

        def require_key(
            request: Request,
            _b: HTTPAuthorizationCredentials | None = Security(bearer),
            _h: str | None = Security(header),
        ) -> None:
            check_key(request)

    # --- prediction -------------------------------------------------------------------------
    def parse_top_k(query_value: int | None, fields: dict[str, str]) -> int:
        raw: Any = query_value if query_value is not None else fields.get("top_k")
        if raw is None or raw == "":
            return settings.default_top_k
        try:
            k = int(raw)
        except (TypeError, ValueError):
            raise BadRequest(f"top_k must be an integer, got {clip(repr(raw))}") from None
        if not 1 <= k <= settings.max_top_k:
            raise BadRequest(f"top_k must be between 1 and {settings.max_top_k}, got {k}")
        return k

    def run_job(predictor: Predictor, uploads: list[Upload], top_k: int, strict: bool) -> list[dict[str, Any]]:
        """Worker thread: decode each upload and predict the good ones in one batch."""
        images: list[Image.Image] = []
        slots: list[int] = []
        results: list[dict[str, Any] | None] = [None] * len(uploads)
        model = state.description.get("model", {})
        public_model: dict[str, Any] | None = None
        for i, up in enumerate(uploads):
            try:
                images.append(decode_upload(up.data, up.name))
                slots.append(i)
            except UnprocessableImage as exc:
                if strict:
                    raise
                results[i] = _error_record(up.name, str(exc), model)
        if images:
            preds = predictor.predict(images, top_k)
            for i, pred in zip(slots, preds, strict=True):
                pred = dict(pred)
                pred["image"] = uploads[i].name
                if "model" in pred:  # never show the server's absolute paths
                    if public_model is None:
                        public_model = public_paths(pred["model"])
                    pred["model"] = public_model
                results[i] = pred
        return [r for r in results if r is not None]

    # Bodies being read are bounded on their own (memory: max_uploads x the body limit), apart
    # from the inference queue: a slow upload holds an upload slot until BodyTimeoutMiddleware
    # cuts it off, never an inference slot, so it cannot make a fast client wait.
    uploading = {"n": 0, "refused": 0}

    async def read_body(request: Request, batch: bool) -> Any:
        if uploading["n"] >= settings.max_uploads:
            uploading["refused"] += 1
            raise UploadsFull(f"{settings.max_uploads} uploads are already in progress; retry in 1 s")
        uploading["n"] += 1
        try:
            return await read_uploads(request, settings.max_upload_bytes, batch, settings.max_json_depth)
        finally:
            uploading["n"] -= 1

    async def predict_uploads(request: Request, top_k_q: int | None, batch: bool) -> list[dict[str, Any]]:
        predictor = state.require()
        body = await read_body(request, batch)
        if not batch and len(body.files) != 1:
            raise BadRequest(f"send exactly one 'file' to /v1/predict ({len(body.files)} given); use /v1/predict/batch")
        if batch:
            if len(body.files) > settings.max_batch_images:
                raise BadRequest(f"{len(body.files)} images in one batch; the limit is {settings.max_batch_images}")
            total = sum(len(f.data) for f in body.files)
            if total > settings.max_batch_bytes:
                raise PayloadTooLarge(settings.max_batch_bytes)
        top_k = parse_top_k(top_k_q, body.fields)
        good: list[Upload] = []
        errors: dict[int, str] = {}
        for i, up in enumerate(body.files):
            try:
                inspect_image(up.data, settings.max_pixels)  # sniff + header: cheap, on the loop
                good.append(up)
            except (UnsupportedMedia, UnprocessableImage) as exc:
                if not batch:
                    raise type(exc)(f"{up.name}: {exc}") from None
                errors[i] = str(exc)
        results = await state.queue.run(run_job, predictor, good, top_k, not batch) if good else []
        if not errors:
            return results
        model = state.description.get("model", {})
        merged: list[dict[str, Any]] = []
        it = iter(results)
        for i, up in enumerate(body.files):
            merged.append(_error_record(up.name, errors[i], model) if i in errors else next(it))
        return merged

    top_k_param = Query(None, ge=1, description="number of candidate locations (default from the server)")

    @app.post(
        "/v1/predict",
        tags=["predict"],
        summary="Locate one photo",
        openapi_extra={"requestBody": _UPLOAD_BODY},
        responses=_ERRORS,
        dependencies=[Depends(require_key)],
    )
    async def predict(request: Request, top_k: int | None = top_k_param) -> JSONResponse:
        """Return the top-k locations for one photo: the object `terraloc predict --format json` writes."""
        results = await predict_uploads(request, top_k, batch=False)
        if results and results[0].get("error"):
            return _error(422, f"{results[0]['image']}: {results[0]['error']}", request)
        return JSONResponse(results[0])

    @app.post(
        "/v1/predict/batch",
        tags=["predict"],
        summary="Locate several photos",
        openapi_extra={"requestBody": _BATCH_BODY},
        responses=_ERRORS,
        dependencies=[Depends(require_key)],
    )
    async def predict_batch(request: Request, top_k: int | None = top_k_param) -> JSONResponse:
        """Return one prediction object per photo, in order; a bad photo gets an `error` and the rest go on."""
        return JSONResponse(await predict_uploads(request, top_k, batch=True))

    @app.get("/v1/models", tags=["service"], summary="Loaded model", dependencies=[Depends(require_key)])
    async def models() -> dict[str, Any]:
        """The loaded model (ids and weight hashes) and the service's limits."""
        state.require()
        limits = asdict(settings)  # secrets and addresses removed below; model paths made public at load
        for secret in ("api_key", "host", "port", "tile_url", "tile_attribution", "cors_origins"):
            limits.pop(secret, None)
        return {"models": [state.description], "limits": limits, "load_seconds": state.load_seconds}

    @app.get("/healthz", tags=["service"], summary="Liveness")
    async def healthz() -> dict[str, Any]:
        """200 while the process serves HTTP, whether or not the model is loaded."""
        return {"status": "ok", "uptime_s": round(time.time() - state.started, 1)}

    @app.get("/readyz", tags=["service"], summary="Readiness", responses={503: {"description": "not ready"}})
    async def readyz() -> JSONResponse:
        """200 once the model is loaded; 503 while it loads or if it failed."""
        body: dict[str, Any] = {
            "queue": state.queue.stats(),
            "uploads": {"in_progress": uploading["n"], "limit": settings.max_uploads, "refused": uploading["refused"]},
        }
        if state.predictor is not None:
            body.update(status="ready", load_seconds=state.load_seconds)
            return JSONResponse(body)
        if state.load_error:
            body.update(status="failed", error=state.load_error)
        else:
            body.update(status="loading")
        return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})

    # --- web page, docs, static assets ------------------------------------------------------
    countries_cache: list[bytes] = []

    @app.get("/ui/countries.geojson", include_in_schema=False)
    async def countries() -> Response:
        if not countries_cache:
            from terraloc.geo.worldmap import countries_geojson

            data = await asyncio.to_thread(countries_geojson)
            countries_cache.append(json.dumps(data, separators=(",", ":")).encode())
        return Response(
            countries_cache[0], media_type="application/geo+json", headers={"Cache-Control": "public, max-age=86400"}
        )

    @app.get("/ui/config.json", include_in_schema=False)
    async def ui_config() -> dict[str, Any]:
        return {
            "version": terraloc.__version__,
            "tile_url": settings.tile_url,
            "tile_attribution": settings.tile_attribution,
            "api_key_required": settings.api_key is not None,
            "max_upload_bytes": settings.max_upload_bytes,
            "default_top_k": settings.default_top_k,
            "max_top_k": settings.max_top_k,
        }

    csp_img = "'self' data: blob:"
    if settings.tile_url:
        from urllib.parse import urlsplit

        parts = urlsplit(settings.tile_url.replace("{s}", "*"))
        if parts.scheme in ("http", "https") and parts.netloc:
            csp_img += f" {parts.scheme}://{parts.netloc}"
    page_csp = (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        f"img-src {csp_img}; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    )

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Content-Security-Policy": page_csp})

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="terraloc API",
            swagger_js_url="/vendor/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url="/vendor/swagger-ui/swagger-ui.css",
            swagger_favicon_url="/static/favicon.svg",
        )

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.mount("/vendor/leaflet", StaticFiles(directory=package_data("vendor", "leaflet")), name="leaflet")
    app.mount("/vendor/swagger-ui", StaticFiles(directory=package_data("vendor", "swagger-ui")), name="swagger-ui")

    # --- middleware (last added runs first) -------------------------------------------------
    app.add_middleware(GZipMiddleware, minimum_size=2048)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    app.add_middleware(BodyLimitMiddleware, limit_for=settings.body_limit)
    app.add_middleware(
        BodyTimeoutMiddleware,
        idle_timeout_s=settings.body_idle_timeout_s,
        min_rate=settings.min_upload_rate,
        grace_s=settings.upload_grace_s,
    )
    app.add_middleware(RequestContextMiddleware)
    return app
