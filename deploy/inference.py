"""Scoring new images and reporting decisions: shared by predict.py (dynamic graph) and infer.py.

Both scripts differ only in how a batch of images becomes patch embeddings (the dynamic-graph
extractor or the Paddle Inference predictor); everything after that is `run_inference`.
"""
from __future__ import annotations

import json
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator

import numpy as np

from datasets.preprocess import IMAGE_EXTENSIONS, list_images, load_image, preprocess_image, resized_rgb
from deploy.benchmark import StageTimer
from models.model_file import AnomalyModel
from models.scoring import Scores
from models.thresholds import Thresholds
from utils.config import DataConfig
from utils.errors import UserError
from utils.io import atomic_write, atomic_write_text, ensure_writable_dir
from utils.table import format_table, write_csv
from utils.visualize import save_figure

RESULT_COLUMNS = ("image", "image_score", "normalized_score", "decision", "defect_area")


def collect_images(input_path: str) -> list[str]:
    """One image, or every image below a folder (sorted, recursively)."""
    if os.path.isfile(input_path):
        return [input_path]
    if not os.path.isdir(input_path):
        raise UserError(f"input not found: {input_path}")
    paths = []
    for folder, dirs, _ in sorted(os.walk(input_path)):
        dirs.sort()
        paths += list_images(folder)
    if not paths:
        raise UserError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder {input_path}")
    return paths


Embedder = Callable[[np.ndarray], np.ndarray]


def preprocessed_batches(paths: list[str], data: DataConfig, batch_size: int,
                         ahead: int = 2) -> Iterator[tuple[list[str], np.ndarray]]:
    """(paths, images [B,3,H,W]) batch by batch, read and preprocessed `ahead` batches in advance.

    A background thread does the reading: PIL releases the GIL while it decodes and resizes, so on
    a machine with two cores the next images are decoded while the current ones go through the
    network and the memory bank (decoding a 900x900 PNG alone costs about 20 ms). Errors surface in
    order, when their batch is reached.
    """
    def load(batch: list[str]) -> np.ndarray:
        return np.stack([preprocess_image(load_image(p), data.resize, data.crop_size, data.mean, data.std)
                         for p in batch])

    batches = [paths[start:start + batch_size] for start in range(0, len(paths), batch_size)]
    with ThreadPoolExecutor(max_workers=1) as reader:
        pending = deque(reader.submit(load, batch) for batch in batches[:ahead])
        for i, batch in enumerate(batches):
            images = pending.popleft().result()
            if i + ahead < len(batches):
                pending.append(reader.submit(load, batches[i + ahead]))
            yield batch, images


def score_images(paths: list[str], data: DataConfig, embed: Embedder,
                 scorer: Callable[[np.ndarray], Scores], batch_size: int, timer: StageTimer | None = None) -> Scores:
    """Preprocess -> embed (dynamic graph or predictor) -> score, batch by batch.

    The preprocess stage's time is what the scoring waited for the reader (see preprocessed_batches).
    """
    timer = timer or StageTimer()
    parts = []
    batches = preprocessed_batches(paths, data, batch_size)
    while True:
        with timer.stage("preprocess"):
            batch, images = next(batches, (None, None))
        if batch is None:
            break
        with timer.stage("inference", len(batch)):
            embedding = embed(images)
        with timer.stage("postprocess"):
            try:
                parts.append(scorer(embedding))
            except ValueError as err:
                raise UserError(f"model and memory bank do not match: {err}") from None
    return Scores.concatenate(parts)


def decisions(paths: list[str], scores: Scores, thresholds: Thresholds) -> list[dict[str, Any]]:
    """Per image: raw score, score normalised to [0, 1] (0.5 = threshold), decision, flagged area."""
    normalized = thresholds.normalize(scores.image_scores)
    return [{"image": path, "image_score": float(raw), "normalized_score": float(norm),
             "decision": "anomalous" if raw >= thresholds.image else "normal",
             "defect_area": float((amap >= thresholds.pixel).mean())}
            for path, raw, norm, amap in zip(paths, scores.image_scores, normalized, scores.anomaly_maps)]


def save_outputs(rows: list[dict[str, Any]], scores: Scores, data: DataConfig, thresholds: Thresholds,
                 calibration: dict[str, Any], save_path: str, figures: bool = True,
                 save_maps: bool = False) -> None:
    """results.csv, results.json, optionally anomaly_maps.npz, and one figure per image."""
    ensure_writable_dir(save_path)
    write_csv(os.path.join(save_path, "results.csv"), rows, RESULT_COLUMNS)
    atomic_write_text(os.path.join(save_path, "results.json"), json.dumps(rows, indent=1))
    if save_maps:
        def write_maps(tmp: Any) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, images=np.array([r["image"] for r in rows]), anomaly_maps=scores.anomaly_maps,
                         image_scores=scores.image_scores, resize=data.resize, crop_size=data.crop_size)
        atomic_write(os.path.join(save_path, "anomaly_maps.npz"), write_maps)
    if not figures:
        return
    # One colour scale for every image, so heat maps can be compared side by side.
    vmin = calibration.get("pixel_min", float(scores.anomaly_maps.min()))
    vmax = calibration.get("pixel_max", float(scores.anomaly_maps.max()))
    for row, amap in zip(rows, scores.anomaly_maps):
        image = resized_rgb(load_image(row["image"]), data.resize, data.crop_size)
        name = os.path.splitext(os.path.basename(row["image"]))[0]
        parent = os.path.basename(os.path.dirname(row["image"]))
        save_figure(os.path.join(save_path, f"{parent}_{name}.png"), image, amap, thresholds.pixel, vmin, vmax,
                    title=f"{row['image']}: {row['decision']} (score {row['image_score']:.3f}, "
                          f"normalised {row['normalized_score']:.2f})")


def run_inference(paths: list[str], model: AnomalyModel, make_embedder: Callable[[], Embedder], batch_size: int,
                  save_path: str, image_threshold: float | None = None, pixel_threshold: float | None = None,
                  figures: bool = True, save_maps: bool = False,
                  timer: StageTimer | None = None, backend: str = "numpy") -> list[dict[str, Any]]:
    """Score `paths` (see collect_images), decide, save results (and figures), print the table.

    The thresholds are checked before `make_embedder` loads a network, so a model without them
    fails at once.
    """
    thresholds = Thresholds.from_calibration(model.calibration, image_threshold, pixel_threshold)
    scores = score_images(paths, model.config.data, make_embedder(), model.scorer(backend), batch_size, timer)
    rows = decisions(paths, scores, thresholds)
    save_outputs(rows, scores, model.config.data, thresholds, model.calibration, save_path, figures, save_maps)
    print(format_table(rows, RESULT_COLUMNS))
    print(f"saved results and figures in {os.path.abspath(save_path)}")
    return rows
