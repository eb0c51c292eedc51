"""Greedy k-center (farthest point) coreset selection.

Both selectors implement one rule: start at a seeded random index, then repeatedly take the point
whose squared distance to its nearest selected point is largest (lowest index on ties), in float32
on the randomly projected features, a distance being sum((x - c)^2) over the coordinates.
`greedy_coreset_reference` does it the plain way; `greedy_coreset` returns the same indices, fast
on every kind of data, by mixing two kinds of step (see _Selection).
"""
from __future__ import annotations

import math
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from tqdm import tqdm


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


# Centres 0..LANDMARKS-1 double as landmarks that group all later centres (see _Selection.pruned_step).
LANDMARKS = 256
# Relative slack on every pruning test: float32 rounding must never skip a point that could move.
SLACK = 1e-4
# Pruned steps are first tried at this step, and again after twice as many steps each time they lose.
PROBE_START = 64
# A pruned step that would have to check more than this fraction of the points is not worth it: a
# point it checks costs ~9x a point of the mat-vec (gather, difference, sum against one BLAS row;
# measured 0.27 vs 0.03 us on 200k x 128).
PRUNED_MAX_FRACTION = 1 / 8
# Pruned steps are judged against mat-vec steps after this many (a moving average of their times).
PRUNED_TRIAL_STEPS = 8
# A single pruned-mode step this many times slower than a mat-vec step ends pruned steps at once.
PRUNED_GIVE_UP = 4.0
# A mat-vec step with more candidates than this fraction recomputes every point in blocks instead.
EXACT_PASS_FRACTION = 1 / 16
EXACT_BLOCK_ROWS = 2048
THREADED_MIN_POINTS = 65536
MODES = ("auto", "matvec", "pruned")


def _expansion_slack(dim: int) -> float:
    """Bound, relative to |x|^2 + |c|^2, on the float32 error of |x|^2 - 2 x.c + |c|^2 (x 3 to spare).

    Any summation order of a d-term dot product errs by at most d u |x||c| (u = 2^-24), the norms
    likewise, and the two additions by a few u more.
    """
    return 3.0 * (2 * dim + 4) * 2.0**-24


