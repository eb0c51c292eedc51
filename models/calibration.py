"""Calibration (training side): the thresholds and score ranges a model file stores.

models.thresholds turns them into decisions at deployment ("13.6" -> "0.71, anomalous").

With a labelled test split the thresholds are the F1-optimal ones on it (images and pixels). Without
one they come from the training images' own scores: the highest score any good training image
reaches, so only parts less normal than every known-good part are flagged.
"""
from __future__ import annotations

import numpy as np

from utils.metrics import UndefinedMetricError, f1_optimal_threshold


def _threshold(scores: np.ndarray, labels: np.ndarray | None) -> tuple[float, str]:
    if labels is not None:
        try:
            return f1_optimal_threshold(scores, labels)[0], "F1-optimal on the test split"
        except UndefinedMetricError:
            pass   # a single class: fall back to the good-only rule below
    return float(np.max(scores)), "maximum over good images"


def calibrate(image_scores: np.ndarray, anomaly_maps: np.ndarray, labels: np.ndarray | None = None,
              masks: np.ndarray | None = None) -> dict[str, float | str]:
    """Image and pixel thresholds plus the score ranges used to normalise to [0, 1]."""
    image_threshold, image_rule = _threshold(image_scores, labels)
    pixel_threshold, pixel_rule = _threshold(anomaly_maps.ravel(), None if masks is None else masks.ravel())
    return {"image_threshold": image_threshold, "pixel_threshold": pixel_threshold,
            "image_min": float(np.min(image_scores)), "image_max": float(np.max(image_scores)),
            "pixel_min": float(np.min(anomaly_maps)), "pixel_max": float(np.max(anomaly_maps)),
            "image_rule": image_rule, "pixel_rule": pixel_rule}
