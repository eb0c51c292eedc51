"""The selection as Paddle tensor ops on the current device (a GPU with `--device gpu`)."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from models.patchcore.coreset.distances import start_index

if TYPE_CHECKING:
    import paddle


def greedy_coreset_paddle(points: "paddle.Tensor | np.ndarray", n_select: int, seed: int = 0,
                          progress: bool = False) -> np.ndarray:
    """The same rule as Paddle tensor ops on the current device (a GPU with `--device gpu`).

    One mat-vec product, minimum and argmax per step, all on the device: the chosen index stays a
    device tensor, so the host never waits for a step. Its dot products are summed by the device's
    kernels, so where two candidates are within float32 rounding of each other (near-ties) it may
    pick the other one; elsewhere it returns the indices of greedy_coreset.
    """
    import paddle

    points = paddle.to_tensor(points, dtype="float32") if isinstance(points, np.ndarray) else points
    n_points = int(points.shape[0])
    n_select = min(n_select, n_points)
    sq_norms = (points * points).sum(axis=1)
    nearest = paddle.full([n_points], math.inf, dtype="float32")
    chosen = paddle.to_tensor([start_index(n_points, seed)], dtype="int64")
    selected = [chosen]
    steps = range(1, n_select)
    for _ in tqdm(steps, desc="coreset", unit="pt", mininterval=1.0) if progress else steps:
        centre = paddle.gather(points, chosen)                       # [1, d]
        dist = sq_norms - 2.0 * paddle.matmul(points, centre, transpose_y=True)[:, 0] + sq_norms[chosen]
        nearest = paddle.minimum(nearest, dist)
        chosen = paddle.argmax(nearest, axis=0, keepdim=True)        # first index of the maximum
        selected.append(chosen)
    return paddle.concat(selected).numpy().astype(np.int64)
