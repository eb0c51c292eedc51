"""Calibration (training side): the thresholds and score ranges a model file stores.

models.thresholds turns them into decisions at deployment ("13.6" -> "0.71, anomalous").

With good images held out of the fit (train.py --val_ratio, the default) the thresholds are
quantiles of their scores: set without any defective image, on images the bank has not seen (a
training image's own patches are in the bank, so its scores are biased low). With --val_ratio 0:
on a labelled test split the F1-optimal thresholds (images and pixels), else the highest score any
good training image reaches.
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


def calibrate_held_out(image_scores: np.ndarray, anomaly_maps: np.ndarray, max_false_reject: float,
                       pixel_false_reject: float) -> dict[str, float | str]:
    """Thresholds from good images that are not in the model (held out of the fit): the image
    threshold at the (1 - max_false_reject) quantile of their scores, the pixel threshold at the
    (1 - pixel_false_reject) quantile of their pixels ("higher": an observed value, so with few
    images and a small rate it is their maximum)."""
    n = len(image_scores)
    image_threshold = float(np.quantile(image_scores, 1.0 - max_false_reject, method="higher"))
    pixel_threshold = float(np.quantile(anomaly_maps, 1.0 - pixel_false_reject, method="higher"))
    return {"image_threshold": image_threshold, "pixel_threshold": pixel_threshold,
            "image_min": float(np.min(image_scores)), "image_max": float(np.max(image_scores)),
            "pixel_min": float(np.min(anomaly_maps)), "pixel_max": float(np.max(anomaly_maps)),
            "image_rule": f"{1 - max_false_reject:.4g} quantile of {n} held-out good images",
            "pixel_rule": f"{1 - pixel_false_reject:.4g} quantile of the pixels of {n} held-out good images"}


def calibrate(image_scores: np.ndarray, anomaly_maps: np.ndarray, labels: np.ndarray | None = None,
              masks: np.ndarray | None = None) -> dict[str, float | str]:
    """Image and pixel thresholds plus the score ranges used to normalise to [0, 1]."""
    image_threshold, image_rule = _threshold(image_scores, labels)
    pixel_threshold, pixel_rule = _threshold(anomaly_maps.ravel(), None if masks is None else masks.ravel())
    return {"image_threshold": image_threshold, "pixel_threshold": pixel_threshold,
            "image_min": float(np.min(image_scores)), "image_max": float(np.max(image_scores)),
            "pixel_min": float(np.min(anomaly_maps)), "pixel_max": float(np.max(anomaly_maps)),
            "image_rule": image_rule, "pixel_rule": pixel_rule}
