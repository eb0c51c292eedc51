"""The operator station behind the service: the inspection log, the drift alarms and the watched folders.

The app calls `scored` / `failed` once per predict request (cheap: a hash, a queue put and a
median over --drift_window scores); everything slow happens on the log's writer thread.
"""
from __future__ import annotations

import hashlib
import time
from typing import Any, Callable

from prometheus_client import CollectorRegistry
from starlette.requests import Request

from deploy.service.drift import DriftAlarms
from deploy.service.inspection_log import InspectionLog
from deploy.service.log_store import InspectionRow
from deploy.service.served_models import ModelEntry, ServedModels
from deploy.service.station_settings import StationSettings
from deploy.service.uploads import SIGNATURES
from utils.errors import UserError

PAGE_HEADER = "x-patchcore-request"
MAX_TEXT = 200   # part ids and client ids longer than this are cut


def request_source(request: Request) -> str:
    """'upload' for the operator page, else 'api:<X-Client-Id header or the peer's address>'."""
    if request.headers.get(PAGE_HEADER) == "page":
        return "upload"
    client = request.headers.get("x-client-id") or (request.client.host if request.client else "unknown")
    return "api:" + client[:MAX_TEXT]


def image_extension(data: bytes) -> str:
    return next((extension for magic, extension in SIGNATURES if data.startswith(magic)), ".bin")


class Station:
    def __init__(self, settings: StationSettings, registry: ServedModels, metrics: CollectorRegistry):
        self.settings, self.registry = settings, registry
        for name, folder in settings.watch:
            if registry.get(name) is None:
                raise UserError(f"--watch {name}={folder}: no served model named '{name}'")
        self.log = InspectionLog(settings, metrics) if settings.log_enabled else None
        self.drift = DriftAlarms(settings, metrics, self.log)
        for name, entry in registry.entries.items():
            self.drift.add(name, entry.current.version, entry.current.inferencer.thresholds.image)
        self.watchers: list[Any] = []

    def start_watching_for(self, service: Any) -> Callable[[], None]:
        """What the app runs once it serves: a thread per watched folder."""
        def start() -> None:
            from deploy.service.watch import FolderWatcher

            for name, folder in self.settings.watch:
                self.watchers.append(FolderWatcher(service.entry(name), folder, self))
        return start

    def row(self, entry: ModelEntry, source: str, part_id: str | None, data: bytes, latency_ms: float,
            answer: dict[str, Any] | None = None, error: str | None = None) -> InspectionRow:
        answer = answer or {}
        return InspectionRow(ts=time.time(), model=entry.name, version=answer.get("version", entry.current.version),
                             source=source, decision=answer.get("decision", "error"),
                             part_id=part_id[:MAX_TEXT] if part_id else None,
                             sha256=hashlib.sha256(data).hexdigest() if data else None,
                             score=answer.get("image_score"), normalized=answer.get("normalized_score"),
                             defect_area=answer.get("defect_area"), latency_ms=round(latency_ms, 2), error=error)

    def observe_drift(self, row: InspectionRow) -> None:
        monitor = self.drift.monitors.get(row.model)
        entry = self.registry.get(row.model)
        if monitor is not None and entry is not None:
            monitor.observe(row.version, entry.current.inferencer.thresholds.image, row.decision, row.score)

    def observe(self, row: InspectionRow, data: bytes) -> None:
        """A finished row: into the drift alarm, then onto the log's queue."""
        self.observe_drift(row)
        if self.log is not None:
            self.log.record(row, data, image_extension(data))

    def scored(self, entry: ModelEntry, request: Request, data: bytes, answer: dict[str, Any],
               part_id: str | None) -> None:
        self.observe(self.row(entry, request_source(request), part_id, data, answer["latency_ms"], answer), data)

    def failed(self, entry: ModelEntry, request: Request, data: bytes, message: str, started: float,
               part_id: str | None) -> None:
        latency_ms = 1000 * (time.perf_counter() - started)
        self.observe(self.row(entry, request_source(request), part_id, data, latency_ms, error=message), data)

    def status(self, name: str) -> dict[str, Any]:
        monitor = self.drift.monitors.get(name)
        return {"drift": monitor.describe() if monitor else None,
                "log": "on" if self.log is not None else "off"}

    def close(self) -> None:
        for watcher in self.watchers:
            watcher.close()
        self.drift.close()
        if self.log is not None:
            self.log.close()
