"""What every method's scorer returns, and the patch-grid -> anomaly-map step they share."""
from __future__ import annotations

import functools
from dataclasses import dataclass, fields
from typing import Any, Callable

import numpy as np
from scipy.ndimage import gaussian_filter1d

from utils.config import hw
from utils.errors import UserError

# Scoring sums squares of features in float32 (|a|^2 - 2ab + |b|^2, Mahalanobis products): with
# values up to this over as many as 2^16 channels the sums stay below float32's maximum. Past
# it they overflow to inf - inf = NaN or are clipped to 0, and every image would read as normal
# (a bank entry of 2.4e38 scored everything 0.0000). Real features are many orders smaller.
MAX_CHANNELS = 2**16
MAX_FEATURE_VALUE = float(np.sqrt(np.finfo(np.float32).max / (4 * MAX_CHANNELS)))


def check_magnitude(array: np.ndarray) -> str | None:
    """Why `array` (a model's scoring array) cannot be scored in float32, or None if it can."""
    largest = float(np.abs(array).max()) if array.size else 0.0
    if largest > MAX_FEATURE_VALUE:
        return f"holds values up to {largest:.3g}, too large to score in float32 (at most {MAX_FEATURE_VALUE:.3g})"
    return None


@dataclass(frozen=True)
class ScoringOptions:
    """How one process runs its scorers, chosen once where the process is configured and passed whole.

    product_threads: how many threads share the memory bank's full-product tiles (each on one BLAS
    thread, models.knn.MemoryBank). Processes that run Paddle's dynamic graph (predict.py,
    training, evaluation) keep 1: more threads beside Paddle's made scoring 4-5x slower on 2 cores.
    OpenVINO and ONNX Runtime (network never running while the scorer does) take their CPU
    threads; Paddle Inference keeps 1 (its OpenMP threads and the image reader fill the cores):
    deploy.exported_model.scoring_options.
    """
    array_lib: str = "numpy"   # "numpy": the host's BLAS; "paddle": Paddle ops on the current device
    product_threads: int = 1

    def __post_init__(self):
        if self.product_threads < 1:
            raise ValueError(f"product_threads must be at least 1, not {self.product_threads}")

    def scorer(self, model: Any) -> Callable[[np.ndarray], "Scores"]:
        """`model`'s scorer (an AnomalyModel) run this way."""
        return model.scorer(self.array_lib, self.product_threads)


@dataclass
class Scores:
    image_scores: np.ndarray   # [B]
    anomaly_maps: np.ndarray   # [B, H, W] float32
    patch_scores: np.ndarray   # [B, h, w]

    def check_finite(self) -> "Scores":
        """Refuse NaN/inf scores: compared with a threshold they would silently read as 'normal'."""
        if not (np.isfinite(self.image_scores).all() and np.isfinite(self.anomaly_maps).all()):
            raise UserError("the model produced NaN or infinite scores (corrupt model file or features?)")
        return self

    @classmethod
    def concatenate(cls, parts: "list[Scores]") -> "Scores":
        """The scores of several batches as one, in order."""
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)))


def upsample_and_smooth(patch_scores: np.ndarray, size: int | tuple[int, int], sigma: float) -> np.ndarray:
    """Patch grid [B, h, w] -> image-sized anomaly maps [B, H, W] (size: square side or height, width):
    bilinear upsampling (align_corners=False, as Paddle's F.interpolate) then scipy's Gaussian blur
    (reflected edges, truncate=4: the usual 33-tap kernel for sigma 4).

    Both steps are linear and act on each axis separately, so the two together are one fixed matrix
    per axis: maps = A_H @ grid @ A_W^T (map_operators). Two small products in place of an
    interpolation and a 2-pass filter over the full-size map: at 448 px 0.3 ms a map instead of
    about 4 ms (docs/results.md, High resolution), the same maps to float32 rounding.
    """
    grid = np.asarray(patch_scores, dtype=np.float32)
    rows, cols = map_operators(grid.shape[1:], hw(size), float(sigma))
    return np.matmul(np.matmul(rows, grid), cols.T)


@functools.lru_cache(maxsize=32)
def map_operators(grid: tuple[int, int], size: tuple[int, int], sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """A_H [H, h], A_W [W, w] float32 with upsample_and_smooth(P) = A_H @ P @ A_W^T for every grid P [h, w]
    (read-only: cached per grid, size and sigma)."""
    operators = []
    for n_in, n_out in zip(grid, size):
        operator = bilinear_weights(int(n_in), int(n_out))
        if sigma > 0:
            # Blurring every column of the upsampling matrix blurs every upsampled line (linearity).
            operator = gaussian_filter1d(operator, sigma, axis=0, mode="reflect", truncate=4.0)
        operator = operator.astype(np.float32)
        operator.flags.writeable = False
        operators.append(operator)
    return operators[0], operators[1]


def bilinear_weights(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] float64: linear interpolation of n_in samples at n_out points, half-pixel centres
    (align_corners=False, Paddle's align_mode 0): output i samples input (i + 0.5) n_in / n_out - 0.5,
    clamped to the first and last samples."""
    position = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    lower = np.minimum(np.floor(position).astype(np.int64), n_in - 1)
    upper = np.minimum(lower + 1, n_in - 1)
    fraction = position - lower
    weights = np.zeros((n_out, n_in))
    np.add.at(weights, (np.arange(n_out), lower), 1.0 - fraction)
    np.add.at(weights, (np.arange(n_out), upper), fraction)
    return weights
