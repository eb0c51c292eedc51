"""Export verifies itself: every written program, in every installed runtime that reads it, against
the dynamic graph, on a seeded input (and real images if given: one image or a folder); beyond 1e-4
relative it is refused. The self-contained ONNX model (--format onnx_full) is checked on its scores
and maps instead.

Scores that agree to 1e-4 can still fall on both sides of the threshold, so the check also compares
decisions: every check input is scored through each runtime and through the dynamic graph and the
verdicts (models.thresholds, the model's own thresholds) must be the same for every input; one
flipped verdict refuses the export. Give the images the line cares about (e.g. the calibration
images train/good, or test images) with --check_image FOLDER.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable, NamedTuple

import numpy as np

from datasets.image_files import images_below
from datasets.preprocess import load_image, preprocess_image
from models.feature_extractor import PatchFeatureExtractor, extract
from models.model_file import AnomalyModel
from models.runtimes import ExportFiles, RuntimeOptions, installed_runtimes, open_runtime
from models.thresholds import Thresholds
from utils.config import DEFAULT_CPU_THREADS, DataConfig
from utils.errors import UserError, last_line

# Scores and maps must agree with predict.py to 1e-5 / 1e-4; the embeddings they come from to this.
EXPORT_TOLERANCE = 1e-4
FULL_SCORE_TOLERANCE = 1e-5
CHECK_SEED = 0
CHECK_BATCH = 8


class RuntimeCheck(NamedTuple):
    runtime: str
    source: str
    max_rel_diff: float
    decisions: int = 0                  # check inputs whose verdict matched the dynamic graph's
    threshold_distance: float = float("inf")   # nearest check score to the image threshold


def check_inputs(data: DataConfig, image: str | None) -> np.ndarray:
    """A seeded batch of two (so the dynamic batch size is checked too), and the real images if
    given (one image, or every image below a folder)."""
    height, width = data.crop_hw
    batch = np.random.default_rng(CHECK_SEED).standard_normal((2, 3, height, width)).astype(np.float32)
    if image is None:
        return batch
    paths = [image] if os.path.isfile(image) else images_below(image) if os.path.isdir(image) else []
    if not paths:
        raise UserError(f"--check_image {image}: not an image file or a folder holding images")
    real = [preprocess_image(load_image(path), data.resize, data.crop_size, data.mean, data.std, data.interpolation)
            for path in paths]
    return np.concatenate([batch, np.stack(real)])


def in_batches(run: Callable[[np.ndarray], np.ndarray], inputs: np.ndarray) -> np.ndarray:
    """`run` over `inputs` CHECK_BATCH at a time, concatenated (bounded memory for a folder of images)."""
    return np.concatenate([run(inputs[start:start + CHECK_BATCH]) for start in range(0, len(inputs), CHECK_BATCH)])


def decision_flips(thresholds: Thresholds, expected: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """Indices of the check inputs whose verdict from `actual` image scores differs from `expected`'s."""
    return np.flatnonzero(thresholds.flags(expected) != thresholds.flags(actual))


def refuse_flips(runtime: str, source: str, flips: np.ndarray, expected: np.ndarray, actual: np.ndarray,
                 thresholds: Thresholds) -> None:
    """UserError naming the first flipped verdict, if any."""
    if len(flips):
        first = int(flips[0])
        raise UserError(f"export refused: {runtime} running {os.path.basename(source)} flips the verdict of "
                        f"{len(flips)} of {len(expected)} check inputs (input {first}: score {actual[first]:.6g} "
                        f"against {expected[first]:.6g} on the dynamic graph, threshold {thresholds.image:.6g}); "
                        f"nothing was written")


def relative_difference(expected: np.ndarray, actual: np.ndarray) -> float:
    """max |actual - expected| / max |expected|; inf for another shape or a non-finite output."""
    if actual.shape != expected.shape or not np.isfinite(actual).all():
        return float("inf")
    return float(np.abs(actual - expected).max() / max(float(np.abs(expected).max()), 1e-12))


