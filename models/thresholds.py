"""Decisions from scores: the thresholds a model carries and the 0-1 normalisation users see.

Deployment code: it reads the thresholds that calibration (models.calibration, training side)
stored in the model file, and never imports how they were computed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from utils.errors import UserError


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

    def normalize(self, scores: np.ndarray | float) -> np.ndarray:
        """Raw image scores -> [0, 1] with the threshold at exactly 0.5 (min-max scaled around it)."""
        low, high = self.image_range
        span = max(high - low, 1e-12)
        return np.clip((np.asarray(scores, dtype=np.float64) - self.image) / span + 0.5, 0.0, 1.0)