class _Selection:
    """State of one farthest-point selection and its two kinds of step; both give the exact rule.

    * mat-vec step: |x|^2 - 2 x.c' + |c'|^2 for every point in one BLAS matrix-vector product (the
      cheapest full pass), used only as a filter: it has a proven error bound, so every point it
      cannot rule out gets its distance recomputed by the rule's own expression. Those are the few
      points that move (plus a thin band of near misses), so a step costs one mat-vec.
    * pruned step: every point belongs to the cluster of its nearest centre so far, radius R_c =
      the largest member distance. For a new centre c', a member x of cluster c satisfies
      |x - c'| >= |c - c'| - |x - c|, so x can only move to c' when |c - c'| < 2 |x - c|: whole
      clusters with |c - c'| >= 2 R_c are skipped, and inside the others so is every such point.
      Finding the clusters in reach would still cost O(selected) per step, so centres are grouped
      under the first LANDMARKS centres: a group whose landmark is farther from c' than its reach
      (largest centre-to-landmark distance) plus twice its largest radius holds no centre in reach.

    Pruning pays once clusters are small and well separated (late in the selection, clustered
    data); where distances concentrate (uniform textures, isotropic noise) nearly every cluster
    stays in reach and a mat-vec step is cheaper. The selection starts with mat-vec steps, tries
    pruned ones from step PROBE_START, keeps them while they are measured to be faster, and backs
    off exponentially when they are not. Timing only chooses the path, never the result.
    """

    def __init__(self, points: np.ndarray, n_select: int, seed: int, pool: ThreadPoolExecutor, workers: int):
        self.points = points
        self.pool, self.workers = pool, workers
        n_points, dim = points.shape
        self.n_select = n_select
        self.selected = np.empty(n_select, dtype=np.int64)
        self.centres = np.empty((n_select, dim), dtype=np.float32)
        self.owner = np.zeros(n_points, dtype=np.int64)          # index of each point's nearest centre
        # Mat-vec filter: point x may move iff (1 - k)|x|^2 - 2 x.c' + (1 - k)|c'|^2 <= m_x, with k
        # the expansion bound and m_x its distance plus the relative slack.
        self.kappa = np.float32(_expansion_slack(dim))
        self.sq_norms = np.einsum("ij,ij->i", points, points)
        self.lowered_norms = self.sq_norms * (np.float32(1) - self.kappa)
        # Landmark groups, kept up to date in both kinds of step (cheap: LANDMARKS distances a step).
        self.n_landmarks = min(LANDMARKS, n_select)
        self.group = np.zeros(n_select, dtype=np.int64)
        self.group_reach = np.zeros(self.n_landmarks)
        self.grouped = 1                                     # centres 0..grouped-1 have a group
        # Clusters: only kept while pruned steps run (None otherwise), rebuilt from `owner`.
        self.members: list[np.ndarray] | None = None
        self.sizes = np.zeros(n_select, dtype=np.int64)      # number of members
        self.radius = np.zeros(n_select)                     # sqrt of the largest member distance
        self.group_radius = np.zeros(self.n_landmarks)       # upper bound of the radii in a group
        self.centre_gap = np.zeros(n_select)                 # this step's squared centre-to-new-centre distance

        first = _start_index(n_points, seed)
        self.selected[0] = first
        self.centres[0] = points[first]
        self.min_dist = np.full(n_points, np.inf, dtype=np.float32)
        self.filter_dist = np.full(n_points, np.inf, dtype=np.float32)
        self._exact_pass(0, self.centres[0])

    def add_centre(self, step: int) -> np.ndarray:
        """Select the farthest point as centre `step` and return it."""
        index = int(np.argmax(self.min_dist))
        self.selected[step] = index
        self.centres[step] = self.points[index]
        return self.centres[step]

    def _group_centre(self, step: int) -> np.ndarray | None:
        """Put centre `step` in the group of its nearest landmark; its landmark distances (None for a
        landmark, which heads its own group). Only pruned steps need groups: after mat-vec steps
        rebuild_clusters catches up."""
        self.grouped = step + 1
        if step < self.n_landmarks:
            self.group[step] = step
            return None
        to_landmark = np.sqrt(_sq_dist(self.centres[: self.n_landmarks], self.centres[step]).astype(np.float64))
        g = int(np.argmin(to_landmark))
        self.group[step] = g
        self.group_reach[g] = max(self.group_reach[g], to_landmark[g])
        return to_landmark

    def _move(self, step: int, candidates: np.ndarray, centre: np.ndarray) -> None:
        """Give the candidates that are closer to the new centre to it, and keep the clusters (if
        any) up to date: only clusters that lost members shrink."""
        new_dist = _sq_dist(self.points[candidates], centre)
        closer = new_dist < self.min_dist[candidates]
        moved = candidates[closer]
        losers = np.unique(self.owner[moved]) if self.members is not None else ()
        self.min_dist[moved] = new_dist[closer]
        self.filter_dist[moved] = new_dist[closer] * np.float32(1 + SLACK)
        self.owner[moved] = step
        if self.members is None:
            return
        members = self.members
        members.append(moved)
        self.sizes[step] = len(moved)
        self.radius[step] = math.sqrt(float(self.min_dist[moved].max())) if len(moved) else 0.0
        g = self.group[step]
        self.group_radius[g] = max(self.group_radius[g], self.radius[step])
        # group_radius stays a valid (loose) upper bound and is tightened now and then.
        for c in losers:
            kept = members[c][self.owner[members[c]] == c]
            members[c] = kept
            self.sizes[c] = len(kept)
            self.radius[c] = math.sqrt(float(self.min_dist[kept].max())) if len(kept) else 0.0
        if step % 512 == 0:
            self.group_radius[:] = 0.0
            np.maximum.at(self.group_radius, self.group[: step + 1], self.radius[: step + 1])

    def matvec_step(self, step: int, centre: np.ndarray) -> None:
        bound = self.points @ centre                          # BLAS: the one full pass of the step
        bound *= np.float32(-2)
        bound += self.lowered_norms
        bound += (np.float32(1) - self.kappa) * np.float32(centre @ centre)
        candidates = np.flatnonzero(bound <= self.filter_dist)
        if self.members is None and len(candidates) > EXACT_PASS_FRACTION * len(self.points):
            self._exact_pass(step, centre)                    # early steps: many points move
        else:
            self._move(step, candidates, centre)

    def _exact_pass(self, step: int, centre: np.ndarray) -> None:
        """The rule's own distances to `centre` for every point, in row blocks on all cores.

        Contiguous blocks need no gather and stay in cache between the difference and the sum,
        so this beats `_move` once a large share of the points are candidates.
        """
        def run(first: int, last: int) -> None:
            for start in range(first, last, EXACT_BLOCK_ROWS):
                block = slice(start, min(start + EXACT_BLOCK_ROWS, last))
                new_dist = _sq_dist(self.points[block], centre)
                closer = new_dist < self.min_dist[block]
                np.copyto(self.min_dist[block], new_dist, where=closer)
                np.copyto(self.filter_dist[block], new_dist * np.float32(1 + SLACK), where=closer)
                np.copyto(self.owner[block], step, where=closer)

        n_points = len(self.points)
        if self.workers == 1:
            run(0, n_points)
            return
        bounds = np.linspace(0, n_points, self.workers + 1).astype(int)
        # Threads write disjoint row ranges; NumPy releases the GIL inside these loops.
        for future in [self.pool.submit(run, a, b) for a, b in zip(bounds[:-1], bounds[1:])]:
            future.result()

    def rebuild_clusters(self, n_centres: int) -> None:
        """Members, radii, groups and group radii of the first `n_centres` centres, from `owner`."""
        for step in range(self.grouped, n_centres):
            self._group_centre(step)
        order = np.argsort(self.owner, kind="stable")
        counts = np.bincount(self.owner, minlength=n_centres)
        self.members = np.split(order, np.cumsum(counts)[:-1])
        self.sizes[:n_centres] = counts
        self.radius[:n_centres] = 0.0
        nonempty = np.flatnonzero(counts)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])[nonempty]
        self.radius[nonempty] = np.sqrt(np.maximum.reduceat(self.min_dist[order], starts).astype(np.float64))
        self.group_radius[:] = 0.0
        np.maximum.at(self.group_radius, self.group[:n_centres], self.radius[:n_centres])

    def pruned_step(self, step: int, centre: np.ndarray, max_candidates: int) -> bool:
        """One step touching only clusters in reach; False if more than `max_candidates` points
        would have to be checked (then only the new centre's group has been set, and a mat-vec
        step, which keeps the clusters too, does this step)."""
        to_landmark = self._group_centre(step)
        if to_landmark is None:
            nearby = np.arange(step)
        else:
            open_group = to_landmark < (self.group_reach + 2.0 * self.group_radius) * (1 + SLACK) + SLACK
            nearby = np.flatnonzero(open_group[self.group[:step]])
        gap = _sq_dist(self.centres[nearby], centre).astype(np.float64)
        in_reach = gap < 4.0 * self.radius[nearby] ** 2 * (1 + SLACK) + 1e-12
        reachable = nearby[in_reach]
        members = self.members
        if self.sizes[reachable].sum() > max_candidates:
            return False
        self.centre_gap[nearby] = gap
        candidates = np.concatenate([members[c] for c in reachable]) if len(reachable) else np.empty(0, np.int64)
        # The same bound point by point: x can only get closer if |c_x - c'|^2 < 4 |x - c_x|^2.
        close = self.centre_gap[self.owner[candidates]] < 4.0 * self.min_dist[candidates] * (1 + SLACK) + 1e-12
        self._move(step, candidates[close], centre)
        return True


