"""The drift alarm's reference is the first parts judged OK: a stream that starts with defects
does not become the baseline (it once read as a drift index of 1e10 on the operator page)."""
import pytest
from prometheus_client import CollectorRegistry

from deploy.service.drift import DriftAlarms
from deploy.service.station_settings import StationSettings

THRESHOLD = 2.0


def monitor(window: int = 10):
    return DriftAlarms(StationSettings(drift_window=window), CollectorRegistry(), None).add("part", "v1", THRESHOLD)


def feed(drift, scores):
    for score in scores:
        drift.observe("v1", THRESHOLD, "anomalous" if score >= THRESHOLD else "normal", score)


def test_defects_first_do_not_become_the_reference():
    drift = monitor()
    feed(drift, [5.0] * 10 + [1.0] * 10)    # ten NG parts, then ten good ones at 1.0
    assert drift.index == pytest.approx(0.0)
    assert not drift.active["score"]
    assert drift.ng_rate == 0.0


def test_the_index_still_rises_when_the_good_parts_creep_up():
    drift = monitor()
    feed(drift, [1.0] * 10 + [1.6] * 10)    # the typical part 60% of the way to the threshold
    assert drift.index == pytest.approx(0.6)
    assert drift.active["score"]


def test_the_reference_waits_for_enough_ok_parts():
    drift = monitor()
    feed(drift, [5.0] * 15 + [1.0] * 5)     # only five OK parts so far: nothing judged on scores
    assert drift.index is None
    assert drift.active["ng_rate"]          # the NG share is what speaks for such a start


def test_after_a_restart_the_reference_comes_from_the_logged_ok_parts(tmp_path):
    import time

    from deploy.service.inspection_log import InspectionLog
    from deploy.service.log_store import InspectionRow

    log = InspectionLog(StationSettings(data_dir=str(tmp_path), log_enabled=True, drift_window=10), CollectorRegistry())
    for i, score in enumerate([5.0] * 10 + [1.0] * 10):
        log.record(InspectionRow(ts=time.time(), model="part", version="v1", source="api:test",
                                 decision="anomalous" if score >= THRESHOLD else "normal", sha256=f"{i:064x}",
                                 score=score, normalized=0.5, latency_ms=1.0))
    assert log.flush(10)
    assert log.first_scores("part", "v1", 10) == [1.0] * 10
    restarted = DriftAlarms(StationSettings(drift_window=10), CollectorRegistry(), log).add("part", "v1", THRESHOLD)
    assert restarted.index == pytest.approx(0.0)
    log.close()
