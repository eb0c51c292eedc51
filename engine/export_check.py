"""Export verifies itself: every written program, in every installed engine that reads it, against
the dynamic graph, on a seeded input (and a real image if given); beyond 1e-4 relative it is refused.
The self-contained ONNX model (--format onnx_full) is checked on its scores and maps instead.
"""
from __future__ import annotations

import dataclasses
import os
from typing import NamedTuple

import numpy as np

from datasets.preprocess import load_image, preprocess_image
from deploy.runtimes import ExportFiles, RuntimeOptions, installed_engines, open_runtime
from models.feature_extractor import PatchFeatureExtractor, extract
from models.model_file import AnomalyModel
from utils.config import DEFAULT_CPU_THREADS, DataConfig
from utils.errors import UserError, last_line

# Scores and maps must agree with predict.py to 1e-5 / 1e-4; the embeddings they come from to this.
EXPORT_TOLERANCE = 1e-4
FULL_SCORE_TOLERANCE = 1e-5
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
                  image: str | None = None, cpu_threads: int = DEFAULT_CPU_THREADS) -> list[RuntimeCheck]:
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


def _run_full_model(engine: str, path: str, images: np.ndarray, cpu_threads: int) -> dict[str, np.ndarray]:
    """The self-contained model's outputs by name, in ONNX Runtime or OpenVINO (f32, as the runtimes)."""
    if engine == "onnxruntime":
        import onnxruntime

        settings = onnxruntime.SessionOptions()
        settings.intra_op_num_threads, settings.log_severity_level = cpu_threads, 3
        session = onnxruntime.InferenceSession(path, settings, providers=["CPUExecutionProvider"])
        return dict(zip([o.name for o in session.get_outputs()], session.run(None, {"images": images})))
    import openvino

    core = openvino.Core()
    compiled = core.compile_model(core.read_model(path), "CPU", {"INFERENCE_NUM_THREADS": cpu_threads,
                                                                 "INFERENCE_PRECISION_HINT": "f32"})
    results = compiled.create_infer_request().infer([images])
    # An output can carry several tensor names in OpenVINO: ask for each by the graph's name.
    return {name: np.array(results[compiled.output(name)]) for name in ("image_score", "anomaly_map")}


def verify_full_model(model: AnomalyModel, extractor: PatchFeatureExtractor, path: str, data: DataConfig,
                      image: str | None = None, cpu_threads: int = DEFAULT_CPU_THREADS) -> list[RuntimeCheck]:
    """The self-contained ONNX model against the dynamic graph and the project's scorer: image scores
    to FULL_SCORE_TOLERANCE, maps to EXPORT_TOLERANCE (relative), in every installed ONNX engine."""
    inputs = check_inputs(data, image)
    expected = model.scorer()(extract(extractor, inputs))
    checks = []
    for engine in (e for e in installed_engines() if e in ("onnxruntime", "openvino")):
        try:
            outputs = _run_full_model(engine, path, inputs, cpu_threads)
        except Exception as err:   # the engines raise their own C++ errors
            raise UserError(f"export refused: {engine} cannot run {os.path.basename(path)}: "
                            f"{last_line(err)}; nothing was written") from None
        scores = relative_difference(expected.image_scores, outputs["image_score"])
        maps = max(relative_difference(e, a) for e, a in zip(expected.anomaly_maps, outputs["anomaly_map"]))
        if not (scores <= FULL_SCORE_TOLERANCE and maps <= EXPORT_TOLERANCE):
            raise UserError(f"export refused: {engine} running {os.path.basename(path)} differs from the dynamic "
                            f"graph by {scores:.2e} in image scores, {maps:.2e} in maps (relative, limits "
                            f"{FULL_SCORE_TOLERANCE:.0e}, {EXPORT_TOLERANCE:.0e}); nothing was written")
        checks.append(RuntimeCheck(engine, path, max(scores, maps)))
    return checks
