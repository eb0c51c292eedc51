"""The station's read-only routes: the inspection log (page, CSV), per-model summary, trend, drift.

    GET /api/v1/log?model=&decision=&since=&until=&limit=&offset=   newest first, {"total", "items"}
    GET /api/v1/log.csv?model=&decision=&since=&until=               every matching row, oldest first
    GET /api/v1/models/{name}/station?minutes=60                      summary, drift, trend, alarms
`since` / `until`: UTC times, ISO 8601 (2026-01-31T06:00:00Z) or seconds since the epoch.
"""
from __future__ import annotations

import asyncio
import calendar
import time
from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from deploy.service.errors import ServiceError
from deploy.service.inspection_log import DECISIONS, InspectionLog

MAX_PAGE = 500


def parse_time(text: str | None, name: str) -> float | None:
    if text in (None, ""):
        return None
    try:
        return float(text)
    except ValueError:
        pass
    for pattern in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d"):
        try:
            return float(calendar.timegm(time.strptime(text, pattern)))
        except ValueError:
            continue
    raise ServiceError(400, f"{name}={text!r}: give a UTC time as 2026-01-31T06:00:00Z or seconds since 1970")


def _filters(model: str | None, decision: str | None, since: str | None, until: str | None) -> dict[str, Any]:
    if decision not in (None, "") and decision not in DECISIONS:
        raise ServiceError(400, f"decision={decision!r}: use one of {', '.join(DECISIONS)}")
    return {"model": model or None, "decision": decision or None, "since": parse_time(since, "since"),
            "until": parse_time(until, "until")}


def station_routes(service: Any) -> APIRouter:
    router = APIRouter()

    def log() -> InspectionLog:
        if service.station.log is None:
            raise ServiceError(404, "the inspection log is off (serve.py --log_db none)")
        return service.station.log

    async def in_thread(work, *args, **kwargs):
        return await asyncio.get_running_loop().run_in_executor(None, lambda: work(*args, **kwargs))

    @router.get("/api/v1/log")
    async def log_rows(model: str | None = None, decision: str | None = None, since: str | None = None,
                       until: str | None = None, limit: int = Query(50, ge=1, le=MAX_PAGE),
                       offset: int = Query(0, ge=0)) -> dict[str, Any]:
        # The bounds are in the schema; a request outside them is the app's one-line 400.
        store = log()
        await in_thread(store.flush, 2.0)   # what was just scored is listed
        return await in_thread(store.query, limit=limit, offset=offset, **_filters(model, decision, since, until))

    @router.get("/api/v1/log.csv", responses={200: {"content": {"text/csv": {}}, "description": "the rows as CSV"}})
    async def log_csv(model: str | None = None, decision: str | None = None, since: str | None = None,
                      until: str | None = None) -> StreamingResponse:
        store = log()
        filters = _filters(model, decision, since, until)
        await in_thread(store.flush, 2.0)
        return StreamingResponse(store.csv_lines(**filters), media_type="text/csv; charset=utf-8",
                                 headers={"content-disposition": 'attachment; filename="inspections.csv"'})

    @router.get("/api/v1/models/{name}/station")
    async def station_status(name: str, minutes: int = 60) -> dict[str, Any]:
        service.entry(name)
        if not 1 <= minutes <= 24 * 60:
            raise ServiceError(400, "minutes must be 1..1440")
        answer = service.station.status(name)
        if service.station.log is not None:
            store = service.station.log
            await in_thread(store.flush, 2.0)
            answer["summary"] = await in_thread(store.summary, name)
            answer["trend"] = await in_thread(store.trend, name, minutes)
            answer["alarms"] = await in_thread(store.alarms, name)
        return answer

    return router