def runtime_variants(files: ExportFiles) -> list[tuple[str, ExportFiles]]:
    """(name, files) for every runtime installed and every file it reads among the written ones."""
    variants = []
    for name in installed_runtimes():
        if name == "paddle":
            variants.append((name, files))
        if name == "openvino" and files.program.endswith(".pdmodel"):
            variants.append((name, files))
        if name in ("openvino", "onnxruntime") and files.onnx:
            # program pointed at the ONNX file: OpenVINO then reads that one, not the .pdmodel.
            variants.append((name, dataclasses.replace(files, program=files.onnx)))
    return variants


def verify_export(model: AnomalyModel, extractor: PatchFeatureExtractor, files: ExportFiles,
                  image: str | None = None, cpu_threads: int = DEFAULT_CPU_THREADS) -> list[RuntimeCheck]:
    """One RuntimeCheck per runtime and file; UserError naming the first beyond EXPORT_TOLERANCE or
    the first flipped verdict."""
    inputs = check_inputs(model.config.data, image)
    expected = in_batches(lambda batch: extract(extractor, batch), inputs)
    scorer = model.scorer()
    thresholds = Thresholds.from_calibration(model.calibration) if model.calibration else None
    expected_scores = in_batches(lambda embedding: scorer(embedding).image_scores, expected)
    checks = []
    for name, variant in runtime_variants(files):
        runtime = open_runtime(variant, RuntimeOptions(runtime=name, cpu_threads=cpu_threads))
        actual = in_batches(runtime, inputs)
        check = RuntimeCheck(name, runtime.source, relative_difference(expected, actual))
        if not check.max_rel_diff <= EXPORT_TOLERANCE:
            raise UserError(f"export refused: {name} running {check.source.rsplit('/', 1)[-1]} differs from the "
                            f"dynamic graph by {check.max_rel_diff:.2e} (relative, limit {EXPORT_TOLERANCE:.0e}); "
                            f"nothing was written")
        if thresholds is not None:
            scores = in_batches(lambda embedding: scorer(embedding).image_scores, actual)
            refuse_flips(name, check.source, decision_flips(thresholds, expected_scores, scores), expected_scores,
                         scores, thresholds)
            check = check._replace(decisions=len(inputs),
                                   threshold_distance=float(np.min(np.abs(scores - thresholds.image))))
        checks.append(check)
    return checks


def _run_full_model(runtime: str, path: str, images: np.ndarray, cpu_threads: int) -> dict[str, np.ndarray]:
    """The self-contained model's outputs by name, in ONNX Runtime or OpenVINO (f32, as the runtimes)."""
    if runtime == "onnxruntime":
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
    thresholds = Thresholds.from_calibration(model.calibration)
    checks = []
    for runtime in (e for e in installed_runtimes() if e in ("onnxruntime", "openvino")):
        try:
            outputs = _run_full_model(runtime, path, inputs, cpu_threads)
        except Exception as err:   # the runtimes raise their own C++ errors
            raise UserError(f"export refused: {runtime} cannot run {os.path.basename(path)}: "
                            f"{last_line(err)}; nothing was written") from None
        scores = relative_difference(expected.image_scores, outputs["image_score"])
        maps = max(relative_difference(e, a) for e, a in zip(expected.anomaly_maps, outputs["anomaly_map"]))
        if not (scores <= FULL_SCORE_TOLERANCE and maps <= EXPORT_TOLERANCE):
            raise UserError(f"export refused: {runtime} running {os.path.basename(path)} differs from the dynamic "
                            f"graph by {scores:.2e} in image scores, {maps:.2e} in maps (relative, limits "
                            f"{FULL_SCORE_TOLERANCE:.0e}, {EXPORT_TOLERANCE:.0e}); nothing was written")
        actual = np.asarray(outputs["image_score"]).reshape(-1)
        refuse_flips(runtime, path, decision_flips(thresholds, expected.image_scores, actual), expected.image_scores,
                     actual, thresholds)
        checks.append(RuntimeCheck(runtime, path, max(scores, maps), len(actual),
                                   float(np.min(np.abs(actual - thresholds.image)))))
    return checks
