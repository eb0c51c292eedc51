"""What every method's scorer returns, and the patch-grid -> anomaly-map step they share."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable

import numpy as np
import paddle
import paddle.nn.functional as F
from scipy.ndimage import gaussian_filter, gaussian_filter1d

from utils.config import hw
from utils.errors import UserError
from utils.workers import Workers

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
    The deploy runtimes (network in Paddle Inference, OpenVINO or ONNX Runtime, never running
    while the scorer does) take their CPU threads: deploy.exported_model.scoring_options.
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


def upsample_and_smooth(patch_scores: np.ndarray, size: int | tuple[int, int], sigma: float,
                        workers: Workers | None = None) -> np.ndarray:
    """Patch grid -> image-sized anomaly maps (size: square side or height, width): bilinear
    upsampling then Gaussian smoothing (split over `workers` when given: smooth)."""
    grid = paddle.to_tensor(patch_scores[:, None].astype(np.float32))
    maps = F.interpolate(grid, size=hw(size), mode="bilinear", align_corners=False).numpy()[:, 0]
    if sigma > 0:
        maps = np.stack([smooth(m, sigma, workers) for m in maps])
    return maps.astype(np.float32)


def smooth(image: np.ndarray, sigma: float, workers: Workers | None = None) -> np.ndarray:
    """scipy's gaussian_filter of one map, reflected edges (truncate=4: the usual 33-tap kernel for sigma 4).

    With workers, each of the filter's two passes (down the columns, then along the rows, in place,
    as gaussian_filter does them) is split into bands, one per thread: every line is filtered
    on its own, so the result is the same to the bit, and scipy lets go of the GIL while it filters
    (at 448 px the blur is about a seventh of the scoring).
    """
    if workers is None or workers.count < 2:
        return gaussian_filter(image, sigma=sigma, mode="reflect", truncate=4.0)
    out = np.empty_like(image)

    def columns(band: np.ndarray) -> None:
        gaussian_filter1d(image[:, band[0]:band[-1] + 1], sigma, axis=0, output=out[:, band[0]:band[-1] + 1],
                          mode="reflect", truncate=4.0)

    def rows(band: np.ndarray) -> None:
        view = out[band[0]:band[-1] + 1]
        gaussian_filter1d(view, sigma, axis=1, output=view, mode="reflect", truncate=4.0)

    for pass_, length in ((columns, image.shape[1]), (rows, image.shape[0])):
        workers.map(pass_, [band for band in np.array_split(np.arange(length), workers.count) if len(band)])
    return out
