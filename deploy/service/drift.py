"""The drift alarm: are the good parts' scores creeping towards the threshold, or are too many parts NG?

Per model and serving version, with N = --drift_window (default 50):
  reference  = median raw score of the version's first N parts judged OK (from the log, so a restart
               keeps it): a good-part reference, so a shift that starts with defective parts (or a
               bad first batch) does not become the baseline; every OK score is below the
               threshold, so the index below is always defined,
  recent     = median raw score of its last N scored parts (OK and NG: a median ignores up to half of
               them being real defects; more than that is the NG-rate alarm's job),
  drift index d = (recent - reference) / (image threshold - reference)
               0: the parts score as they did when the version started; 1: the typical part sits at
               the threshold.
  "score" alarm while d >= --drift_limit (default 0.5: the typical part has moved half way to the
  threshold); it ends when d falls below 0.75 x the limit (a margin, so it does not flicker).
  "ng_rate" alarm while the NG share of the last N judged parts (OK + NG) >= --ng_rate_limit
  (default 0.2); it ends below 0.75 x the limit.
Nothing is judged before N parts (state "learning"; the score alarm waits for N OK parts). A new
version (update, rollback, reload) starts learning again. Both alarms are shown on the page and in
/metrics (patchcore_drift_index, patchcore_drift_alarm{kind}, patchcore_recent_ng_rate); the log's
`alarms` table records when each started and ended.
"""
from __future__ import annotations

import statistics
import sys
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from prometheus_client import CollectorRegistry, Gauge

from deploy.service.station_settings import StationSettings

KINDS = ("score", "ng_rate")
END_FRACTION = 0.75


class DriftMonitor:
    """One model's drift state. `observe` is cheap (called on the request path); log writes go to `background`."""

    def __init__(self, model: str, settings: StationSettings, gauges: dict[str, Gauge],
                 background: Callable[[Callable[[], None]], None], log: Any | None):
        self.model, self.window = model, settings.drift_window
        self.drift_limit, self.ng_limit = settings.drift_limit, settings.ng_rate_limit
        self.gauges, self.background, self.log = gauges, background, log
        self.lock = threading.Lock()
        self.version: str | None = None
        self.threshold = 0.0
        self.reference: list[float] = []
        self.recent: deque[float] = deque(maxlen=self.window)
        self.verdicts: deque[bool] = deque(maxlen=self.window)   # True: NG
        self.index: float | None = None
        self.ng_rate: float | None = None
        self.active = dict.fromkeys(KINDS, False)

    def start_version(self, version: str, threshold: float) -> None:
        """Begin judging `version` (from the log's rows of it when there are any)."""
        first = recent = []
        if self.log is not None:
            try:
                first = self.log.first_scores(self.model, version, self.window)
                recent = self.log.recent_scores(self.model, version, self.window)
            except Exception as err:   # a log that cannot be read: learn again from the next parts
                print(f"warning: drift alarm of model '{self.model}': cannot read the log ({err})", file=sys.stderr)
        with self.lock:
            self._reset(version, threshold)
            self.reference = list(first)
            self.recent.extend(recent)
            self._judge()

    def _reset(self, version: str, threshold: float) -> None:
        for kind in KINDS:
            if self.active[kind]:
                self._switch(kind, False, 0.0)
        self.version, self.threshold = version, threshold
        self.reference, self.index, self.ng_rate = [], None, None
        self.recent.clear()
        self.verdicts.clear()

    def observe(self, version: str, threshold: float, decision: str, score: float | None) -> None:
        if decision not in ("normal", "anomalous"):
            return
        with self.lock:
            if version != self.version:
                self._reset(version, threshold)
            self.verdicts.append(decision == "anomalous")
            if score is not None:
                if decision == "normal" and len(self.reference) < self.window:
                    self.reference.append(score)
                self.recent.append(score)
            self._judge()

    def _judge(self) -> None:
        if len(self.verdicts) == self.window:
            self.ng_rate = sum(self.verdicts) / self.window
            self._update("ng_rate", self.ng_rate, self.ng_limit)
        if len(self.reference) == self.window and len(self.recent) == self.window:
            base = statistics.median(self.reference)
            self.index = (statistics.median(self.recent) - base) / max(self.threshold - base, 1e-12)
            self._update("score", self.index, self.drift_limit)
        self.gauges["index"].labels(self.model).set(self.index if self.index is not None else 0.0)
        self.gauges["ng_rate"].labels(self.model).set(self.ng_rate if self.ng_rate is not None else 0.0)

    def _update(self, kind: str, value: float, limit: float) -> None:
        if not self.active[kind] and value >= limit:
            self._switch(kind, True, value)
        elif self.active[kind] and value < END_FRACTION * limit:
            self._switch(kind, False, value)

    def _switch(self, kind: str, on: bool, value: float) -> None:
        self.active[kind] = on
        self.gauges["alarm"].labels(self.model, kind).set(1.0 if on else 0.0)
        what = {"score": f"drift index {value:.2f} (limit {self.drift_limit:g})",
                "ng_rate": f"NG rate {value:.0%} of the last {self.window} parts (limit {self.ng_limit:.0%})"}[kind]
        print(f"model '{self.model}': {'ALARM' if on else 'alarm ended'}: {what}", file=sys.stderr, flush=True)
        if self.log is not None:
            model, version, log = self.model, self.version, self.log
            self.background(lambda: log.alarm_started(model, version, kind, value, what) if on
                            else log.alarm_ended(model, kind))

    def describe(self) -> dict[str, Any]:
        with self.lock:
            learning = len(self.reference) < self.window or len(self.recent) < self.window
            return {"state": "alarm" if any(self.active.values()) else "learning" if learning else "ok",
                    "alarms": [k for k in KINDS if self.active[k]],
                    "index": None if self.index is None else round(self.index, 4), "limit": self.drift_limit,
                    "ng_rate": self.ng_rate, "ng_rate_limit": self.ng_limit, "window": self.window,
                    "parts_seen": len(self.recent), "version": self.version}


class DriftAlarms:
    """The monitors of every served model, their gauges, and one thread for their log writes."""

    def __init__(self, settings: StationSettings, metrics: CollectorRegistry, log: Any | None):
        self.settings, self.log = settings, log
        self.gauges = {
            "index": Gauge("patchcore_drift_index", "Drift index of the parts' scores (0: as at the start, "
                           "1: at the threshold)", ("model",), registry=metrics),
            "alarm": Gauge("patchcore_drift_alarm", "1 while a drift alarm is on", ("model", "kind"), registry=metrics),
            "ng_rate": Gauge("patchcore_recent_ng_rate", "NG share of the last --drift_window parts", ("model",),
                             registry=metrics)}
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="drift-log")
        self.monitors: dict[str, DriftMonitor] = {}

    def _background(self, work: Callable[[], None]) -> None:
        def safe() -> None:
            try:
                work()
            except Exception as err:
                print(f"warning: drift alarm not recorded in the log ({err})", file=sys.stderr, flush=True)
        self.writer.submit(safe)

    def add(self, model: str, version: str, threshold: float) -> DriftMonitor:
        monitor = DriftMonitor(model, self.settings, self.gauges, self._background, self.log)
        for kind in KINDS:
            self.gauges["alarm"].labels(model, kind).set(0.0)
        monitor.start_version(version, threshold)
        self.monitors[model] = monitor
        return monitor

    def close(self) -> None:
        self.writer.shutdown(wait=True)
