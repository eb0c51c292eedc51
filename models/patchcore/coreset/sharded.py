"""The selection over points split between processes (a distributed fit): the same indices as one
process."""
from __future__ import annotations

from typing import Callable

import numpy as np
from tqdm import tqdm

from models.patchcore.coreset.batched import BatchedSelection
from models.patchcore.coreset.distances import start_index


# A shard's proposal for the next centre: [distance, global index, squared norm, vector...], float64
# (each float32 value and every index below 2^53 is exact in it).
Exchange = Callable[[np.ndarray], np.ndarray]


def greedy_coreset_sharded(points: np.ndarray, first_index: int, n_total: int, n_select: int, exchange: Exchange,
                           seed: int = 0, progress: bool = False) -> np.ndarray:
    """greedy_coreset over points split between processes: the same indices as one process.

    This process holds rows `first_index` .. `first_index + len(points) - 1` of the `n_total`
    points. At every step each shard proposes its farthest point; `exchange` (an all-gather) gives
    every shard every proposal, in rank order, and all agree on the largest distance, the lowest
    global index on ties: the single-process rule. Each shard keeps its own BatchedSelection over its
    points, to which every agreed centre is added. Returns the global indices (identical on every shard).
    """
    points = np.ascontiguousarray(points, dtype=np.float32)
    n_select = min(n_select, n_total)
    state = BatchedSelection(points, n_select)

    def agree(local: int | None, distance: float) -> None:
        proposal = np.full(3 + points.shape[1], -np.inf)
        if local is not None:
            proposal[:3] = distance, first_index + local, state.sq_norms[local]
            proposal[3:] = points[local]
        proposals = exchange(proposal)
        farthest = proposals[:, 0] == proposals[:, 0].max()
        winner = proposals[farthest][np.argmin(proposals[farthest, 1])]
        state.add_centre(int(winner[1]), winner[3:].astype(np.float32), np.float32(winner[2]))

    start = start_index(n_total, seed) - first_index
    agree(start if 0 <= start < len(points) else None, np.inf)
    for _ in tqdm(range(1, n_select), desc="coreset", unit="pt", mininterval=1.0, disable=not progress):
        local = state.farthest()
        agree(local, state.exact_distance(local))
    return state.selected

