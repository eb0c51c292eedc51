"""The station's read-only routes: the inspection log (page, CSV), per-model summary, trend, drift.

    GET /api/v1/log?model=&decision=&since=&until=&limit=&offset=   newest first, {"total", "items"}
    GET /api/v1/log.csv?model=&decision=&since=&until=               every matching row, oldest first
    GET /api/v1/models/{name}/station?minutes=60                      summary, drift, trend, alarms
`since` / `until`: UTC times, ISO 8601 (2026-01-31T06:00:00Z) or seconds since the epoch.
"""
from __future__ import annotations

import asyncio
import calendar
import re
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from deploy.service.errors import ServiceError
from deploy.service.inspection_log import DECISIONS, InspectionLog

MAX_PAGE = 500
# The largest offset SQLite's OFFSET takes (a signed 64-bit integer); past the rows it lists nothing.
MAX_OFFSET = 2 ** 63 - 1


# What `since` / `until` accept, written once for the handler (which parses exactly the strings it
# matches) and for the OpenAPI schema (so that generated requests stay inside it): empty (no
# filter), seconds since 1970 (up to 11 digits, up to 6 decimals), or a UTC date (years 1970-9999)
# with an optional time to the minute or second and an optional Z. A day past the month's end
# counts on into the next month (2026-02-30 = 2026-03-02), as calendar.timegm does.
TIME_PATTERN = (r"^(|(?P<epoch>[0-9]{1,11}(\.[0-9]{1,6})?)"
                r"|(?P<year>19[7-9][0-9]|[2-9][0-9]{3})-(?P<month>0[1-9]|1[0-2])-(?P<day>0[1-9]|[12][0-9]|3[01])"
                r"(T(?P<hour>[01][0-9]|2[0-3]):(?P<minute>[0-5][0-9])(:(?P<second>[0-5][0-9]))?Z?)?)$")
TIME_PARAMETER = {"pattern": re.sub(r"\?P<\w+>", "", TIME_PATTERN),   # plain groups: valid in every regex dialect
                  "description": "UTC: seconds since 1970, or 2026-01-31, 2026-01-31T06:00, 2026-01-31T06:00:00Z"}
_TIME = re.compile(TIME_PATTERN)


def parse_time(text: str | None, name: str) -> float | None:
    """Seconds since 1970 of a `since` / `until` value (TIME_PATTERN), None when empty or absent."""
    found = _TIME.fullmatch(text) if text is not None else None
    if text is not None and found is None:
        raise ServiceError(400, f"{name}={text!r}: give a UTC time as 2026-01-31T06:00:00Z or seconds since 1970")
    if found is None or text == "":
        return None
    if found["epoch"]:
        return float(found["epoch"])
    fields = (found["year"], found["month"], found["day"], found["hour"], found["minute"], found["second"])
    return float(calendar.timegm(tuple(int(f or 0) for f in fields)))


# The pattern and the choices are stated in the schema only: parse_time and _filters check them and
# answer the app's one-line 400 (empty: no filter).
TimeQuery = Annotated[str | None, Query(json_schema_extra=TIME_PARAMETER)]
DecisionQuery = Annotated[str | None, Query(json_schema_extra={"enum": ["", *DECISIONS]})]


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
    async def log_rows(model: str | None = None, decision: DecisionQuery = None, since: TimeQuery = None,
                       until: TimeQuery = None, limit: int = Query(50, ge=1, le=MAX_PAGE),
                       offset: int = Query(0, ge=0, le=MAX_OFFSET)) -> dict[str, Any]:
        # The bounds are in the schema; a request outside them is the app's one-line 400.
        store = log()
        await in_thread(store.flush, 2.0)   # what was just scored is listed
        return await in_thread(store.query, limit=limit, offset=offset, **_filters(model, decision, since, until))

    @router.get("/api/v1/log.csv", responses={200: {"content": {"text/csv": {}}, "description": "the rows as CSV"}})
    async def log_csv(model: str | None = None, decision: DecisionQuery = None, since: TimeQuery = None,
                      until: TimeQuery = None) -> StreamingResponse:
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
