"""tlcore's prediction service: every saved model in a folder, by name, batched by tlcore.Predictor.

Usage::

    tlcore serve --models models/ --port 8000
    TLCORE_MODELS=models/ uvicorn tlcore.api.app:app --host 0.0.0.0 --port 8000
    TLCORE_MODELS=models/ uvicorn api.app:app --port 8000           # from a checkout
    curl -F file=@dog.jpg 'http://127.0.0.1:8000/predict/?model=imagenet'

POST /predict/ (multipart field "file"), POST /predict/batch (fields "files"), GET /models,
GET /health, GET /metrics, GET / (the camera page) and /docs.

Requests wait for their batch in worker threads, so concurrent requests share one forward
pass; images over 2 megapixels decode a few at a time, on at most half the cores, so that a
stream of huge ones cannot starve ordinary photos. Bad input gets a JSON ``{"detail": ...}``: 400 (empty, corrupt, too many pixels),
415 (not JPEG, PNG, BMP or WebP: other formats are refused before any decoder sees them),
413 (body over the upload limit, refused before it is read), 408 (a body that trickles in:
after 30 s it must have averaged 64 KiB/s), 431 (request target and headers over 16 KiB),
404 (unknown model), 503 (the model's queue is full, or the model is not loaded). Anything
else is a 500 whose body holds only a request id; the exception and its traceback go to the log.

Model files are untrusted input: one that cannot be loaded (damaged, not a tlcore model,
a newer format, a pickle carrying code) is refused on its own, and GET /models and
GET /health list it under "rejected" with the reason. The service starts even when every
file is refused; its predictions then answer 503.

``uvicorn tlcore.api.app:app`` (or ``api.app:app``) reads its settings from the environment:
TLCORE_MODELS (the models folder, required), TLCORE_DEFAULT_MODEL, TLCORE_MAX_UPLOAD_MB (10),
TLCORE_MAX_BATCH (16), TLCORE_MAX_DELAY_MS (5), TLCORE_MAX_QUEUE (256), TLCORE_MAX_PIXELS
(40000000), TLCORE_THRESHOLD and TLCORE_MIN_ENERGY (either replaces each model's own "unknown"
rule, as ``tlcore.Predictor``'s arguments do), TLCORE_PRECISION (fp32; bf16, int8 or auto: see
tlcore.precision).
"""
from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, TypeVar, Union

import anyio.to_thread
from fastapi import APIRouter, FastAPI, HTTPException, Query, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

import tlcore

from .body_limit import BodyLimit, HeaderLimit
from .registry import BatchOptions, ModelRegistry, NoModel, ServedModel, UnknownModel
from .uploads import read_files

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
MB = 1024 * 1024
ENV_PREFIX = "TLCORE_"

# The encoded formats tlcore decodes; other bytes are "not an image" (415), not "corrupt" (400).
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM")


@dataclass(frozen=True)
class Settings:
    """Everything a service instance is configured with."""

    models_dir: Path
    default_model: Optional[str] = None
    max_upload_bytes: int = 10 * MB
    batch: BatchOptions = field(default_factory=BatchOptions)


# -- response bodies (they make /docs useful) -------------------------------------------------
class Label(BaseModel):
    label: str
    probability: float


class Prediction(BaseModel):
    prediction: str = Field(description='top label, or "unknown" by the model\'s rule: confidence under '
                                        'its threshold or energy under its min_energy')
    confidence: float = Field(description="probability of the top label")
    top_k: List[Label]
    model: str


class BatchItem(BaseModel):
    filename: str
    status: int = Field(description="200, or the status this image alone would have got")
    prediction: Optional[str] = None
    confidence: Optional[float] = None
    top_k: Optional[List[Label]] = None
    error: Optional[str] = None


class BatchPrediction(BaseModel):
    model: str
    results: List[BatchItem]


class ModelInfo(BaseModel):
    name: str
    arch: str
    classes: List[str]
    num_classes: int
    input_size: int
    threshold: float = Field(description='"unknown" below this confidence (0: never)')
    min_energy: Optional[float] = Field(description='"unknown" below this energy (null: never)')
    default: bool


