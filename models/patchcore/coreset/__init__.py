"""Greedy k-center (farthest point) coreset selection: PatchCore's memory bank.

The rule: start at a seeded random index, then repeatedly take the point whose squared distance to
its nearest selected point is largest (lowest index on ties), in float32 on the randomly projected
features, a squared distance being |x|^2 - 2 x.c + |c|^2 with each dot product summed by einsum
(distances.py). Every selector here returns the indices of the plain loop (reference.py) except
the device one, which may differ on near-ties.

    projection.py  the seeded projection and the coreset size
    distances.py   the rule's distance (its update written once) and the BLAS error bound
    reference.py   the plain loop: the definition, and the tests' oracle
    batched.py     the fast selector (top rows, matrix products, groups); continued selections
    device.py      Paddle tensor ops on the current device
    sharded.py     points split between processes

select_coreset is the one entry point the fit uses.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from models.patchcore.coreset.batched import greedy_coreset, greedy_coreset_continued
from models.patchcore.coreset.device import greedy_coreset_paddle
from models.patchcore.coreset.distances import squared_norms
from models.patchcore.coreset.projection import coreset_size, projection_matrix, random_projection
from models.patchcore.coreset.reference import greedy_coreset_reference
from models.patchcore.coreset.sharded import greedy_coreset_sharded
from models.sharding import RowShard

if TYPE_CHECKING:
    import paddle

ARRAY_LIBS = ("numpy", "paddle")

__all__ = ["ARRAY_LIBS", "coreset_size", "greedy_coreset", "greedy_coreset_continued", "greedy_coreset_paddle",
           "greedy_coreset_reference", "greedy_coreset_sharded", "projection_matrix", "random_projection",
           "select_coreset", "squared_norms"]


def select_coreset(points: "np.ndarray | paddle.Tensor", n_select: int, *, seed: int = 0, array_lib: str = "numpy",
                   shard: RowShard | None = None, centres: np.ndarray | None = None,
                   progress: bool = False, stats: dict | None = None) -> np.ndarray:
    """Indices of `n_select` points in order of choice, by the rule.

    array_lib "numpy" runs the batched selector on the host; "paddle" the device one (points may be a
    tensor there). `shard`: `points` are this process's rows of a selection split between processes
    (on the host whatever the array_lib); the indices are then global, the same on every process.
    `centres`: points chosen before (an update), so the first pick is the point farthest from them.
    `stats` (a dict) receives what the selection reports of itself (the split one: its collectives).
    """
    if array_lib not in ARRAY_LIBS:
        raise ValueError(f"array_lib must be one of {ARRAY_LIBS}, not {array_lib!r}")
    split = shard is not None and shard.world_size > 1
    if centres is not None:
        if split:
            raise ValueError("a continued selection runs in one process")
        return greedy_coreset_continued(_host(points), centres, n_select, progress=progress)
    if split:
        return greedy_coreset_sharded(_host(points), shard.first, shard.total, n_select, shard.all_gather,
                                      seed=seed, progress=progress, stats=stats)
    if array_lib == "paddle":
        return greedy_coreset_paddle(points, n_select, seed, progress=progress)
    return greedy_coreset(_host(points), n_select, seed, progress=progress)


def _host(points: "np.ndarray | paddle.Tensor") -> np.ndarray:
    return points if isinstance(points, np.ndarray) else points.numpy()
