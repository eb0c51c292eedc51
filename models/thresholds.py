"""Decisions from scores: the thresholds a model carries, the one verdict rule, and the 0-1
normalisation users see.

Deployment code: it reads the thresholds that calibration (models.calibration, training side)
stored in the model file, and never imports how they were computed.

The verdict rule is written here once and used by predict.py / infer.py (deploy.batch_scoring), the
Inferencer and the service, the evaluation's rates and the figures:
  * an image is anomalous (NG) when its image score reaches the image threshold (score >= threshold);
  * its defect region (the pixels whose map value reaches the pixel threshold) is shown, counted
    as defect_area and outlined only on an anomalous image: an OK card never carries a red region,
    even where a pixel of a good image reaches the pixel threshold (the two thresholds are placed
    independently, so that happens).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from utils.errors import UserError

NORMAL, ANOMALOUS = "normal", "anomalous"


@dataclass
class Thresholds:
    image: float
    pixel: float
    image_range: tuple[float, float]

    @classmethod
    def from_calibration(cls, calibration: dict[str, Any], image: float | None = None,
                         pixel: float | None = None) -> "Thresholds":
        """Calibrated thresholds, each replaced by the user's value when one is given."""
        if not calibration and (image is None or pixel is None):
            raise UserError("this model has no calibrated thresholds; pass --image_threshold and --pixel_threshold")
        return cls(image=calibration["image_threshold"] if image is None else image,
                   pixel=calibration["pixel_threshold"] if pixel is None else pixel,
                   image_range=(calibration.get("image_min", 0.0), calibration.get("image_max", 1.0)))

    def flags(self, image_scores: np.ndarray | float) -> np.ndarray:
        """True where an image score makes the image anomalous (the verdict rule, vectorised)."""
        return np.asarray(image_scores, dtype=np.float64) >= self.image

    def decide(self, image_score: float) -> str:
        """The verdict of one image: "anomalous" (NG) or "normal" (OK)."""
        return ANOMALOUS if bool(self.flags(image_score)) else NORMAL

    def region_shown(self, image_score: float, anomaly_map: np.ndarray) -> np.ndarray:
        """The defect region of one image as shown and counted: the pixels reaching the pixel
        threshold on an anomalous image, none on a normal one (boolean, the map's shape)."""
        if not self.flags(image_score):
            return np.zeros(np.shape(anomaly_map), dtype=bool)
        return np.asarray(anomaly_map) >= self.pixel

    def normalize(self, scores: np.ndarray | float) -> np.ndarray:
        """Raw image scores -> [0, 1] with the threshold at exactly 0.5 (min-max scaled around it)."""
        low, high = self.image_range
        span = max(high - low, 1e-12)
        return np.clip((np.asarray(scores, dtype=np.float64) - self.image) / span + 0.5, 0.0, 1.0)
