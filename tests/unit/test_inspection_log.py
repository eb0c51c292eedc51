"""The inspection log: schema migration, batched writes from many threads, queries, and failures that never
reach a prediction (a locked database, a full queue)."""
from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time

import pytest
from prometheus_client import CollectorRegistry

from deploy.service.inspection_log import InspectionLog
from deploy.service.log_store import MIGRATIONS, SCHEMA_VERSION, InspectionRow, LogStore, open_store, prepare
from deploy.service.station_settings import StationSettings
from helpers import ROOT
from utils.errors import UserError


def make_log(tmp_path, **kw) -> tuple[InspectionLog, CollectorRegistry]:
    metrics = CollectorRegistry()
    settings = StationSettings(data_dir=str(tmp_path), log_enabled=True, **kw)
    return InspectionLog(settings, metrics), metrics


def row(i: int, model: str = "part", decision: str = "normal", ts: float | None = None) -> InspectionRow:
    return InspectionRow(ts=time.time() if ts is None else ts, model=model, version="v1", source="api:test",
                         decision=decision, sha256=f"{i:064x}", score=float(i), normalized=0.1, latency_ms=1.0)


def test_an_old_schema_is_migrated_and_keeps_its_rows_and_a_newer_one_is_refused(tmp_path):
    path = str(tmp_path / "old.sqlite3")
    store = open_store(path)
    store.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for statement in MIGRATIONS[0]:
        store.execute(statement.format(**store.dialect))
    store.execute("INSERT INTO schema_version (version) VALUES (1)")
    store.connection.commit()
    store.insert([row(7)])
    assert store.migrate() == 1
    assert store.fetch("SELECT MAX(version) FROM schema_version")[0][0] == SCHEMA_VERSION == 2
    assert store.fetch("SELECT score FROM inspections") == [(7.0,)]
    assert store.fetch("SELECT COUNT(*) FROM alarms") == [(0,)]
    store.write("INSERT INTO schema_version (version) VALUES (99)")
    with pytest.raises(UserError, match="newer than this program"):
        store.migrate()
    store.close()


