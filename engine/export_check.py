"""Export verifies itself: every written program, in every installed engine that reads it, against
the dynamic graph, on a seeded input (and a real image if given); beyond 1e-4 relative it is refused.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

from datasets.preprocess import load_image, preprocess_image
from deploy.runtimes import ExportFiles, RuntimeOptions, installed_engines, open_runtime
from models.feature_extractor import PatchFeatureExtractor, extract
from utils.config import DataConfig
from utils.errors import UserError

# Scores and maps must agree with predict.py to 1e-5 / 1e-4; the embeddings they come from to this.
EXPORT_TOLERANCE = 1e-4
CHECK_SEED = 0


class RuntimeCheck(NamedTuple):
    engine: str
    source: str
    max_rel_diff: float


def check_inputs(data: DataConfig, image: str | None) -> np.ndarray:
    """A seeded batch of two (so the dynamic batch size is checked too), and the real image if given."""
    height, width = data.crop_hw
    batch = np.random.default_rng(CHECK_SEED).standard_normal((2, 3, height, width)).astype(np.float32)
    if image is None:
        return batch
    real = preprocess_image(load_image(image), data.resize, data.crop_size, data.mean, data.std, data.interpolation)
    return np.concatenate([batch, real[None]])


def relative_difference(expected: np.ndarray, actual: np.ndarray) -> float:
    """max |actual - expected| / max |expected|; inf for another shape or a non-finite output."""
    if actual.shape != expected.shape or not np.isfinite(actual).all():
        return float("inf")
    return float(np.abs(actual - expected).max() / max(float(np.abs(expected).max()), 1e-12))


def runtime_variants(files: ExportFiles) -> list[tuple[str, ExportFiles]]:
    """(engine, files) for every engine installed and every file it reads among the written ones."""
    variants = []
    for engine in installed_engines():
        if engine == "paddle":
            variants.append((engine, files))
        if engine == "openvino" and files.program.endswith(".pdmodel"):
            variants.append((engine, files))
        if engine in ("openvino", "onnxruntime") and files.onnx:
            # program pointed at the ONNX file: OpenVINO then reads that one, not the .pdmodel.
            variants.append((engine, dataclasses.replace(files, program=files.onnx)))
    return variants


def verify_export(extractor: PatchFeatureExtractor, files: ExportFiles, data: DataConfig,
                  image: str | None = None, cpu_threads: int = 2) -> list[RuntimeCheck]:
    """One RuntimeCheck per engine and file; UserError naming the first beyond EXPORT_TOLERANCE."""
    inputs = check_inputs(data, image)
    expected = extract(extractor, inputs)
    checks = []
    for engine, variant in runtime_variants(files):
        runtime = open_runtime(variant, RuntimeOptions(backend=engine, cpu_threads=cpu_threads))
        check = RuntimeCheck(engine, runtime.source, relative_difference(expected, runtime(inputs)))
        if not check.max_rel_diff <= EXPORT_TOLERANCE:
            raise UserError(f"export refused: {engine} running {check.source.rsplit('/', 1)[-1]} differs from the "
                            f"dynamic graph by {check.max_rel_diff:.2e} (relative, limit {EXPORT_TOLERANCE:.0e}); "
                            f"nothing was written")
        checks.append(check)
    return checks
