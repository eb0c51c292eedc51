"""The routes that change a served model: feedback (store, list, delete), update, rollback.

Each of them is authorized by deploy.service.security.authorize_change (token, or a same-origin
request of the operator page); the update's status is readable by anyone and carries no server path.
"""
from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from deploy.service.errors import ServiceError
from deploy.service.feedback import LABELS, FeedbackImage, FeedbackStore
from deploy.service.security import authorize_change, has_token
from deploy.service.served_models import ModelEntry
from deploy.service.updates import rollback
from deploy.service.uploads import read_image_upload

MODEL = "/api/v1/models/{name}"


def _feedback(request: Request, name: str) -> tuple[ModelEntry, FeedbackStore]:
    service = request.app.state.service
    entry = service.entry(name)
    if not service.settings.feedback_dir:
        raise ServiceError(400, "feedback is off: start serve.py with --feedback_dir")
    return entry, FeedbackStore(service.settings.feedback_dir, entry.name)


async def _in_thread(request: Request, function, *args):
    return await asyncio.get_running_loop().run_in_executor(request.app.state.service.decoders, function, *args)


async def _note_in_log(request: Request, model: str, sha256: str, label: str | None) -> None:
    """The inspection log's rows of this image carry the operator's label (None: deleted)."""
    log = request.app.state.service.station.log
    if log is not None:
        await asyncio.get_running_loop().run_in_executor(None, log.note_feedback, model, sha256, label)


def add_routes(app: FastAPI) -> None:
    """Add the routes to `app` (plain routes: the 405 answers list every method of a path, see security)."""

    @app.post(MODEL + "/feedback")
    async def add_feedback(name: str, request: Request, label: str = "") -> dict[str, Any]:
        """Store an image with its label (good: a false reject; defect: a miss); a later label replaces it."""
        service = request.app.state.service
        authorize_change(request, service.settings)
        entry, store = _feedback(request, name)
        if label not in LABELS:
            raise ServiceError(400, f"label={label!r}: use label=good (a false reject) or label=defect (a miss)")
        data = await read_image_upload(request, service.settings.max_upload_bytes,
                                       service.settings.upload_timeout_s)
        image = await _in_thread(request, FeedbackImage.check, data)
        stored = await _in_thread(request, store.store, label, image)
        await _note_in_log(request, entry.name, image.sha256, label)
        return {"model": entry.name, **stored, "feedback": store.counts()}

    @app.get(MODEL + "/feedback")
    async def list_feedback(name: str, request: Request) -> dict[str, Any]:
        entry, store = _feedback(request, name)
        return {"model": entry.name, "items": store.items(entry.current.version), "counts": store.counts()}

    @app.delete(MODEL + "/feedback/{sha256}")
    async def delete_feedback(name: str, sha256: str, request: Request) -> dict[str, Any]:
        authorize_change(request, request.app.state.service.settings)
        entry, store = _feedback(request, name)
        if not store.delete(sha256.lower()):
            raise ServiceError(404, f"no feedback image {sha256[:64]} for model '{entry.name}'")
        await _note_in_log(request, entry.name, sha256.lower(), None)
        return {"model": entry.name, "deleted": sha256.lower(), "counts": store.counts()}

    @app.post(MODEL + "/update", status_code=202)
    async def update(name: str, request: Request, force: bool = False) -> JSONResponse:
        """Start a guarded update; 409 with the `refused` images when the guard refuses (force=true needs the token)."""
        service = request.app.state.service
        authorize_change(request, service.settings)
        if force and not has_token(request, service.settings):
            raise ServiceError(403, "force=true overrides the guard and needs the service token: start serve.py with "
                                    "--token and send 'Authorization: Bearer <token>'")
        # Not in the decoding pool: the guard's scoring waits on the batcher, predictions must not wait on it.
        job = await asyncio.get_running_loop().run_in_executor(None, service.updater.start, service.entry(name), force)
        return JSONResponse(job.describe(), status_code=202)

    @app.get(MODEL + "/update")
    async def update_status(name: str, request: Request) -> dict[str, Any]:
        service = request.app.state.service
        service.entry(name)
        job = service.updater.jobs.get(name)
        if job is None:
            raise ServiceError(404, f"no update of model '{name}' has run since the service started")
        return job.describe()

    @app.post(MODEL + "/rollback")
    async def rollback_model(name: str, request: Request) -> dict[str, Any]:
        service = request.app.state.service
        authorize_change(request, service.settings)
        entry = service.entry(name)
        return await asyncio.get_running_loop().run_in_executor(None, rollback, entry, service.updater)
