"""Training-time feature extraction at inference speed: the extractor exported to a scratch static
program and run by the fastest installed runtime (OpenVINO, else Paddle Inference with oneDNN), checked
against the dynamic graph on the first batch; the dynamic graph stays the fallback.

Bottle MobileNetV2 on 2 threads: the dynamic graph takes about 47 ms/img for the network, the same
network 7-13 ms/img in OpenVINO / Paddle Inference with oneDNN. PATCHCORE_FIT_RUNTIME=dynamic keeps
the dynamic graph (or names one runtime: openvino, paddle).
"""
from __future__ import annotations

import copy
import os
import shutil
import sys
import tempfile
from typing import Callable

import numpy as np
import paddle

from models.feature_extractor import PatchFeatureExtractor, extract
from models.runtimes import ExportFiles, RuntimeOptions, open_runtime
from utils.errors import last_line

# Features the fit gets from a runtime agree with the dynamic graph's to this (relative to the
# largest value), or the fit extracts them on the dynamic graph. The export check's bound: float32
# networks differ by about 1e-5 between runtimes (bottle MobileNetV2 with ImageNet weights: 9.4e-6
# avgpool over all 209 training images, 1.1e-5 unfold on the first batch), and at that difference
# scores still agree to 2.5e-6 and the bottle metrics are unchanged.
FIT_TOLERANCE = 1e-4
RUNTIME_VARIABLE = "PATCHCORE_FIT_RUNTIME"

Embedder = Callable[[np.ndarray], np.ndarray]


def dynamic_graph(extractor: PatchFeatureExtractor) -> Embedder:
    """images -> embeddings with `extractor` on the dynamic graph (predict.py's path, the fallback)."""
    return lambda images: extract(extractor, images)


class RuntimeEmbedder:
    """images -> embeddings through a runtime, once its first batch matched the dynamic graph; any
    failure before that (export, runtime, mismatch) turns it into the dynamic graph, with one line
    on stderr saying why."""

    def __init__(self, extractor: PatchFeatureExtractor, crop_hw: tuple[int, int], runtime: str):
        self.extractor, self.crop_hw, self.runtime = extractor, crop_hw, runtime
        self.embed: Embedder | None = None
        self.scratch = tempfile.mkdtemp(prefix="patchcore_fit_extractor_")

    def _open(self) -> Embedder:
        # A copy: to_static would turn the extractor itself into a static function.
        static = paddle.jit.to_static(copy.deepcopy(self.extractor), full_graph=True, input_spec=[
            paddle.static.InputSpec([None, 3, *self.crop_hw], "float32", "images")])
        # The classic program, whatever paddle's default: OpenVINO reads it directly.
        with paddle.pir_utils.OldIrGuard():
            paddle.jit.save(static, os.path.join(self.scratch, "model"))
        files = ExportFiles.in_folder(self.scratch)
        return open_runtime(files, RuntimeOptions(runtime=self.runtime, cpu_threads=os.cpu_count() or 2))

    def _first(self, images: np.ndarray) -> np.ndarray:
        expected = extract(self.extractor, images)
        try:
            runtime = self._open()
            features = runtime(images)
            difference = float(np.abs(features - expected).max() / max(float(np.abs(expected).max()), 1e-12))
            if features.shape != expected.shape or not difference <= FIT_TOLERANCE:
                raise ValueError(f"{runtime.name} differs from the dynamic graph by {difference:.1e}")
        except Exception as err:   # any runtime trouble: the dynamic graph does the work as before
            print(f"warning: fit extraction on the dynamic graph ({last_line(err)})",
                  file=sys.stderr, flush=True)
            self.embed = dynamic_graph(self.extractor)
            return expected
        self.embed = runtime
        return features

    def __call__(self, images: np.ndarray) -> np.ndarray:
        if self.embed is None:
            return self._first(images)
        return self.embed(images)

    def __del__(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)


def training_embedder(extractor: PatchFeatureExtractor, crop_hw: tuple[int, int]) -> Embedder:
    """The embedder a fit extracts with: a runtime on the CPU (see module doc), the dynamic graph on
    a GPU or when PATCHCORE_FIT_RUNTIME=dynamic."""
    runtime = os.environ.get(RUNTIME_VARIABLE, "auto")
    if runtime == "dynamic" or paddle.device.get_device() != "cpu":
        return dynamic_graph(extractor)
    return RuntimeEmbedder(extractor, crop_hw, runtime)
