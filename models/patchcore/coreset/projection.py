"""The seeded random projection the coreset runs on, and how many points `--k` keeps."""
from __future__ import annotations

import math

import numpy as np


def projection_matrix(channels: int, dim: int, seed: int) -> np.ndarray:
    """The seeded Gaussian (Johnson-Lindenstrauss) matrix [channels, dim] of random_projection."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((channels, dim)).astype(np.float32) / np.float32(math.sqrt(dim))


def random_projection(features: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """Gaussian random projection to `dim` columns, float32."""
    return np.ascontiguousarray(features.astype(np.float32, copy=False) @ projection_matrix(features.shape[1], dim, seed))


def coreset_size(n_points: int, percentage: float) -> int:
    """How many points `--k percentage` keeps: at least one, at most all."""
    return int(min(n_points, max(1, round(n_points * percentage / 100.0))))



class ProjectedRows:
    """The projection of feature rows [n_rows, dim], filled a block of rows at a time, kept on the
    host (array_lib "numpy") or on the current Paddle device ("paddle")."""

    def __init__(self, n_rows: int, channels: int, dim: int, seed: int, array_lib: str = "numpy"):
        matrix = projection_matrix(channels, dim, seed)
        self.array_lib = array_lib
        if array_lib == "paddle":
            import paddle

            self.matrix = paddle.to_tensor(matrix)
            self.points = paddle.empty([n_rows, dim], dtype="float32")
        else:
            self.matrix = matrix
            self.points = np.empty((n_rows, dim), dtype=np.float32)

    def fill(self, rows: slice, features: np.ndarray) -> None:
        """Project `features` into `rows`; one product per block, so a row's projection never
        depends on how the blocks were batched."""
        if self.array_lib == "paddle":
            import paddle

            self.points[rows] = paddle.matmul(paddle.to_tensor(features), self.matrix)
        else:
            np.matmul(features, self.matrix, out=self.points[rows])
