"""The inspection log: every scored image recorded off the request path, and what the page reads back.

`record()` only puts the row on a bounded queue; one writer thread inserts what has queued in
batches (one transaction each). A locked database, a full disk or a full queue never fails a
prediction: the rows are dropped with a warning on stderr (at most one a minute) and counted in
/metrics (patchcore_log_rows_dropped_total{reason}). The writer also keeps the audit images
(NG images and a sampled fraction of OK ones, bounded in total size) and applies the retention
(--log_keep_days, --log_max_rows) every ten minutes.
"""
from __future__ import annotations

import csv
import io
import os
import queue
import random
import sys
import threading
import time
from typing import Any, Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge

from deploy.service.log_store import InspectionRow, LogStore, describe_target, open_store, prepare
from deploy.service.station_settings import StationSettings

BATCH_ROWS = 256
PRUNE_EVERY_S = 600.0
WARN_EVERY_S = 60.0
# What the page and the API list, in this order (and the CSV's columns).
LISTED = ("id", "ts", "model", "version", "source", "part_id", "decision", "score", "normalized", "defect_area",
          "latency_ms", "error", "sha256", "saved_image", "feedback", "feedback_ts")
DECISIONS = ("normal", "anomalous", "error")
WINDOWS_MIN = (15, 60, 480)   # NG rate and parts/min over the last quarter hour, hour and shift


