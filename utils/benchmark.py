"""Benchmark logging in the spirit of PaddleOCR's auto_log (which is not on PyPI).

Times preprocess / inference / postprocess per image and reports them with the model, batch size,
precision, device, threads and peak CPU memory. When `auto_log` is importable it is used instead.
"""
from __future__ import annotations

import resource
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

STAGES = ("preprocess", "inference", "postprocess")


def peak_memory_mb() -> float:
    """Peak resident memory of this process (Linux reports kB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


@dataclass
class StageTimer:
    """Wall-clock time per pipeline stage, skipping the first `warmup` batches of each stage."""
    warmup: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: {s: 0.0 for s in STAGES})
    batches: dict[str, int] = field(default_factory=lambda: {s: 0 for s in STAGES})
    images: int = 0

    @contextmanager
    def stage(self, name: str, n_images: int = 0) -> Iterator[None]:
        start = time.perf_counter()
        yield
        elapsed = time.perf_counter() - start
        self.batches[name] += 1
        if self.batches[name] > self.warmup:
            self.seconds[name] += elapsed
            if name == "inference":
                self.images += n_images

    def per_image_ms(self) -> dict[str, float]:
        n = max(self.images, 1)
        return {s: 1000.0 * self.seconds[s] / n for s in STAGES}


def benchmark_report(timer: StageTimer, model_name: str, batch_size: int, precision: str, device: str,
                     cpu_threads: int, enable_mkldnn: bool) -> str:
    """The benchmark block infer.py prints with --enable_benchmark."""
    times = timer.per_image_ms()
    lines = [
        "----------------------- benchmark -----------------------",
        f"model_name: {model_name}", f"batch_size: {batch_size}", f"precision: {precision}",
        f"device: {device}", f"cpu_threads: {cpu_threads}", f"enable_mkldnn: {enable_mkldnn}",
        f"images_timed: {timer.images}",
        f"preprocess_time(ms/img): {times['preprocess']:.2f}",
        f"inference_time(ms/img): {times['inference']:.2f}",
        f"postprocess_time(ms/img): {times['postprocess']:.2f}",
        f"total_time(ms/img): {sum(times.values()):.2f}",
        f"cpu_peak_memory(MB): {peak_memory_mb():.1f}",
    ]
    return "\n".join(lines)


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
            import os

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


def report_benchmark(timer: StageTimer, model_name: str, batch_size: int, precision: str, device: str,
                     cpu_threads: int, enable_mkldnn: bool) -> None:
    """Print the benchmark block: auto_log's report when it timed the run, else ours."""
    if isinstance(timer, AutoLogTimer):
        timer.logger.report()
    else:
        print(benchmark_report(timer, model_name, batch_size, precision, device, cpu_threads, enable_mkldnn))