class RejectedFile(BaseModel):
    file: str = Field(description="the file's name in the models folder")
    reason: str = Field(description="why it is not served")


class ModelList(BaseModel):
    models: List[ModelInfo] = Field(description="every served model")
    rejected: List[RejectedFile] = Field(description="model files that could not be loaded, with why")


class Health(BaseModel):
    status: str = Field(description='"ok", "degraded" (some model files rejected) or "no model loaded"')
    default_model: Optional[str]
    models: Dict[str, Dict[str, object]] = Field(description="each model's batching statistics")
    rejected: List[RejectedFile] = Field(description="model files that could not be loaded, with why")


class Error(BaseModel):
    detail: str


class InternalError(BaseModel):
    detail: str
    request_id: str = Field(description="what the server log records the failure under")


_ERRORS = {code: {"model": Error, "description": why} for code, why in {
    400: "empty or corrupt image, or too many pixels",
    404: "no model of that name",
    408: "request body too slow",
    413: "request body over the upload limit",
    415: "not an image (JPEG, PNG, BMP or WebP)",
    431: "request target and headers too large",
    503: "the model's queue is full (retry later), or the model is not loaded",
}.items()}
_ERRORS[500] = {"model": InternalError, "description": "an internal error, logged under the request id"}


# -- routes -------------------------------------------------------------------------------------
router = APIRouter()


def _served(request: Request, name: Optional[str]) -> ServedModel:
    try:
        return request.app.state.models.get(name)
    except UnknownModel as e:
        raise HTTPException(404, str(e)) from None
    except NoModel as e:
        raise HTTPException(503, str(e)) from None


def _is_image(data: bytes) -> bool:
    return data.startswith(_SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


async def _predict(request: Request, served: ServedModel, data: bytes, filename: str,
                   top_k: int) -> Dict[str, object]:
    """One image through the model's batcher; errors become HTTPExceptions."""
    start, status = time.perf_counter(), 500
    try:
        if data and not _is_image(data):
            # Refused before any thread or decoder is spent on it. (Engines older than 65bfac2 handed
            # such bytes to OpenCV, whose TIFF reader ignores the pixel limit: 60 KB made 64 MP.)
            raise ValueError(f"{filename}: not an image (not JPEG, PNG, BMP or WEBP data)")
        result = await served.predict(data, top_k, filename)
        status = 200
        return result
    except tlcore.Overloaded as e:
        status = 503
        raise HTTPException(503, str(e), headers={"Retry-After": "1"}) from None
    except ValueError as e:
        status = 415 if data and not _is_image(data) else 400
        message = str(e)  # the engine's messages start with the source it was given
        raise HTTPException(status, message if message.startswith(filename) else f"{filename}: {message}") from None
    finally:
        metrics = request.app.state.metrics
        if metrics is not None:
            metrics.observe(served.name, status, time.perf_counter() - start)


def _upload(field: str, description: str, many: bool = False) -> Dict[str, object]:
    """The OpenAPI request body of an upload, which the route reads itself (api/uploads.py says why)."""
    item = {"type": "string", "format": "binary"}
    schema = {"type": "array", "items": item} if many else dict(item)
    schema["description"] = description
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "properties": {field: schema}, "required": [field]}}}}}


@router.post("/predict/", response_model=Prediction, responses=_ERRORS,
             openapi_extra=_upload("file", "an image: JPEG, PNG, BMP or WebP"))
async def predict(request: Request,
                  model: Optional[str] = Query(None, description="a name from GET /models; default model if absent"),
                  top_k: int = Query(5, ge=1, le=1000, description="how many labels to return")) -> Dict[str, object]:
    """Top-k labels of one uploaded image (the workshop client's request)."""
    served = _served(request, model)
    filename, data = (await read_files(request, "file"))[-1]
    result = await _predict(request, served, data, filename or "upload", top_k)
    return {**result, "model": served.name}


@router.post("/predict/batch", response_model=BatchPrediction, responses=_ERRORS,
             openapi_extra=_upload("files", "images: JPEG, PNG, BMP or WebP", many=True))