def iso(ts: float | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


class AuditImages:
    """NG images (and a fraction of OK ones) under DIR/<model>/<day>/<sha256><ext>, oldest removed over the bound."""

    def __init__(self, folder: str, max_bytes: int):
        self.folder, self.max_bytes = folder, max_bytes
        self.files: list[tuple[float, str, int]] = []   # (mtime, path, size), oldest first
        if os.path.isdir(folder):
            for root, _, names in os.walk(folder):
                for name in names:
                    path = os.path.join(root, name)
                    st = os.stat(path)
                    self.files.append((st.st_mtime, path, st.st_size))
        self.files.sort()
        self.total = sum(size for _, _, size in self.files)

    def save(self, row: InspectionRow, data: bytes, extension: str) -> str | None:
        if len(data) > self.max_bytes:
            return None
        relative = os.path.join(row.model, time.strftime("%Y-%m-%d", time.gmtime(row.ts)), row.sha256 + extension)
        path = os.path.join(self.folder, relative)
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            temporary = path + ".tmp"
            with open(temporary, "wb") as f:
                f.write(data)
            os.replace(temporary, path)
            self.files.append((time.time(), path, len(data)))
            self.total += len(data)
            while self.total > self.max_bytes and self.files:
                _, oldest, size = self.files.pop(0)
                self.total -= size
                try:
                    os.remove(oldest)
                except FileNotFoundError:
                    pass
        return relative


class InspectionLog:
    def __init__(self, settings: StationSettings, metrics: CollectorRegistry):
        self.settings, self.target = settings, settings.log_target
        prepare(self.target)
        self.queue: queue.Queue[tuple[InspectionRow, bytes | None, str] | None] = queue.Queue(settings.log_queue)
        self.written = Counter("patchcore_log_rows_written", "Rows written to the inspection log",
                               registry=metrics)
        self.dropped = Counter("patchcore_log_rows_dropped", "Rows the inspection log could not keep",
                               ("reason",), registry=metrics)
        Gauge("patchcore_log_queue_depth", "Rows waiting for the log's writer", registry=metrics) \
            .set_function(self.queue.qsize)
        self.images = AuditImages(settings.images_dir, settings.saved_images_bytes) \
            if settings.save_ng_images or settings.save_ok_fraction > 0 else None
        self._warned_at = 0.0
        self._idle = threading.Condition()
        self._pending = 0
        self._writer = threading.Thread(target=self._write_loop, name="inspection-log", daemon=True)
        self._writer.start()

    # --- writing -----------------------------------------------------------------------------------------
    def record(self, row: InspectionRow, data: bytes | None = None, extension: str = ".png") -> None:
        """Queue one row (with the image when it may be kept for audit); never blocks, never raises."""
        keep = self.images is not None and data is not None and (
            (row.decision == "anomalous" and self.settings.save_ng_images)
            or (row.decision == "normal" and random.random() < self.settings.save_ok_fraction))
        with self._idle:
            self._pending += 1
        try:
            self.queue.put_nowait((row, data if keep else None, extension))
        except queue.Full:
            self._done(1)
            self._lost(1, "queue_full", "the log's queue is full (the database is too slow or locked)")

    def _lost(self, rows: int, reason: str, why: str) -> None:
        self.dropped.labels(reason).inc(rows)
        now = time.monotonic()
        if now - self._warned_at > WARN_EVERY_S:
            self._warned_at = now
            print(f"warning: inspection log {describe_target(self.target)}: {rows} row(s) not recorded: {why} "
                  f"(predictions go on; counted in patchcore_log_rows_dropped_total)", file=sys.stderr, flush=True)

    def _done(self, rows: int) -> None:
        with self._idle:
            self._pending -= rows
            if self._pending <= 0:
                self._idle.notify_all()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every row queued so far is written (or dropped); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def _take(self) -> list[tuple[InspectionRow, bytes | None, str]] | None:
        first = self.queue.get()
        if first is None:
            return None
        batch = [first]
        while len(batch) < BATCH_ROWS:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self.queue.put(None)
                break
            batch.append(item)
        return batch

    def _write_loop(self) -> None:
        store: LogStore | None = None
        next_prune = 0.0
        while (batch := self._take()) is not None:
            try:
                if store is None:
                    store = open_store(self.target)
                rows = [self._with_image(row, data, extension) for row, data, extension in batch]
                store.insert(rows)
                self.written.inc(len(rows))
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + PRUNE_EVERY_S
                    self._prune(store)
            except Exception as err:   # locked, full disk, connection lost: drop this batch, keep serving
                self._lost(len(batch), "write_failed", str(err).strip().splitlines()[0] if str(err).strip() else
                           type(err).__name__)
                if store is not None:
                    store.close()
                    store = None   # reconnect for the next batch
            finally:
                self._done(len(batch))
        if store is not None:
            store.close()

    def _with_image(self, row: InspectionRow, data: bytes | None, extension: str) -> InspectionRow:
        if data is not None and self.images is not None:
            try:
                row.saved_image = self.images.save(row, data, extension)
            except OSError as err:
                self._lost(0, "image_not_saved", f"audit image not saved ({err.strerror or err})")
        return row

    def _prune(self, store: LogStore) -> None:
        s = self.settings
        if s.log_keep_days > 0:
            store.write("DELETE FROM inspections WHERE ts < ?", (time.time() - s.log_keep_days * 86400.0,))
        if s.log_max_rows > 0:
            newest = store.fetch("SELECT MAX(id) FROM inspections")[0][0] or 0
            store.write("DELETE FROM inspections WHERE id <= ?", (newest - s.log_max_rows,))

    def close(self) -> None:
        self.flush(10.0)
        self.queue.put(None)
        self._writer.join(10.0)

    # --- reading -----------------------------------------------------------------------------------------
    def _read(self, work: Callable[[LogStore], Any]) -> Any:
        store = open_store(self.target)
        try:
            return work(store)
        finally:
            store.close()

    def query(self, model: str | None = None, decision: str | None = None, since: float | None = None,
              until: float | None = None, limit: int = 50, offset: int = 0) -> dict[str, Any]:
        """Rows matching the filters, newest first, one page; and how many match in all."""
        where, params = _where(model, decision, since, until)

        def work(store: LogStore) -> dict[str, Any]:
            total = store.fetch(f"SELECT COUNT(*) FROM inspections{where}", params)[0][0]
            rows = store.fetch(f"SELECT {', '.join(LISTED)} FROM inspections{where} ORDER BY id DESC "
                               f"LIMIT ? OFFSET ?", (*params, limit, offset))
            return {"total": total, "items": [_listed(r) for r in rows]}
        return self._read(work)

    def csv_lines(self, model: str | None = None, decision: str | None = None, since: float | None = None,
                  until: float | None = None, page: int = 2000) -> Iterator[str]:
        """The matching rows as CSV (with a header), oldest first, read a page at a time."""
        where, params = _where(model, decision, since, until)
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(("time",) + LISTED)
        yield buffer.getvalue()
        last_id = 0
        while True:
            clause = f"{where} AND id > ?" if where else " WHERE id > ?"
            rows = self._read(lambda store: store.fetch(
                f"SELECT {', '.join(LISTED)} FROM inspections{clause} ORDER BY id LIMIT ?", (*params, last_id, page)))
            if not rows:
                return
            buffer.seek(0)
            buffer.truncate()
            for row in rows:
                writer.writerow((iso(row[1]),) + tuple(row))
            last_id = rows[-1][0]
            yield buffer.getvalue()

    def summary(self, model: str, now: float | None = None) -> dict[str, Any]:
        """Counts by verdict (all time in the log), yield, and parts/min and NG rate over recent windows."""
        now = time.time() if now is None else now

        def work(store: LogStore) -> dict[str, Any]:
            counts = dict.fromkeys(DECISIONS, 0)
            counts.update(dict(store.fetch("SELECT decision, COUNT(*) FROM inspections WHERE model = ? "
                                           "GROUP BY decision", (model,))))
            windows = []
            for minutes in WINDOWS_MIN:
                found = dict.fromkeys(DECISIONS, 0)
                found.update(dict(store.fetch("SELECT decision, COUNT(*) FROM inspections WHERE model = ? AND ts >= ? "
                                              "GROUP BY decision", (model, now - 60.0 * minutes))))
                judged = found["normal"] + found["anomalous"]
                windows.append({"minutes": minutes, "parts": sum(found.values()),
                                "parts_per_min": round(sum(found.values()) / minutes, 3),
                                "ng_rate": round(found["anomalous"] / judged, 4) if judged else None})
            judged = counts["normal"] + counts["anomalous"]
            return {"model": model, "ok": counts["normal"], "ng": counts["anomalous"], "errors": counts["error"],
                    "total": sum(counts.values()), "yield": round(counts["normal"] / judged, 4) if judged else None,
                    "windows": windows}
        return self._read(work)

    def trend(self, model: str, minutes: int = 60, now: float | None = None) -> list[dict[str, Any]]:
        """Per minute of the last `minutes`: parts, NG, errors, mean and max normalised score (oldest first)."""
        now = time.time() if now is None else now

        def work(store: LogStore) -> list[tuple]:
            return store.fetch(
                f"SELECT {store.minute} AS minute, COUNT(*), "
                f"SUM(CASE WHEN decision = 'anomalous' THEN 1 ELSE 0 END), "
                f"SUM(CASE WHEN decision = 'error' THEN 1 ELSE 0 END), AVG(normalized), MAX(normalized) "
                f"FROM inspections WHERE model = ? AND ts >= ? GROUP BY minute ORDER BY minute",
                (model, now - 60.0 * minutes))
        return [{"minute": iso(60.0 * m), "ts": 60.0 * m, "parts": n, "ng": ng, "errors": errors,
                 "mean_normalized": None if mean is None else round(mean, 4),
                 "max_normalized": None if peak is None else round(peak, 4)}
                for m, n, ng, errors, mean, peak in self._read(work)]

    def note_feedback(self, model: str, sha256: str, label: str | None) -> None:
        """Operator feedback on an image: every row of that model and image carries it (None clears it)."""
        when = None if label is None else time.time()
        try:
            self._read(lambda store: store.write("UPDATE inspections SET feedback = ?, feedback_ts = ? "
                                                 "WHERE model = ? AND sha256 = ?", (label, when, model, sha256)))
        except Exception as err:
            self._lost(0, "feedback_not_noted", f"feedback not noted in the log ({err})")

    def _scores(self, model: str, version: str, count: int, order: str, ok_only: bool = False) -> list[float]:
        judged = "AND decision = 'normal' " if ok_only else ""
        return [r[0] for r in self._read(lambda store: store.fetch(
            f"SELECT score FROM inspections WHERE model = ? AND version = ? AND score IS NOT NULL {judged}"
            f"ORDER BY id {order} LIMIT ?", (model, version, count)))]

    def first_scores(self, model: str, version: str, count: int) -> list[float]:
        """The first `count` scores of one model version's parts judged OK (the drift alarm's reference)."""
        return self._scores(model, version, count, "ASC", ok_only=True)

    def recent_scores(self, model: str, version: str, count: int) -> list[float]:
        """The last `count` scores of one model version, oldest first (the drift alarm after a restart)."""
        return self._scores(model, version, count, "DESC")[::-1]

    def alarm_started(self, model: str, version: str, kind: str, value: float, detail: str) -> None:
        self._read(lambda store: store.write("INSERT INTO alarms (model, version, kind, started, value, detail) "
                                             "VALUES (?, ?, ?, ?, ?, ?)",
                                             (model, version, kind, time.time(), value, detail)))

    def alarm_ended(self, model: str, kind: str) -> None:
        self._read(lambda store: store.write("UPDATE alarms SET ended = ? WHERE model = ? AND kind = ? "
                                             "AND ended IS NULL", (time.time(), model, kind)))

    def alarms(self, model: str, limit: int = 20) -> list[dict[str, Any]]:
        rows = self._read(lambda store: store.fetch(
            "SELECT kind, version, started, ended, value, detail FROM alarms WHERE model = ? "
            "ORDER BY id DESC LIMIT ?", (model, limit)))
        return [{"kind": k, "version": v, "started": iso(s), "ended": iso(e), "value": value, "detail": d}
                for k, v, s, e, value, d in rows]

    def key_logged(self, store: LogStore, key: str) -> str | None:
        """The decision logged for a watched file (its image_key), or None."""
        rows = store.fetch("SELECT decision FROM inspections WHERE image_key = ?", (key,))
        return rows[0][0] if rows else None


def _where(model: str | None, decision: str | None, since: float | None, until: float | None) -> tuple[str, list]:
    clauses, params = [], []
    for column, op, value in (("model", "=", model), ("decision", "=", decision), ("ts", ">=", since),
                              ("ts", "<", until)):
        if value is not None:
            clauses.append(f"{column} {op} ?")
            params.append(value)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _listed(row: tuple) -> dict[str, Any]:
    item = dict(zip(LISTED, row))
    item["time"] = iso(item["ts"])
    return item