def test_rows_from_many_threads_are_all_written_and_read_back_newest_first(tmp_path):
    log, metrics = make_log(tmp_path)
    decisions = ("normal", "anomalous", "error")

    def send(first: int) -> None:
        for i in range(first, first + 100):
            log.record(row(i, decision=decisions[i % 3]))

    threads = [threading.Thread(target=send, args=(k * 100,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert log.flush(10)
    page = log.query(limit=10, offset=0)
    assert page["total"] == 400 and len(page["items"]) == 10
    ids = [item["id"] for item in page["items"]]
    assert ids == sorted(ids, reverse=True) and ids[0] == 400
    assert log.query(decision="anomalous", limit=500)["total"] == 133
    assert log.query(model="other")["total"] == 0
    summary = log.summary("part")
    assert (summary["ok"], summary["ng"], summary["errors"], summary["total"]) == (134, 133, 133, 400)
    assert summary["yield"] == round(134 / 267, 4)
    lines = "".join(log.csv_lines(page=64)).splitlines()
    assert len(lines) == 401 and lines[0].startswith("time,id,ts,model")
    assert metrics.get_sample_value("patchcore_log_rows_written_total") == 400
    log.note_feedback("part", f"{5:064x}", "good")
    assert [i["feedback"] for i in log.query(limit=500)["items"] if i["sha256"] == f"{5:064x}"] == ["good"]
    log.close()


def test_time_filters_and_the_per_minute_trend(tmp_path):
    log, _ = make_log(tmp_path)
    now = 1_800_000_000.0   # a whole minute
    for i, age in enumerate((30, 90, 95, 4000)):   # seconds before `now`
        log.record(row(i, decision="anomalous" if i == 1 else "normal", ts=now - age))
    log.flush()
    assert log.query(since=now - 100)["total"] == 3
    assert log.query(since=now - 100, until=now - 60)["total"] == 2
    trend = log.trend("part", minutes=60, now=now)
    assert [(t["parts"], t["ng"]) for t in trend] == [(2, 1), (1, 0)]
    log.close()


def test_a_locked_database_or_a_full_queue_drops_rows_with_a_warning_never_an_exception(tmp_path, monkeypatch,
                                                                                         capsys):
    log, metrics = make_log(tmp_path)
    real_insert = LogStore.insert

    def locked(self, rows):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(LogStore, "insert", locked)
    for i in range(5):
        log.record(row(i))
    assert log.flush(10)
    assert metrics.get_sample_value("patchcore_log_rows_dropped_total", {"reason": "write_failed"}) == 5
    assert "database is locked" in capsys.readouterr().err
    monkeypatch.setattr(LogStore, "insert", real_insert)
    log.record(row(9))
    log.flush()
    assert log.query()["total"] == 1   # writing again once the database is free
    log.close()

    small, metrics = make_log(tmp_path / "small", log_queue=2)
    gate = threading.Event()
    monkeypatch.setattr(LogStore, "insert", lambda self, rows: gate.wait(10) and real_insert(self, rows))
    for i in range(20):
        small.record(row(i))   # returns at once although the writer is stuck
    assert metrics.get_sample_value("patchcore_log_rows_dropped_total", {"reason": "queue_full"}) >= 17
    gate.set()
    small.close()


WRITER = """
import sys, time
sys.path.insert(0, {root!r})
from prometheus_client import CollectorRegistry
from deploy.service.inspection_log import InspectionLog
from deploy.service.log_store import InspectionRow
from deploy.service.station_settings import StationSettings
log = InspectionLog(StationSettings(log_db={target!r}, log_enabled=True), CollectorRegistry())
for i in range(300):
    log.record(InspectionRow(ts=time.time(), model="part", version="v", source=sys.argv[1], decision="normal"))
log.close()
"""


def test_two_processes_write_one_sqlite_file(tmp_path):
    target = str(tmp_path / "shared.sqlite3")
    code = WRITER.format(root=str(ROOT), target=target)
    writers = [subprocess.Popen([sys.executable, "-c", code, f"api:p{k}"]) for k in range(2)]
    assert [w.wait(60) for w in writers] == [0, 0]
    store = open_store(target)
    assert store.fetch("SELECT source, COUNT(*) FROM inspections GROUP BY source ORDER BY source") == \
        [("api:p0", 300), ("api:p1", 300)]
    store.close()


def test_retention_by_age_and_count(tmp_path):
    log, _ = make_log(tmp_path, log_keep_days=1, log_max_rows=3)
    old = time.time() - 2 * 86400
    for i in range(6):
        log.record(row(i, ts=old if i == 0 else None))
    log.flush()
    store = open_store(log.target)
    log._prune(store)
    assert [r[0] for r in store.fetch("SELECT score FROM inspections ORDER BY id")] == [3.0, 4.0, 5.0]
    store.close()
    log.close()


def test_an_unreachable_postgres_url_is_a_one_line_error():
    with pytest.raises(UserError, match="cannot connect to PostgreSQL"):
        prepare("postgresql://nobody:x@127.0.0.1:1/none")


def test_ng_images_are_kept_for_audit_within_their_size_bound(tmp_path):
    log, _ = make_log(tmp_path, save_ng_images=True, saved_images_mb=2.5 / 1024)   # 2,560 bytes
    for i in range(6):
        data = bytes([i]) * 1000   # 1,000-byte "images"
        log.record(row(i, decision="anomalous" if i != 3 else "normal"), data, ".png")
    log.flush()
    kept = sorted((tmp_path / "images").rglob("*.png"))
    assert [p.stat().st_size for p in kept] == [1000, 1000]   # the two newest NG images
    items = {i["score"]: i["saved_image"] for i in log.query()["items"]}
    assert items[3.0] is None and all(items[s] for s in (0.0, 1.0, 2.0, 4.0, 5.0))
    assert {p.name for p in kept} == {f"{4:064x}.png", f"{5:064x}.png"}
    log.close()
