"""Greedy k-center (farthest point) coreset selection.

Both selectors implement one rule: start at a seeded random index, then repeatedly take the point
whose squared distance to its nearest selected point is largest (lowest index on ties), in float32
on the randomly projected features.  `greedy_coreset_reference` does it the plain way, O(N) work per
selection; `greedy_coreset` returns the same indices while skipping points a new centre cannot
improve (triangle inequality on centre-to-centre distances).
"""
from __future__ import annotations

import math

import numpy as np
from tqdm import tqdm


def random_projection(features: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """Gaussian random projection (Johnson-Lindenstrauss) to `dim` columns, float32."""
    rng = np.random.default_rng(seed)
    matrix = rng.standard_normal((features.shape[1], dim)).astype(np.float32) / np.float32(math.sqrt(dim))
    return np.ascontiguousarray(features.astype(np.float32, copy=False) @ matrix)


def coreset_size(n_points: int, percentage: float) -> int:
    """How many points `--k percentage` keeps: at least one, at most all."""
    return int(min(n_points, max(1, round(n_points * percentage / 100.0))))


def _start_index(n_points: int, seed: int) -> int:
    return int(np.random.default_rng(seed).integers(n_points))


def _sq_dist(points: np.ndarray, centre: np.ndarray) -> np.ndarray:
    # The same expression in both selectors keeps their float32 results bit-identical.
    diff = points - centre
    return np.einsum("ij,ij->i", diff, diff)


def greedy_coreset_reference(points: np.ndarray, n_select: int, seed: int = 0) -> np.ndarray:
    """Plain farthest-point selection; the definition the fast selector is tested against."""
    points = np.ascontiguousarray(points, dtype=np.float32)
    selected = [_start_index(len(points), seed)]
    min_dist = _sq_dist(points, points[selected[0]])
    for _ in range(n_select - 1):
        index = int(np.argmax(min_dist))
        selected.append(index)
        np.minimum(min_dist, _sq_dist(points, points[index]), out=min_dist)
    return np.asarray(selected, dtype=np.int64)


def greedy_coreset(points: np.ndarray, n_select: int, seed: int = 0, progress: bool = False) -> np.ndarray:
    """Farthest-point selection with cluster pruning; same indices as the reference.

    Every point belongs to the cluster of its nearest centre so far, with radius R_c = the largest
    member distance.  For a new centre c', a member x of cluster c satisfies
    |x - c'| >= |c - c'| - |x - c| >= |c - c'| - R_c, so when |c - c'| >= 2 R_c no member can get
    strictly closer to c' than to c and the whole cluster is skipped.  Late in the selection nearly
    every cluster is small and far away, so each step touches a tiny fraction of the points.
    """
    points = np.ascontiguousarray(points, dtype=np.float32)
    n_points, dim = points.shape
    n_select = min(n_select, n_points)
    centres = np.empty((n_select, dim), dtype=np.float32)
    radius = np.zeros(n_select, dtype=np.float64)     # sqrt of the largest member distance
    members: list[np.ndarray] = []
    selected = np.empty(n_select, dtype=np.int64)

    first = _start_index(n_points, seed)
    selected[0] = first
    centres[0] = points[first]
    centre_norms = np.empty(n_select, dtype=np.float32)
    centre_norms[0] = float(centres[0] @ centres[0])
    min_dist = _sq_dist(points, centres[0])
    owner = np.zeros(n_points, dtype=np.int64)
    members.append(np.arange(n_points))
    radius[0] = math.sqrt(float(min_dist.max()))

    steps = tqdm(range(1, n_select), desc="coreset", unit="pt", disable=not progress, mininterval=1.0)
    for step in steps:
        index = int(np.argmax(min_dist))
        selected[step] = index
        centre = points[index]
        centres[step] = centre
        centre_norms[step] = float(centre @ centre)
        # Centre-to-centre distances only decide what to skip, so the fast expanded form is fine
        # as long as the test is loosened by more than its rounding error (relative 1e-5 of the norms).
        sq = centre_norms[:step] - 2.0 * (centres[:step] @ centre) + centre_norms[step]
        slack = 1e-5 * (centre_norms[:step] + centre_norms[step]) + 1e-12
        reach = 2.0 * radius[:step] * (1.0 + 1e-4)
        reachable = np.flatnonzero(sq < reach * reach + slack)
        if len(reachable) == 0:
            members.append(np.empty(0, dtype=np.int64))
            continue
        candidates = np.concatenate([members[c] for c in reachable])
        # The same bound point by point: x can only get closer if |c_x - c'| < 2 |x - c_x|.
        near = sq[owner[candidates]] < 4.0 * min_dist[candidates] * (1.0 + 2e-4) + slack[owner[candidates]]
        candidates = candidates[near]
        new_dist = _sq_dist(points[candidates], centre)
        closer = new_dist < min_dist[candidates]
        moved = candidates[closer]
        min_dist[moved] = new_dist[closer]
        losers = np.unique(owner[moved])
        owner[moved] = step
        members.append(moved)
        radius[step] = math.sqrt(float(min_dist[moved].max())) if len(moved) else 0.0
        # Only clusters that lost members can shrink; the others keep their radius.
        for c in losers:
            kept = members[c][owner[members[c]] == c]
            members[c] = kept
            radius[c] = math.sqrt(float(min_dist[kept].max())) if len(kept) else 0.0
    return selected
