"""PaDiM scoring (Defard et al. 2020): Mahalanobis distance of each patch to its position's Gaussian.

Deployment code: infer.py builds this scorer from the stats file, so it imports nothing of training.
"""
from __future__ import annotations

import numpy as np

from models.scoring import Scores, upsample_and_smooth
from utils.config import Config


def mahalanobis(patches: np.ndarray, mean: np.ndarray, inv_covariance: np.ndarray) -> np.ndarray:
    """sqrt((x - mu_p)^T S_p^-1 (x - mu_p)) for patches [B, P, C], mean [P, C], inverse [P, C, C] -> [B, P]."""
    diff = (patches - mean[None]).transpose(1, 0, 2)           # [P, B, C]: one matrix product per position
    transformed = np.matmul(diff, inv_covariance)              # batched over positions, no Python loop
    squared = np.einsum("pbc,pbc->bp", transformed, diff)
    # S^-1 is positive definite, so a negative value can only be rounding error.
    return np.sqrt(np.maximum(squared, 0.0))


class PadimScorer:
    """Scores a batch of patch embeddings [B, C, h, w] against per-position Gaussians."""

    def __init__(self, mean: np.ndarray, inv_covariance: np.ndarray, image_size: int, sigma: float = 4.0):
        positions, channels = mean.shape
        if inv_covariance.shape != (positions, channels, channels):
            raise ValueError(f"inverse covariance of shape {inv_covariance.shape} does not fit a mean of "
                             f"shape {mean.shape}")
        self.mean = np.ascontiguousarray(mean, dtype=np.float32)
        self.inv_covariance = np.ascontiguousarray(inv_covariance, dtype=np.float32)
        self.image_size = image_size
        self.sigma = sigma

    def __call__(self, embedding: np.ndarray) -> Scores:
        batch, channels, height, width = embedding.shape
        positions, expected = self.mean.shape
        if channels != expected or height * width != positions:
            raise ValueError(f"features of {channels} channels on a {height}x{width} grid, but the Gaussians "
                             f"have {expected} channels at {positions} positions")
        patches = embedding.reshape(batch, channels, positions).transpose(0, 2, 1).astype(np.float32, copy=False)
        patch_scores = mahalanobis(patches, self.mean, self.inv_covariance).reshape(batch, height, width)
        maps = upsample_and_smooth(patch_scores, self.image_size, self.sigma)
        # PaDiM's image score is the maximum of the smoothed map, not of the raw patch grid.
        image_scores = maps.reshape(batch, -1).max(axis=1)
        return Scores(image_scores, maps, patch_scores.astype(np.float32, copy=False))


def build_scorer(arrays: dict[str, np.ndarray], config: Config, array_lib: str = "numpy",
                 product_threads: int = 1) -> PadimScorer:
    """The scorer a PaDiM model file describes (registered in models.registry)."""
    # Mahalanobis distances run on the host whatever the array_lib (one small product per position:
    # too small for more BLAS threads to pay).
    return PadimScorer(arrays["mean"], arrays["inv_covariance"], config.data.crop_size, config.model.sigma)