async def predict_batch(request: Request,
                        model: Optional[str] = Query(None, description="a name from GET /models"),
                        top_k: int = Query(5, ge=1, le=1000)) -> Dict[str, object]:
    """Top-k labels of several images; an image that cannot be read gets its own error entry."""
    served = _served(request, model)
    files = await read_files(request, "files")
    limit = request.app.state.settings.batch.max_queue
    if len(files) > limit:
        raise HTTPException(400, f"{len(files)} files in one request; at most {limit}")
    names = [name or f"file {i}" for i, (name, _) in enumerate(files)]
    contents = [data for _, data in files]

    async def one(name: str, data: bytes) -> Dict[str, object]:
        try:
            return {"filename": name, "status": 200, **await _predict(request, served, data, name, top_k)}
        except HTTPException as e:
            if e.status_code == 503:
                raise
            return {"filename": name, "status": e.status_code, "error": e.detail}

    results = await asyncio.gather(*(one(n, d) for n, d in zip(names, contents)))
    return {"model": served.name, "results": results}


@router.get("/models", response_model=ModelList)
def list_models(request: Request) -> Dict[str, object]:
    """Every served model (name, architecture, classes, input size, "unknown" rule), and
    every model file that was rejected, with why."""
    models: ModelRegistry = request.app.state.models
    return {"models": [{**m.info(), "default": name == models.default} for name, m in models.models.items()],
            "rejected": [asdict(r) for r in models.rejected]}


@router.get("/health", response_model=Health)
def health(request: Request) -> Dict[str, object]:
    """Liveness (200 while the process answers; "status" says whether models are served), each
    model's batching statistics (requests, batches, batch sizes, queue) and the rejected files."""
    models: ModelRegistry = request.app.state.models
    status = "no model loaded" if not models.models else "degraded" if models.rejected else "ok"
    return {"status": status, "default_model": models.default,
            "models": {name: m.predictor.stats() for name, m in models.models.items()},
            "rejected": [asdict(r) for r in models.rejected]}


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    if request.app.state.metrics is None:
        raise HTTPException(404, "metrics need prometheus_client (apt-get install python3-prometheus-client)")
    body, content_type = request.app.state.metrics.render()
    return Response(body, media_type=content_type)


@router.get("/", include_in_schema=False)
def index() -> FileResponse:
    return FileResponse(STATIC / "index.html")


# -- the app ------------------------------------------------------------------------------------
T = TypeVar("T")


def _setting(value: Optional[T], env: Mapping[str, str], name: str, parse: Callable[[str], T],
             default: T) -> T:
    if value is not None:
        return value
    raw = env.get(ENV_PREFIX + name)
    if raw is None or raw == "":
        return default
    try:
        return parse(raw)
    except ValueError:
        raise ValueError(f"{ENV_PREFIX}{name}={raw!r} is not a valid {parse.__name__}") from None


