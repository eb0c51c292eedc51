import json
import time
from types import SimpleNamespace

from deploy.benchmark import AutoLogTimer, StageTimer, benchmark_numbers, benchmark_report, report_benchmark


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
    # Wall time of the timed batches: at least their stages (run one after another here).
    assert times["end_to_end"] >= times["preprocess"] + times["inference"] + times["postprocess"] - 1e-6
    numbers = benchmark_numbers(timer, "PatchCore-resnet18", 2, "fp32", "cpu", 2, True)
    report = benchmark_report(numbers)
    for key in ("batch_size: 2", "precision: fp32", "device: cpu", "cpu_threads: 2", "enable_mkldnn: True",
                f"inference_time(ms/img): {times['inference']:.2f}", "cpu_peak_memory(MB)"):
        assert key in report


def test_report_benchmark_prints_and_saves_the_same_numbers(tmp_path, capsys):
    timer = StageTimer()
    with timer.stage("inference", n_images=3):
        time.sleep(0.003)
    saved = report_benchmark(timer, str(tmp_path), model_name="PaDiM-resnet18", batch_size=3, precision="fp32",
                             device="cpu", cpu_threads=1, enable_mkldnn=False)
    assert json.loads((tmp_path / "benchmark.json").read_text()) == saved
    assert saved["images_timed"] == 3 and saved["inference_time(ms/img)"] >= 1.0
    assert f"total_time(ms/img): {saved['total_time(ms/img)']:.2f}" in capsys.readouterr().out


def test_autolog_timer_stamps_in_autologs_order():
    calls = []
    times = SimpleNamespace(start=lambda: calls.append("start"), stamp=lambda: calls.append("stamp"),
                            end=lambda stamp: calls.append(f"end:{stamp}"))
    timer = AutoLogTimer(SimpleNamespace(times=times))
    for name in ("preprocess", "inference", "postprocess"):
        with timer.stage(name, 1):
            pass
    assert calls == ["start", "stamp", "stamp", "end:True"]


def test_reading_ahead_keeps_order_and_reports_a_bad_image_in_its_batch(tmp_path):
    import numpy as np
    from PIL import Image

    from deploy.batch_scoring import preprocessed_batches
    from utils.config import DataConfig

    paths = []
    for i in range(5):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.full((40, 40, 3), 40 * i, np.uint8)).save(path)
        paths.append(str(path))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    paths.insert(3, str(bad))
    data = DataConfig(resize=32, crop_size=32)
    seen = list(preprocessed_batches(paths, data, batch_size=2))
    assert [batch for batch, _, _ in seen] == [paths[0:2], paths[2:4], paths[4:6]]
    assert [sorted(errors) for _, _, errors in seen] == [[], [str(bad)], []]
    assert "bad.png" in seen[1][2][str(bad)]
    values = [image[0, 0, 0] for _, images, _ in seen for image in images]
    expected = (40 * np.arange(5) / 255.0 - data.mean[0]) / data.std[0]
    np.testing.assert_allclose(values, expected, rtol=1e-5)
