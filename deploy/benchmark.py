"""Benchmark logging in the spirit of PaddleOCR's auto_log (which is not on PyPI).

Times preprocess / inference / postprocess per image and reports them with the model, batch size,
precision, device, threads and peak CPU memory. When `auto_log` is importable it is used instead.
"""
from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

from utils.io import atomic_write_text
from utils.runtime import peak_memory_mb

STAGES = ("preprocess", "inference", "postprocess")


@dataclass
class StageTimer:
    """Wall-clock time per pipeline stage, skipping the first `warmup` batches of each stage.

    Images are read ahead in a background thread, so the stages overlap: `end_to_end` is the wall
    time from the first timed batch to the last, per image, and is less than the stages' sum.
    """
    warmup: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: {s: 0.0 for s in STAGES})
    batches: dict[str, int] = field(default_factory=lambda: {s: 0 for s in STAGES})
    images: int = 0
    first_start: float | None = None
    last_end: float = 0.0

    @contextmanager
    def stage(self, name: str, n_images: int = 0) -> Iterator[None]:
        start = time.perf_counter()
        yield
        end = time.perf_counter()
        self.batches[name] += 1
        if self.batches[name] > self.warmup:
            self.seconds[name] += end - start
            if self.first_start is None:
                self.first_start = start
            if name == "inference":
                self.images += n_images
            if name == "postprocess":
                self.last_end = end

    def per_image_ms(self) -> dict[str, float]:
        n = max(self.images, 1)
        times = {s: 1000.0 * self.seconds[s] / n for s in STAGES}
        wall = self.last_end - self.first_start if self.first_start is not None else 0.0
        times["end_to_end"] = 1000.0 * max(wall, 0.0) / n
        return times


def benchmark_numbers(timer: StageTimer, model_name: str, batch_size: int, precision: str, device: str,
                      cpu_threads: int, enable_mkldnn: bool, runtime: str = "paddle") -> dict[str, Any]:
    """What a benchmark run measured, keyed as in the printed block."""
    times = timer.per_image_ms()
    return {"model_name": model_name, "batch_size": batch_size, "precision": precision, "device": device,
            "runtime": runtime, "cpu_threads": cpu_threads, "enable_mkldnn": enable_mkldnn, "images_timed": timer.images,
            "preprocess_time(ms/img)": times["preprocess"], "inference_time(ms/img)": times["inference"],
            "postprocess_time(ms/img)": times["postprocess"], "total_time(ms/img)": times["end_to_end"],
            "cpu_peak_memory(MB)": peak_memory_mb()}


def benchmark_report(numbers: dict[str, Any]) -> str:
    """The benchmark block infer.py prints with --enable_benchmark."""
    def value(key: str) -> str:
        number = numbers[key]
        if not isinstance(number, float):
            return str(number)
        return f"{number:.1f}" if key.startswith("cpu_peak_memory") else f"{number:.2f}"

    lines = ["----------------------- benchmark -----------------------"]
    return "\n".join(lines + [f"{key}: {value(key)}" for key in numbers])


class AutoLogTimer(StageTimer):
    """A StageTimer that also drives auto_log's AutoLogger, for TIPC-standard benchmark logs.

    auto_log stamps the stages in order (start, stamp, stamp, end), which matches the
    preprocess -> inference -> postprocess sequence of every batch.
    """

    def __init__(self, logger: object, warmup: int = 0):
        super().__init__(warmup=warmup)
        self.logger = logger

    @contextmanager
    def stage(self, name: str, n_images: int = 0) -> Iterator[None]:
        times = self.logger.times
        if name == "preprocess":
            times.start()
        with super().stage(name, n_images):
            yield
        if name == "postprocess":
            times.end(stamp=True)
        else:
            times.stamp()


def make_timer(benchmark: bool, warmup: int, model_name: str, batch_size: int, precision: str,
               use_gpu: bool) -> StageTimer:
    """auto_log when it is installed and a benchmark was asked for, else the built-in timer."""
    if benchmark:
        try:
            import auto_log  # not on PyPI: installed from PaddlePaddle's AutoLog repository
        except ImportError:
            return StageTimer(warmup=warmup)
        logger = auto_log.AutoLogger(model_name=model_name, model_precision=precision, batch_size=batch_size,
                                     data_shape="dynamic", save_path=None, inference_config=None,
                                     pids=os.getpid(), process_name=None, gpu_ids=0 if use_gpu else None,
                                     time_keys=["preprocess_time", "inference_time", "postprocess_time"],
                                     warmup=warmup)
        return AutoLogTimer(logger, warmup=warmup)
    return StageTimer(warmup=warmup)


def report_benchmark(timer: StageTimer, save_path: str, **settings: Any) -> dict[str, Any]:
    """Print the benchmark block (auto_log's report when it timed the run) and save it as benchmark.json.

    `settings` are benchmark_numbers' keyword arguments (model_name, batch_size, precision, ...).
    """
    numbers = benchmark_numbers(timer, **settings)
    if isinstance(timer, AutoLogTimer):
        timer.logger.report()
    else:
        print(benchmark_report(numbers))
    atomic_write_text(os.path.join(save_path, "benchmark.json"), json.dumps(numbers, indent=1))
    return numbers
