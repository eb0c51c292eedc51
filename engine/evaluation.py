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
from models.scoring import Scores
from models.thresholds import Thresholds
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
    thresholds = Thresholds.from_calibration(model.calibration or test_calibration)
    metrics.update(decision_rates(scores.image_scores, labels, thresholds))
    rows = [{"path": s.path, "defect": s.defect, "label": s.label, "image_score": float(v)}
            for s, v in zip(test_set.samples, scores.image_scores)]
    outputs.write(f"{model.category}_test_scores.csv", lambda tmp: write_csv(tmp, rows, SCORE_COLUMNS))
    if run.figures:
        save_test_figures(model, test_set, (scores, masks), thresholds, run, outputs)
    return {"category": model.category, **metrics}, test_calibration


def decision_rates(image_scores: np.ndarray, labels: np.ndarray, thresholds: Thresholds) -> dict[str, float]:
    """Good images flagged (false_reject_rate) and defective ones passed (miss_rate) by the verdict rule."""
    flagged = thresholds.flags(image_scores)
    good, bad = labels == 0, labels == 1
    return {"false_reject_rate": float(flagged[good].mean()) if good.any() else float("nan"),
            "miss_rate": float((~flagged[bad]).mean()) if bad.any() else float("nan")}


def save_test_figures(model: AnomalyModel, test_set: MVTecDataset, scored: tuple[Scores, np.ndarray],
                      thresholds: Thresholds, run: RunSettings, outputs: CategoryOutputs) -> None:
    """A figure per test image into a fresh pics/<category> (published with the category's files);
    the region is outlined only on images the verdict rule flags. `scored`: (scores, ground-truth masks)."""
    scores, masks = scored
    maps = scores.anomaly_maps
    vmin, vmax = float(maps.min()), float(maps.max())
    data = model.config.data
    folder = outputs.figures_folder()
    for sample, score, amap, mask in tqdm(list(zip(test_set.samples, scores.image_scores, maps, masks)),
                                          desc=f"{model.category}: figures", disable=not run.progress, leave=False):
        name = f"{sample.defect}_{os.path.splitext(os.path.basename(sample.path))[0]}.png"
        image = resized_rgb(load_image(sample.path), data.resize, data.crop_size, data.interpolation)
        outputs.staged_file(folder, name, lambda path: save_figure(
            path, image, amap, thresholds.region_shown(score, amap), vmin, vmax,
            title=f"{model.category}/{sample.defect}/{os.path.basename(sample.path)}",
            mask=mask if sample.label else None))