def create_app(models_dir: Union[str, os.PathLike, None] = None, *, default_model: Optional[str] = None,
               max_upload_mb: Optional[float] = None, max_batch: Optional[int] = None,
               max_delay_ms: Optional[float] = None, max_queue: Optional[int] = None,
               max_pixels: Optional[int] = None, threshold: Optional[float] = None,
               min_energy: Optional[float] = None, precision: Optional[str] = None, env: Mapping[str, str] = os.environ) -> FastAPI:
    """The service for the models in ``models_dir``; loads them when the server starts.

    An argument left None comes from the environment (TLCORE_MODELS, TLCORE_MAX_BATCH, ...:
    see the module docstring), then from the defaults.

    Usage: ``uvicorn.run(create_app("models/", max_batch=32), port=8000)``
    """
    folder = _setting(models_dir, env, "MODELS", str, "")
    if not folder:
        raise ValueError("no models folder: set TLCORE_MODELS (or pass --models to `tlcore serve`)")
    defaults = BatchOptions()
    settings = Settings(
        models_dir=Path(folder),
        default_model=_setting(default_model, env, "DEFAULT_MODEL", str, None),
        max_upload_bytes=int(_setting(max_upload_mb, env, "MAX_UPLOAD_MB", float, 10.0) * MB),
        batch=BatchOptions(
            max_batch=_setting(max_batch, env, "MAX_BATCH", int, defaults.max_batch),
            max_delay_ms=_setting(max_delay_ms, env, "MAX_DELAY_MS", float, defaults.max_delay_ms),
            max_queue=_setting(max_queue, env, "MAX_QUEUE", int, defaults.max_queue),
            max_pixels=_setting(max_pixels, env, "MAX_PIXELS", int, defaults.max_pixels),
            threshold=_setting(threshold, env, "THRESHOLD", float, None),
            min_energy=_setting(min_energy, env, "MIN_ENERGY", float, None),
            precision=_setting(precision, env, "PRECISION", str, defaults.precision)))
    if settings.batch.precision not in tlcore.precision.PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(tlcore.precision.PRECISIONS)}, "
                         f"got {settings.batch.precision!r}")
    if settings.max_upload_bytes <= 0:
        raise ValueError(f"upload limit must be positive, got {settings.max_upload_bytes} bytes")
    if settings.batch.precision == "int8":  # before any model runs; where a model ran, int8 falls back
        tlcore.precision.run_int8_without_amx()
    models = ModelRegistry(settings.models_dir, settings.batch, settings.default_model)

    async def load_models() -> None:
        await anyio.to_thread.run_sync(models.load)
        log.info("tlcore service: %d model(s) from %s (%d file(s) rejected), default %s, upload limit %d bytes",
                 len(models.models), settings.models_dir, len(models.rejected), models.default,
                 settings.max_upload_bytes)

    swagger_ui = _swagger_ui()
    app = FastAPI(title="tlcore", version=tlcore.__version__,
                  description="Image classification with models trained by tlcore, batched in C++.",
                  docs_url=None if swagger_ui else "/docs", on_startup=[load_models], on_shutdown=[models.close])
    app.state.settings, app.state.models, app.state.metrics = settings, models, _metrics(models)
    app.add_middleware(BodyLimit, max_bytes=settings.max_upload_bytes)
    app.add_middleware(HeaderLimit)
    app.add_exception_handler(Exception, _internal_error)
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    if swagger_ui:
        _add_docs(app, swagger_ui)
    return app


def _swagger_ui() -> Optional[Path]:
    """Swagger UI's files from Debian's python3-flasgger, so /docs works offline; None without it."""
    spec = importlib.util.find_spec("flasgger")  # located, not imported (it would import Flask)
    folder = Path(next(iter(spec.submodule_search_locations))) / "ui3" / "static" if spec else None
    return folder if folder and (folder / "swagger-ui-bundle.js").is_file() else None


def _add_docs(app: FastAPI, folder: Path) -> None:
    """/docs from the Swagger UI files in ``folder`` instead of FastAPI's default CDN."""

    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} - Swagger UI",
                                   swagger_js_url="/docs-static/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-static/swagger-ui.css",
                                   swagger_favicon_url="/docs-static/favicon-32x32.png")

    app.add_api_route("/docs", docs, include_in_schema=False)
    app.mount("/docs-static", StaticFiles(directory=folder), name="docs-static")


def _metrics(models: ModelRegistry):
    try:
        from .metrics import Metrics
    except ImportError:
        log.info("prometheus_client not installed: no /metrics")
        return None
    return Metrics(models)


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    """A 500 that tells the client only a request id: an unexpected exception's text may hold
    paths, library internals or data, so it and its traceback go to the log under that id."""
    request_id = uuid.uuid4().hex
    log.error("request %s: %s %s failed", request_id, request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": f"internal error (request id {request_id})", "request_id": request_id},
                        status_code=500, headers={"X-Request-ID": request_id})


_app: Optional[FastAPI] = None


def __getattr__(name: str) -> FastAPI:
    # `app` is built on first access (by uvicorn), so importing create_app never needs TLCORE_MODELS.
    global _app
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _app is None:
        _app = create_app()
    return _app
