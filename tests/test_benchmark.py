import time
from types import SimpleNamespace

from utils.benchmark import AutoLogTimer, StageTimer, benchmark_report


def test_stage_timer_skips_warmup_and_reports_per_image():
    timer = StageTimer(warmup=1)
    for _ in range(3):
        with timer.stage("preprocess"):
            time.sleep(0.001)
        with timer.stage("inference", n_images=2):
            time.sleep(0.002)
        with timer.stage("postprocess"):
            pass
    assert timer.images == 4                      # the first batch of 2 is warm-up
    times = timer.per_image_ms()
    assert times["inference"] >= 1.0 and times["preprocess"] >= 0.5
    report = benchmark_report(timer, "PatchCore-resnet18", 2, "fp32", "cpu", 2, True)
    for key in ("batch_size: 2", "precision: fp32", "device: cpu", "cpu_threads: 2", "inference_time(ms/img)",
                "cpu_peak_memory(MB)"):
        assert key in report


def test_autolog_timer_stamps_in_autologs_order():
    calls = []
    times = SimpleNamespace(start=lambda: calls.append("start"), stamp=lambda: calls.append("stamp"),
                            end=lambda stamp: calls.append(f"end:{stamp}"))
    timer = AutoLogTimer(SimpleNamespace(times=times))
    for name in ("preprocess", "inference", "postprocess"):
        with timer.stage(name, 1):
            pass
    assert calls == ["start", "stamp", "stamp", "end:True"]
