"""The FastAPI application: routes, errors as one line of JSON, the token on mutating calls."""
from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from deploy.service import changes, security
from deploy.service.batching import QueueFull
from deploy.service.errors import ERROR_RESPONSES, ServiceError
from deploy.service.feedback import FeedbackStore
from deploy.service.metrics import ServiceMetrics
from deploy.service.pictures import overlay_png, picture_layers
from deploy.service.served_models import ModelEntry, ServedModels
from deploy.service.settings import ServiceSettings
from deploy.service.station import Station
from deploy.service.station_api import station_routes
from deploy.service.updates import Updater
from deploy.service.uploads import read_image_upload
from utils.errors import UserError, first_line

STATIC = os.path.join(os.path.dirname(__file__), "static")


_error = security.error_response


def _user_error_status(err: UserError) -> int:
    # Pillow's decompression-bomb limit (the CLI's pixel limit) is a too-large upload, not a bad one.
    return 413 if "too large to decode" in str(err) else 400


class Service:
    """What the routes share: settings, models, metrics, the decoding pool, update jobs."""

    def __init__(self, settings: ServiceSettings, registry: ServedModels):
        self.settings, self.registry = settings, registry
        self.decoders = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="decode")
        self.metrics = ServiceMetrics(lambda: {n: e.batcher.depth for n, e in registry.entries.items()})
        for name, entry in registry.entries.items():
            entry.batcher.on_batch = self.metrics.batch_size.labels(name).observe
        self.updater = Updater(settings.feedback_dir)
        self.station = Station(settings.station, registry, self.metrics.registry)

    def entry(self, name: str) -> ModelEntry:
        entry = self.registry.get(name)
        if entry is None:
            raise ServiceError(404, f"no model named '{name}' (GET /api/v1/models lists them)")
        return entry

    def authorize(self, request: Request) -> None:
        """A call that changes a model: the token, or a same-origin request (deploy.service.security)."""
        security.authorize_change(request, self.settings)

    async def predict(self, entry: ModelEntry, data: bytes, with_map: str | None) -> dict[str, Any]:
        version = entry.current   # this request is scored by this version, even if another is swapped in
        loop = asyncio.get_running_loop()
        try:
            image = await loop.run_in_executor(self.decoders, version.inferencer.preprocess, data, "upload")
        except UserError as err:
            raise ServiceError(_user_error_status(err), str(err)) from None
        try:
            future = entry.batcher.submit(version.inferencer, image)
        except QueueFull:
            raise ServiceError(503, f"model '{entry.name}' is busy ({self.settings.max_queue} images queued): "
                                    f"retry shortly") from None
        try:
            prediction = await asyncio.wrap_future(future)
        except UserError as err:
            raise ServiceError(400, str(err)) from None
        answer = {"model": entry.name, "version": version.version, **prediction.as_dict()}
        if with_map == "png":
            answer["map_png"] = await loop.run_in_executor(self.decoders, overlay_png, version.inferencer, data,
                                                           prediction)
        elif with_map == "layers":   # the operator page's picture: image, heat map, outline, colour scale
            answer.update(await loop.run_in_executor(self.decoders, picture_layers, version.inferencer, data,
                                                     prediction))
        return answer


def create_app(settings: ServiceSettings, registry: ServedModels) -> FastAPI:
    service = Service(settings, registry)
    # No /docs or /redoc: they load Swagger UI from a CDN, and the line is offline. /openapi.json stays.
    app = FastAPI(title="PatchCore-Paddle service", docs_url=None, redoc_url=None, responses=ERROR_RESPONSES)
    app.state.service = service

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, err: ServiceError) -> JSONResponse:
        return _error(err.status, err.message, **err.extra)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        headers = dict(err.headers or {})
        if err.status_code == 405:
            headers["Allow"] = security.allowed_methods(request)
        message = {404: f"nothing at {request.method} {request.url.path}: the API is under /api/v1 (GET "
                        f"/openapi.json lists it)",
                   405: f"{request.method} is not allowed on {request.url.path}: use "
                        f"{headers.get('Allow', 'another method')}"}.get(err.status_code, str(err.detail))
        return _error(err.status_code, message, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error(400, f"bad request: {where} {first.get('msg', '')}".strip())

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception) -> JSONResponse:
        return _error(500, f"internal error: {first_line(err)}")

    @app.middleware("http")
    async def count_predictions(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        parts = request.url.path.strip("/").split("/")
        if len(parts) == 5 and parts[:3] == ["api", "v1", "models"] and parts[4] == "predict":
            name = parts[3] if parts[3] in registry.entries else "unknown"
            decision = response.headers.get("x-decision", "error")
            service.metrics.requests.labels(name, str(response.status_code), decision).inc()
            service.metrics.latency.labels(name).observe(time.perf_counter() - start)
        return response

    security.install(app, settings)   # outermost: Host and Origin checked before anything else runs

    @app.api_route("/healthz", methods=["GET", "HEAD"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        if registry.ready():
            return JSONResponse({"status": "ready", "models": sorted(registry.entries)})
        return _error(503, "not ready: a model's worker is not running")

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/api/v1/models")
    async def models() -> dict[str, Any]:
        listed = []
        for name, entry in registry.entries.items():
            info = entry.describe()
            job = service.updater.jobs.get(name)
            info["update"] = job.describe() if job else None
            if settings.feedback_dir:
                info["feedback"] = FeedbackStore(settings.feedback_dir, name).counts()
            listed.append(info)
        return {"models": listed, "token_required": bool(settings.token)}

    @app.post("/api/v1/models/{name}/predict")
    async def predict(name: str, request: Request, map: str | None = None, part_id: str | None = None) -> JSONResponse:
        entry = service.entry(name)
        if map not in (None, "", "png", "layers"):
            raise ServiceError(400, f"map={map}: the map formats are png and layers")
        start, data = time.perf_counter(), b""
        try:
            data = await read_image_upload(request, settings.max_upload_bytes, settings.upload_timeout_s)
            answer = await service.predict(entry, data, map or None)
        except ServiceError as err:   # the log records the part that could not be scored, then the error answers
            service.station.failed(entry, request, data, err.message, start, part_id)
            raise
        answer["latency_ms"] = round(1000 * (time.perf_counter() - start), 2)
        service.station.scored(entry, request, data, answer, part_id)
        return JSONResponse(answer, headers={"x-decision": answer["decision"]})

    changes.add_routes(app)   # feedback, update, rollback: the calls that change a model

    app.include_router(station_routes(service))
    app.router.add_event_handler("startup", service.station.start_watching_for(service))
    app.router.add_event_handler("shutdown", service.station.close)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(os.path.join(STATIC, "index.html"))

    return app
