"""The FastAPI app: the page, the JSON API and its error contract.

Endpoints::

    GET  /                the web page (static/index.html, app.js, style.css; no build step, no CDN)
    GET  /api/models      models, their directions, training image size, config summary; upload limits
    POST /api/translate   multipart field "image"; query model, direction, format, max_side, quality
    GET  /healthz         liveness plus queue figures
    GET  /docs            OpenAPI (FastAPI's usual Swagger UI and /openapi.json)

Every error is JSON ``{"error": message}`` (plus ``valid`` where a name was wrong), with 404 for an
unknown model, 408 for an upload slower than ``body_timeout``, 413 for too many bytes or pixels or
more memory than ``max_request_memory``, 415
for anything that is not a supported image, 422 for bad parameters and 503 with ``Retry-After``
when the inference queue is full.
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

import torch
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from cyclegan.errors import CycleGANError, first_line
from cyclegan.serve.errors import ApiError
from cyclegan.serve.memory import DEFAULT_MAX_REQUEST_MEMORY, plan_request
from cyclegan.serve.models import DIRECTIONS, ServedModel
from cyclegan.serve.upload import ACCEPTED_FORMATS, FIELD, load_upload, open_upload, read_upload
from cyclegan.serve.worker import InferenceQueue, QueueFull
from cyclegan.translate import OUTPUT_FORMATS
from cyclegan.version import __version__

__all__ = ["DEFAULT_BODY_TIMEOUT", "DEFAULT_MAX_PIXELS", "DEFAULT_MAX_UPLOAD_BYTES", "DEFAULT_QUEUE_SIZE",
           "create_app"]

log = logging.getLogger("cyclegan.serve")

DEFAULT_MAX_UPLOAD_BYTES = 20 * 2**20
# 50 MP covers 48 MP phone photos; beyond it a decode alone would hold >150 MB per request.
DEFAULT_MAX_PIXELS = 50_000_000
DEFAULT_QUEUE_SIZE = 8
# The whole upload must arrive within this many seconds: 20 MB at 2.8 Mbit/s, a poor mobile uplink.
DEFAULT_BODY_TIMEOUT = 60.0
MAX_SIDE_LIMIT = 16384

_MEDIA_TYPES = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp"}

# The page loads nothing from elsewhere, so the browser may refuse everything else; blob: and data:
# are the uploaded/translated images and the inline favicon.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

_STATIC = {"app.js": "text/javascript", "style.css": "text/css"}


def _static_text(name: str) -> str:
    return resources.files("cyclegan.serve").joinpath("static", name).read_text(encoding="utf-8")


@dataclass(frozen=True)
class _Job:
    """Everything one translation needs, handed to a worker thread."""

    data: bytes
    translator: Any
    lock: threading.Lock
    max_side: int | None
    fmt: str
    quality: int
    max_pixels: int
    max_request_memory: int


@dataclass(frozen=True)
class _Result:
    body: bytes
    width: int
    height: int
    seconds: float


def _run_job(job: _Job) -> _Result:
    start = time.perf_counter()
    image = open_upload(job.data, max_pixels=job.max_pixels)  # the header only: nothing decoded yet
    # Refused (413) or downscaled here, before the pixels are decoded, when over the memory limit.
    plan = plan_request(job.translator, image.size, limit=job.max_request_memory, max_side=job.max_side,
                        upload_bytes=len(job.data))
    image = load_upload(image)
    translator = plan.translator
    try:
        # One image at a time per network: tiled translation patches the network's norm layers
        # in place for the duration of an image.
        with job.lock:
            out = translator(image)
    except (CycleGANError, ValueError, TypeError) as e:
        raise ApiError(422, f"cannot translate this image ({e})") from None
    except (RuntimeError, MemoryError) as e:
        first = first_line(e, "")
        raise ApiError(500, f"translation failed ({type(e).__name__}: {first})") from None
    pil_format = OUTPUT_FORMATS[job.fmt][0]
    if pil_format == "JPEG" and out.mode != "RGB":
        out = out.convert("RGB")  # JPEG has no alpha; the translation was made on white anyway
    options: dict[str, Any] = {"quality": job.quality} if job.fmt in ("jpg", "webp") else {}
    buf = io.BytesIO()
    out.save(buf, format=pil_format, **options)
    return _Result(body=buf.getvalue(), width=out.width, height=out.height,
                   seconds=time.perf_counter() - start)


def _error(
    status: int, message: str, *, headers: Mapping[str, str] | None = None, **extra: Any
) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status, headers=dict(headers or {}))


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "body"))
        parts.append(f"{loc}: {err.get('msg', 'invalid')}" if loc else str(err.get("msg", "invalid")))
    return "; ".join(parts) or "invalid request"


@dataclass(frozen=True)
class _Limits:
    """What one request may bring and cost; checked once in ``create_app``."""

    max_upload_bytes: int
    max_pixels: int
    body_timeout: float
    max_request_memory: int

    def __post_init__(self) -> None:
        if self.max_upload_bytes < 1 or self.max_pixels < 1:
            raise ValueError("max_upload_bytes and max_pixels must be positive")
        if not self.body_timeout > 0:
            raise ValueError(f"body_timeout must be positive, got {self.body_timeout}")
        if self.max_request_memory < 1:
            raise ValueError(f"max_request_memory must be positive, got {self.max_request_memory}")


def create_app(
    models: Mapping[str, ServedModel],
    *,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    queue_size: int = DEFAULT_QUEUE_SIZE,
    workers: int = 1,
    threads: int | None = None,
    cors_origins: Sequence[str] | None = None,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
    max_request_memory: int = DEFAULT_MAX_REQUEST_MEMORY,
) -> FastAPI:
    """The web app over already loaded ``models`` (name -> ServedModel; the first is the default).

    ``threads`` sets PyTorch's intra-op threads in each worker (None: PyTorch's default).
    ``body_timeout``: seconds an upload may take to arrive (then 408). ``max_request_memory``: the
    bytes one translation may need, estimated from the image header before decoding (serve.memory);
    over it a request is refused with 413, or downscaled when it gave ``max_side``.
    """
    if not models:
        raise ValueError("create_app needs at least one model")
    limits = _Limits(max_upload_bytes=max_upload_bytes, max_pixels=max_pixels, body_timeout=body_timeout,
                     max_request_memory=max_request_memory)
    models = dict(models)
    # OpenMP's thread count is a per-thread setting, so each worker thread sets its own.
    queue = InferenceQueue(workers=workers, queue_size=queue_size,
                           initializer=(lambda: torch.set_num_threads(threads)) if threads else None)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        queue.shutdown()

    app = FastAPI(
        title="cyclegan",
        version=__version__,
        summary="Translate photos with trained CycleGAN generators (e.g. photo -> Ghibli style).",
        lifespan=lifespan,
    )
    app.state.models = models
    app.state.queue = queue
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
            expose_headers=["Retry-After", "Content-Disposition", "X-Image-Width", "X-Image-Height",
                            "X-Processing-Seconds"],
        )
    _add_error_handlers(app)
    _add_page_routes(app)
    _add_api_routes(app, models, queue, limits)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """The error contract: every failure is JSON ``{"error": ...}``, statuses as the module docstring says."""

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.message, headers=exc.headers, **exc.extra)

    @app.exception_handler(QueueFull)
    async def _queue_full(_request: Request, exc: QueueFull) -> JSONResponse:
        return _error(503, str(exc), headers={"Retry-After": str(exc.retry_after)})

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, _validation_message(exc))

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error", exc_info=exc)
        return _error(500, f"internal server error ({type(exc).__name__}); see the server log")


def _add_page_routes(app: FastAPI) -> None:
    """The web page and its two static files, read once from the package."""
    page = {name: _static_text(name) for name in ("index.html", *_STATIC)}

    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page["index.html"], headers=_PAGE_HEADERS)

    def _static_route(name: str, media_type: str) -> None:
        async def serve_static() -> Response:
            return Response(page[name], media_type=media_type, headers={"Cache-Control": "no-cache"})

        app.add_api_route(f"/static/{name}", serve_static, methods=["GET"], include_in_schema=False)

    # Fixed routes for fixed files: no part of a URL is ever looked up on disk.
    for name, media_type in _STATIC.items():
        _static_route(name, media_type)


def _pick(
    models: Mapping[str, ServedModel], model: str | None, direction: str | None
) -> tuple[ServedModel, str]:
    """The requested model (default: the first) and direction (default: its first), or a 404 / 422."""
    name = model if model is not None else next(iter(models))
    served = models.get(name)
    if served is None:
        raise ApiError(404, f"unknown model {name!r}; available: {', '.join(models)}", valid=list(models))
    valid = served.directions
    chosen = direction if direction is not None else valid[0]
    if chosen not in valid:
        what = "direction" if chosen in DIRECTIONS else "unknown direction"
        raise ApiError(422, f"{what} {chosen!r} for model {name!r}; choose from {', '.join(valid)}",
                       valid=valid)
    return served, chosen


_TRANSLATE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {t: {} for t in _MEDIA_TYPES.values()}, "description": "The translated image."},
    404: {"description": "Unknown model (`valid` lists the names)."},
    408: {"description": "The upload did not arrive within the server's body timeout."},
    413: {"description": "Upload over the byte limit, image over the pixel limit, or translating it "
                         "would need more than the memory limit per request (`limit_bytes`, "
                         "`estimate_bytes`, and `fitting_max_side`: the largest max_side that fits)."},
    415: {"description": "Not a supported image (the content is checked, not the name or type)."},
    422: {"description": "Bad parameter, e.g. a direction the model does not have."},
    503: {"description": "Queue full; retry after `Retry-After` seconds."},
}
# FastAPI cannot infer a multipart body it does not parse (serve.upload streams it), so it is declared.
_TRANSLATE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [FIELD],
                    "properties": {FIELD: {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}


def _add_api_routes(
    app: FastAPI, models: dict[str, ServedModel], queue: InferenceQueue, limits: _Limits
) -> None:
    """/healthz, /api/models and /api/translate."""
    default_model = next(iter(models))
    # One image at a time per network (see _run_job).
    locks = {(m.name, d): threading.Lock() for m in models.values() for d in m.directions}

    @app.get("/healthz", summary="Liveness and queue figures")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "models": list(models), "queue": queue.stats()}

    @app.get("/api/models", summary="Models, their directions and the upload limits")
    async def list_models() -> dict[str, Any]:
        return {
            "models": [m.describe() for m in models.values()],
            "default_model": default_model,
            "limits": {
                "max_upload_bytes": limits.max_upload_bytes,
                "max_pixels": limits.max_pixels,
                "max_request_memory": limits.max_request_memory,
                "max_side": MAX_SIDE_LIMIT,
                "accepted": [f.lower() for f in ACCEPTED_FORMATS],
                "formats": list(OUTPUT_FORMATS),
            },
        }

    @app.post("/api/translate", summary="Translate one image at full resolution", response_class=Response,
              responses=_TRANSLATE_RESPONSES, openapi_extra=_TRANSLATE_BODY)
    async def translate(
        request: Request,
        model: str | None = Query(None,
                                  description=f"Model name (default: {default_model}); see /api/models."),
        direction: str | None = Query(None, description="a2b or b2a (default: the model's first direction)."),
        format: Literal["png", "jpg", "webp"] = Query("png", description="Output image format."),
        max_side: int | None = Query(None, ge=1, le=MAX_SIDE_LIMIT,
                                     description="Downscale first so the longer side is at most this (and "
                                                 "further if the server's memory limit needs it)."),
        quality: int = Query(92, ge=1, le=100, description="JPEG / WebP quality."),
    ) -> Response:
        served, chosen = _pick(models, model, direction)
        queue.ensure_space()  # refuse before the upload is read, not after
        try:
            data = await read_upload(request, max_bytes=limits.max_upload_bytes, timeout=limits.body_timeout)
        except ClientDisconnect:
            raise ApiError(400, "the client disconnected during the upload") from None
        job = _Job(data=data, translator=served.translators[chosen], lock=locks[(served.name, chosen)],
                   max_side=max_side, fmt=format, quality=quality, max_pixels=limits.max_pixels,
                   max_request_memory=limits.max_request_memory)
        result: _Result = await queue.submit(lambda: _run_job(job))
        return Response(
            result.body,
            media_type=_MEDIA_TYPES[format],
            headers={
                "Content-Disposition": f'inline; filename="{served.name}-{chosen}.{format}"',
                "Cache-Control": "no-store",
                "X-Image-Width": str(result.width),
                "X-Image-Height": str(result.height),
                "X-Processing-Seconds": f"{result.seconds:.3f}",  # decode + translate + encode
            },
        )