def greedy_coreset(points: np.ndarray, n_select: int, seed: int = 0, progress: bool = False,
                   mode: str = "auto") -> np.ndarray:
    """Farthest-point selection; the same indices as greedy_coreset_reference, in any `mode`.

    `mode` chooses the steps (see _Selection): "auto" (measured: whichever is faster now),
    "matvec" (mat-vec steps only) or "pruned" (pruned steps from the second centre on; for tests).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    points = np.ascontiguousarray(points, dtype=np.float32)
    n_points = len(points)
    n_select = min(n_select, n_points)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    # Threads only pay on passes far larger than a thread hand-off.
    workers = cores if n_points >= THREADED_MIN_POINTS else 1
    with ThreadPoolExecutor(workers) as pool:
        return _select(_Selection(points, n_select, seed, pool, workers), mode, progress)


def _select(state: _Selection, mode: str, progress: bool) -> np.ndarray:
    n_points, n_select = len(state.points), state.n_select
    pruning = mode == "pruned"
    if pruning:
        state.rebuild_clusters(1)
    next_probe, probe_gap = PROBE_START, PROBE_START
    matvec_seconds = pruned_seconds = math.inf
    pruned_steps = 0
    max_candidates = n_points if mode == "pruned" else int(PRUNED_MAX_FRACTION * n_points)

    def leave_pruning(step: int) -> None:
        nonlocal pruning, probe_gap, next_probe
        pruning, state.members = False, None
        probe_gap *= 2
        next_probe = step + probe_gap

    steps = range(1, n_select)
    for step in tqdm(steps, desc="coreset", unit="pt", mininterval=1.0) if progress else steps:
        centre = state.add_centre(step)
        if pruning:
            start = time.perf_counter()
            if not state.pruned_step(step, centre, max_candidates):
                # Too many points in reach: a mat-vec step instead, which keeps the clusters once
                # pruning has proven itself, and ends a trial that has not.
                if pruned_steps < PRUNED_TRIAL_STEPS:
                    leave_pruning(step)
                state.matvec_step(step, centre)
            elapsed = time.perf_counter() - start
            pruned_seconds = elapsed if math.isinf(pruned_seconds) else 0.8 * pruned_seconds + 0.2 * elapsed
            pruned_steps += 1
            losing = (pruned_steps >= PRUNED_TRIAL_STEPS and pruned_seconds > matvec_seconds
                      or elapsed > PRUNED_GIVE_UP * matvec_seconds)
            if mode == "auto" and pruning and losing:
                leave_pruning(step)
            continue
        start = time.perf_counter()
        state.matvec_step(step, centre)
        elapsed = time.perf_counter() - start
        matvec_seconds = elapsed if math.isinf(matvec_seconds) else 0.8 * matvec_seconds + 0.2 * elapsed
        if mode == "auto" and step + 1 >= next_probe and step + 1 < n_select:
            state.rebuild_clusters(step + 1)
            pruning, pruned_seconds, pruned_steps = True, math.inf, 0
    return state.selected
