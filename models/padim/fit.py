"""PaDiM fit: a Gaussian per feature-grid position from running float64 sums.

Only the sum and the sum of outer products are kept, batch by batch, so memory depends on the grid
and the channel count, never on the number of training images.
"""
from __future__ import annotations

import time

import numpy as np
from tqdm import tqdm

from models.model_file import EmbeddingStream, FitResult
from models.sharding import Shard
from utils.config import ModelConfig
from utils.errors import UserError

REGULARIZATION = 0.01       # the paper's epsilon: S = cov + 0.01 I keeps S invertible
INVERT_CHUNK_BYTES = 256 * 2**20
# The distributed merge sums the outer products in pieces of about this size.
MERGE_CHUNK_BYTES = 64 * 2**20
FLOAT32, FLOAT64 = 4, 8


def estimate_fit_bytes(positions: int, channels: int, n_images: int, batch_size: int, cfg: ModelConfig) -> int:
    """The fit's own arrays (models.memory_estimate): the float64 running sums and a batch of them, and
    the float32 inverse covariances; the number of images does not count."""
    return positions * channels * (channels * (FLOAT64 + FLOAT32) + 2 * batch_size * FLOAT64)


class GaussianAccumulator:
    """Per-position sums of x and x x^T over every training embedding seen so far."""

    def __init__(self) -> None:
        self.count = 0
        self.grid: tuple[int, int] | None = None
        self.shift: np.ndarray | None = None    # [P, C]
        self.sum: np.ndarray | None = None      # [P, C]
        self.outer: np.ndarray | None = None    # [P, C, C]

    def update(self, embedding: np.ndarray) -> None:
        """Add a batch of embeddings [B, C, h, w]."""
        batch, channels, height, width = embedding.shape
        x = embedding.reshape(batch, channels, height * width).transpose(2, 0, 1).astype(np.float64)  # [P, B, C]
        if self.shift is None:
            # Sums of x - shift with the shift near the mean: the covariance is unchanged, and
            # sum(x x^T) - n m m^T no longer loses digits to cancellation when |mean| >> spread.
            self.grid = (height, width)
            self.shift = x.mean(axis=1)
            self.sum = np.zeros_like(self.shift)
            self.outer = np.zeros((height * width, channels, channels))
        elif (height, width) != self.grid or channels != self.shift.shape[1]:
            raise ValueError(f"batch of {channels} channels on a {height}x{width} grid does not match "
                             f"the earlier ones ({self.shift.shape[1]} on {self.grid})")
        x -= self.shift[:, None, :]
        self.sum += x.sum(axis=1)
        self.outer += np.matmul(x.transpose(0, 2, 1), x)
        self.count += batch

    def merge_shards(self, shard: Shard) -> None:
        """Sum the accumulators of every rank (float64), each first moved to rank 0's shift.

        With y = x - s_r and d = s_r - s_0: sum(x - s_0) = sum(y) + n d and
        sum((x - s_0)(x - s_0)^T) = sum(y y^T) + sum(y) d^T + d sum(y)^T + n d d^T. Rank 0's own
        shift is the one a single process would use (its first batch), so the result differs from
        the single-process sums by rounding only. The outer products are moved and summed in chunks
        of positions, in place, so the merge holds a few chunks beside the sums, not copies of them.
        """
        shifts = shard.all_gather(self.shift)
        delta = self.shift - shifts[0]
        positions, channels = self.shift.shape
        rows = max(1, MERGE_CHUNK_BYTES // (8 * channels * channels))
        for start in range(0, positions, rows):
            part = slice(start, start + rows)
            outer, moved_sum, moved = self.outer[part], self.sum[part], delta[part]
            outer += moved_sum[:, :, None] * moved[:, None, :]
            outer += moved[:, :, None] * moved_sum[:, None, :]
            outer += self.count * moved[:, :, None] * moved[:, None, :]
            outer[...] = shard.all_reduce_sum(outer)
        self.sum = shard.all_reduce_sum(self.sum + self.count * delta)
        self.count = int(shard.all_reduce_sum(np.array([self.count], dtype=np.float64))[0])
        self.shift = shifts[0]

    def state(self) -> dict[str, np.ndarray]:
        """The running sums, float64 (kept in a model file for updates)."""
        return {"sum_shift": self.shift, "sum": self.sum, "sum_outer": self.outer,
                "count": np.array([float(self.count)])}

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], grid: tuple[int, int]) -> "GaussianAccumulator":
        accumulator = cls()
        accumulator.grid = tuple(grid)
        accumulator.shift, accumulator.sum = arrays["sum_shift"], arrays["sum"]
        accumulator.outer, accumulator.count = arrays["sum_outer"], int(arrays["count"][0])
        return accumulator

    def gaussians(self, regularization: float = REGULARIZATION,
                  progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(mean [P, C], inverse of cov + regularization I [P, C, C]), float32; unbiased covariance."""
        if self.count < 2:
            raise UserError(f"PaDiM needs at least 2 training images for a covariance, got {self.count}")
        n = self.count
        centred_mean = self.sum / n
        positions, channels = centred_mean.shape
        inverse = np.empty((positions, channels, channels), dtype=np.float32)
        # Chunks of positions bound the float64 temporaries (a covariance and its inverse).
        rows = max(1, INVERT_CHUNK_BYTES // (16 * channels * channels))
        chunks = range(0, positions, rows)
        for start in tqdm(chunks, desc="padim: inverting", unit="chunk", disable=not progress, leave=False):
            part = slice(start, start + rows)
            cov = self.outer[part] - n * centred_mean[part, :, None] * centred_mean[part, None, :]
            cov /= n - 1
            cov += regularization * np.eye(channels)
            inverse[part] = np.linalg.inv(cov)
        return (self.shift + centred_mean).astype(np.float32), inverse


def fit_gaussians(stream: EmbeddingStream, cfg: ModelConfig, progress: bool = True,
                  array_lib: str = "numpy", shard: Shard | None = None) -> FitResult:
    """Mean and inverse covariance per position from a stream of training embeddings (registered in
    models.registry); the extraction loop feeding the stream shows its own progress bar.

    The sums stay float64 NumPy on the host whatever the `array_lib` (the network still runs on the
    device): their cost is small beside the extraction and float64 keeps the covariance exact.
    With a `shard` (multi-process fit) each rank sums its own images and the sums are all-reduced.
    """
    accumulator = GaussianAccumulator()
    start = time.perf_counter()
    for embedding in stream.batches:
        accumulator.update(embedding)
    shard = shard or Shard()
    split_stats = shard.fit_stats(accumulator.count)
    if shard.world_size > 1:
        accumulator.merge_shards(shard)
    accumulated = time.perf_counter()
    mean, inverse = accumulator.gaussians(progress=progress)
    done = time.perf_counter()
    stats = {"train_images": float(accumulator.count), "channels": float(mean.shape[1]),
             # Extraction is included: it is interleaved with the accumulation, batch by batch.
             "positions": float(mean.shape[0]), "accumulate_seconds": accumulated - start,
             "invert_seconds": done - accumulated, **split_stats}
    arrays = {"mean": mean, "inv_covariance": inverse}
    if cfg.keep_sums:
        arrays.update(accumulator.state())
    return FitResult(arrays, accumulator.grid, stats)


def extend_gaussians(arrays: dict[str, np.ndarray], stream: EmbeddingStream, cfg: ModelConfig,
                     progress: bool = True) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """The Gaussians after adding new images to the kept running sums: the same sums, hence the same
    mean and inverse covariance (up to rounding), as a fit on all the images at once."""
    if "sum_outer" not in arrays:
        raise UserError("this PaDiM model file has no running sums to add images to: train it with --keep_sums "
                        "(or fit again on all images)")
    start = time.perf_counter()
    accumulator = None
    for embedding in stream.batches:
        if accumulator is None:
            accumulator = GaussianAccumulator.from_state(arrays, embedding.shape[2:])
        accumulator.update(embedding)
    if accumulator is None:
        raise UserError("no new images to add")
    added = time.perf_counter()
    mean, inverse = accumulator.gaussians(progress=progress)
    stats = {"update_images": float(stream.n_images), "update_feature_seconds": added - start,
             "update_invert_seconds": time.perf_counter() - added}
    return {"mean": mean, "inv_covariance": inverse, **accumulator.state()}, stats
