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


# Centres 0..LANDMARKS-1 double as landmarks that group all later centres (see greedy_coreset).
LANDMARKS = 256
# Relative slack on every pruning test: float32 rounding must never skip a point that could move.
SLACK = 1e-4


def greedy_coreset(points: np.ndarray, n_select: int, seed: int = 0, progress: bool = False) -> np.ndarray:
    """Farthest-point selection with triangle-inequality pruning; same indices as the reference.

    Every point belongs to the cluster of its nearest centre so far, with radius R_c = the largest
    member distance.  For a new centre c', a member x of cluster c satisfies
    |x - c'| >= |c - c'| - |x - c|, so x can only move to c' when |c - c'| < 2 |x - c|: whole
    clusters with |c - c'| >= 2 R_c are skipped, and inside the others so is every such point.
    Finding the clusters in reach would still cost O(selected) per step, so centres are grouped
    under the first LANDMARKS centres: a group whose landmark is farther from c' than its reach
    (largest centre-to-landmark distance) plus twice its largest radius holds no centre in reach.
    Late in the selection each step touches a few small clusters, not all the points.
    """
    points = np.ascontiguousarray(points, dtype=np.float32)
    n_points, dim = points.shape
    n_select = min(n_select, n_points)
    n_landmarks = min(LANDMARKS, n_select)
    selected = np.empty(n_select, dtype=np.int64)
    centres = np.empty((n_select, dim), dtype=np.float32)
    radius = np.zeros(n_select)                       # sqrt of the largest member distance
    centre_gap = np.zeros(n_select)                   # this step's squared centre-to-new-centre distance
    group = np.zeros(n_select, dtype=np.int64)        # landmark group of each centre
    group_reach = np.zeros(n_landmarks)               # largest centre-to-landmark distance in a group
    group_radius = np.zeros(n_landmarks)              # upper bound of the radii in a group
    members: list[np.ndarray] = [np.arange(n_points)]
    owner = np.zeros(n_points, dtype=np.int64)

    selected[0] = _start_index(n_points, seed)
    centres[0] = points[selected[0]]
    min_dist = _sq_dist(points, centres[0])
    radius[0] = group_radius[0] = math.sqrt(float(min_dist.max()))

    steps = tqdm(range(1, n_select), desc="coreset", unit="pt", disable=not progress, mininterval=1.0)
    for step in steps:
        index = int(np.argmax(min_dist))
        selected[step] = index
        centre = centres[step] = points[index]

        if step < n_landmarks:
            nearby = np.arange(step)
            group[step] = step                        # a landmark heads its own group
        else:
            to_landmark = np.sqrt(_sq_dist(centres[:n_landmarks], centre).astype(np.float64))
            open_group = to_landmark < (group_reach + 2.0 * group_radius) * (1 + SLACK) + SLACK
            nearby = np.flatnonzero(open_group[group[:step]])
            g = int(np.argmin(to_landmark))
            group[step] = g
            group_reach[g] = max(group_reach[g], to_landmark[g])

        gap = _sq_dist(centres[nearby], centre).astype(np.float64)
        centre_gap[nearby] = gap
        reachable = nearby[gap < 4.0 * radius[nearby] ** 2 * (1 + SLACK) + 1e-12]
        candidates = np.concatenate([members[c] for c in reachable]) if len(reachable) else np.empty(0, np.int64)
        # The same bound point by point: x can only get closer if |c_x - c'|^2 < 4 |x - c_x|^2.
        candidates = candidates[centre_gap[owner[candidates]] < 4.0 * min_dist[candidates] * (1 + SLACK) + 1e-12]
        new_dist = _sq_dist(points[candidates], centre)
        closer = new_dist < min_dist[candidates]
        moved = candidates[closer]
        min_dist[moved] = new_dist[closer]
        losers = np.unique(owner[moved])
        owner[moved] = step
        members.append(moved)
        radius[step] = math.sqrt(float(min_dist[moved].max())) if len(moved) else 0.0
        group_radius[group[step]] = max(group_radius[group[step]], radius[step])
        # Only clusters that lost members shrink; group_radius stays a valid (loose) upper bound
        # and is tightened now and then.
        for c in losers:
            kept = members[c][owner[members[c]] == c]
            members[c] = kept
            radius[c] = math.sqrt(float(min_dist[kept].max())) if len(kept) else 0.0
        if step % 512 == 0:
            group_radius[:] = 0.0
            np.maximum.at(group_radius, group[: step + 1], radius[: step + 1])
    return selected
