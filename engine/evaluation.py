"""A model scored on its category's labelled test split: metrics, per-image scores, figures."""
from __future__ import annotations

import os
from typing import Any

import numpy as np
from tqdm import tqdm

from datasets.mvtec import MVTecDataset
from datasets.preprocess import load_image, resized_rgb
from engine.outputs import CategoryOutputs
from engine.pipeline import score_batches
from engine.settings import RunSettings
from models.calibration import calibrate
from models.feature_extractor import PatchFeatureExtractor
from models.model_file import AnomalyModel
from utils.metrics import compute_metrics
from utils.table import write_csv
from utils.visualize import save_figure

SCORE_COLUMNS = ("path", "defect", "label", "image_score")


def evaluate(model: AnomalyModel, extractor: PatchFeatureExtractor, run: RunSettings,
             outputs: CategoryOutputs) -> tuple[dict[str, Any], dict[str, Any]]:
    """Score the test split; stage <category>_test_scores.csv (and the figures) in `outputs`.

    Returns the metrics row and the calibration the labelled test split implies. The row's
    false_reject_rate (good images flagged) and miss_rate (defective images passed) are at the
    model's stored image threshold, or at the test split's own (F1-optimal) one when it has none.
    """
    test_set = MVTecDataset(run.data_path, model.category, "test", model.config.data)
    scores, masks, labels = score_batches(model, extractor, test_set, run)
    metrics = compute_metrics(scores.image_scores, labels, scores.anomaly_maps, masks, run.with_pro)
    test_calibration = calibrate(scores.image_scores, scores.anomaly_maps, labels, masks)
    metrics.update(decision_rates(scores.image_scores, labels,
                                  model.calibration.get("image_threshold", test_calibration["image_threshold"])))
    rows = [{"path": s.path, "defect": s.defect, "label": s.label, "image_score": float(v)}
            for s, v in zip(test_set.samples, scores.image_scores)]
    outputs.write(f"{model.category}_test_scores.csv", lambda tmp: write_csv(tmp, rows, SCORE_COLUMNS))
    if run.figures:
        threshold = model.calibration.get("pixel_threshold", test_calibration["pixel_threshold"])
        save_test_figures(model, test_set, (scores.anomaly_maps, masks), threshold, run, outputs)
    return {"category": model.category, **metrics}, test_calibration


def decision_rates(image_scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """Good images flagged (false_reject_rate) and defective ones passed (miss_rate) at `threshold`."""
    flagged = image_scores >= threshold
    good, bad = labels == 0, labels == 1
    return {"false_reject_rate": float(flagged[good].mean()) if good.any() else float("nan"),
            "miss_rate": float((~flagged[bad]).mean()) if bad.any() else float("nan")}


def save_test_figures(model: AnomalyModel, test_set: MVTecDataset, maps_and_masks: tuple[np.ndarray, np.ndarray],
                      threshold: float, run: RunSettings, outputs: CategoryOutputs) -> None:
    """A figure per test image into a fresh pics/<category> (published with the category's files)."""
    maps, masks = maps_and_masks
    vmin, vmax = float(maps.min()), float(maps.max())
    data = model.config.data
    folder = outputs.figures_folder()
    for sample, amap, mask in tqdm(list(zip(test_set.samples, maps, masks)), desc=f"{model.category}: figures",
                                   disable=not run.progress, leave=False):
        name = f"{sample.defect}_{os.path.splitext(os.path.basename(sample.path))[0]}.png"
        image = resized_rgb(load_image(sample.path), data.resize, data.crop_size, data.interpolation)
        outputs.staged_file(folder, name, lambda path: save_figure(
            path, image, amap, threshold, vmin, vmax,
            title=f"{model.category}/{sample.defect}/{os.path.basename(sample.path)}",
            mask=mask if sample.label else None))
