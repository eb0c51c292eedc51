"""The batched farthest-point selector (every fit's, the distributed one's and `--update`'s):
picks decided among the points of largest distance, all other points updated for many centres at
once by one matrix product, with groups of points out of reach skipped. Same indices as
greedy_coreset_reference."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
from tqdm import tqdm

from models.knn import MemoryBank
from models.patchcore.coreset.distances import (blas_distance_error, finish_distances, rule_pair_distances,
                                                squared_norms, start_index)

# The farthest point is decided among the points whose stored distance is within this many BLAS
# errors of the largest (two would do: one for each of two stored values; the rest is headroom).
TOP_MARGIN = 2.5
# Picks are decided among about TOP_ROWS points of the largest stored distances (all others are
# known to be nearer than one of them), drawn from a sample of TOP_SAMPLE distances.
TOP_ROWS = 1024
TOP_SAMPLE = 8192
# A round over all points (top rows that could not decide) ends after this many picks.
TOP_RETRY_STEPS = 64
# The rule's distances of up to this many rows are computed one by one (each against a slice of
# the centres, no gathers), more in one pairwise call (fewer NumPy calls per row).
LOOP_ROWS = 16
# A point missing at least this many centres gets them by a BLAS product first (see _cover_by_product).
WIDE_NEED = 256
# Pending centres are applied to blocks of at most about this many (point, centre) pairs.
FLUSH_ELEMENTS = 1 << 20
# Points are grouped by the nearest of GROUPS pivots (groups of GROUP_MIN_SIZE points at least, on
# average) once a selection has that many centres, and pending centres are applied group by group
# while at most GROUP_MAX_FRACTION of the (point, centre) pairs stay in reach.
GROUPS = 128
GROUP_MIN_SIZE = 256
GROUP_MAX_FRACTION = 1 / 2


def top_rows(values: np.ndarray, want: int, error: float) -> tuple[np.ndarray | None, float]:
    """The points whose stored distance is at or above a threshold taken from a sample of `values`
    (about `want` of them, sorted), and a bound above the rule distance of every other point (the
    threshold plus `error`); None and -inf where that would be nearly all points."""
    n_points = len(values)
    if n_points <= 4 * want:
        return None, -math.inf
    sample = values[:: max(1, n_points // TOP_SAMPLE)]
    rank = len(sample) - max(1, want * len(sample) // n_points)
    threshold = np.partition(sample, rank)[rank]
    return np.flatnonzero(values >= threshold), float(threshold) + error


def _farthest_among(values: np.ndarray, error: float, bound: float,
                    exact: Callable[[np.ndarray], np.ndarray]) -> int | None:
    """Position in `values` of the farthest point (largest rule distance, lowest position on ties),
    or None if it may be a point outside them, all of whose rule distances are below `bound`.

    `values` are within `error` of the rule's distances. Only those within TOP_MARGIN errors of the largest can be the farthest, and only they get their rule
    distances, from `exact(positions)` (sorted positions). The largest value is `error` above its
    rule distance at worst, so it must be above `bound` by more than that.
    """
    best = int(np.argmax(values))
    if float(values[best]) - error <= bound:
        return None
    top = np.flatnonzero(values >= values[best] - TOP_MARGIN * error)
    if len(top) == 1:                           # no rival: its exact value does not matter here
        return int(top[0])
    return int(top[np.argmax(exact(top))])      # top is sorted: lowest position on ties


class BatchedSelection:
    """Farthest-point selection that decides picks among the top rows and updates all other points
    for many centres at once.

    Every point keeps the minimum of its BLAS distances to the centres applied to it (`nearest`),
    within blas_distance_error e of the rule's. The top rows are the points at or above a threshold
    t taken from a sample of those values (about TOP_ROWS of them): every other point's rule
    distance is below t + e, and only shrinks with more centres. So while the largest top-row value
    is more than its own error above that, the farthest point is a top row, and only the top rows'
    values need each new centre: a matrix-vector product over their copy, small enough to stay in
    the cache. When they can no longer decide, the other points get every pending centre in one
    matrix-matrix product (BLAS runs those near the cores' peak; a matrix-vector product runs at
    memory speed, and it is all the plain greedy does), and new top rows are drawn. Between the
    points within twice e of the largest value, the rule's distances decide (rule_nearest), and
    groups of points out of a pending centre's reach skip it (apply_pending). No per-point owners,
    no per-pick pass over all points.
    """

    def __init__(self, points: np.ndarray, n_select: int):
        self.points = points
        n_points, dim = points.shape
        self.sq_norms = squared_norms(points)
        self.scale_sq = float(self.sq_norms.max(initial=0.0))      # 0 for a shard with no points
        self.error = blas_distance_error(dim, self.scale_sq)
        self.selected = np.empty(n_select, dtype=np.int64)
        self.centres = np.empty((n_select, dim), dtype=np.float32)
        self.centre_sqs = np.empty(n_select, dtype=np.float32)
        self.n_centres = 0
        self.applied = 0                                   # centres 0..applied-1 are in `nearest`
        # This round's top rows (None: all points), the bound above every other point's rule
        # distance, their points, squared norms and values (None: no round yet), and its picks.
        self.rows: np.ndarray | None = None
        self.bound = -math.inf
        self.round_points, self.round_sq_norms = points, self.sq_norms
        self.values: np.ndarray | None = None
        self.round_picks = 0
        self.want = TOP_ROWS
        self.nearest = np.full(n_points, np.inf, dtype=np.float32)
        # The rule's distance of a point to its nearest of the first exact_done centres (see rule_nearest).
        self.exact_nearest = np.full(n_points, np.inf, dtype=np.float32)
        self.exact_done = np.zeros(n_points, dtype=np.int64)
        # Groups of points by pivot (see apply_pending): built once n_groups centres exist.
        self.n_groups = min(GROUPS, n_points // GROUP_MIN_SIZE, n_select)
        self.groups: list[np.ndarray] | None = None

    def add_centre(self, index: int, centre: np.ndarray, centre_sq: np.float32) -> None:
        """Make `centre` (point `index`, global when sharded; squared norm `centre_sq`) the next centre.

        Sharded selections pass centres found on other shards: the same row gives the same squared
        norm on every shard (einsum), so every shard sees the rule's exact values.
        """
        step = self.n_centres
        self.selected[step] = index
        self.centres[step] = centre
        self.centre_sqs[step] = centre_sq
        self.n_centres += 1
        if centre_sq > self.scale_sq:                # a sharded centre longer than any local point
            self.scale_sq = float(centre_sq)
            self.error = blas_distance_error(self.points.shape[1], self.scale_sq)
            self.values = None                       # the top rows' bound uses the error: new ones
        if self.values is not None:
            distance = finish_distances(self.round_points @ centre, self.round_sq_norms, centre_sq)
            np.minimum(self.values, distance, out=self.values)
            if self.rows is None:
                self.applied = self.n_centres
        self.round_picks += 1

    def start_from(self, distances: np.ndarray) -> None:
        """Start from the rule's distances to centres chosen before (not counted as this selection's)."""
        self.nearest[:] = distances
        self.exact_nearest[:] = distances

    def add_local_centre(self, index: int) -> None:
        self.add_centre(index, self.points[index], self.sq_norms[index])

    def apply_pending(self) -> None:
        """Every point's BLAS distances to the centres not yet applied, into its nearest one.

        Once n_groups centres are chosen (a long selection), the points are grouped by the nearest of
        n_groups pivots, and a pending centre c skips every group g whose points are provably too far:
        |x - c| >= |q_g - c| - r_g (q_g the pivot, r_g the group's radius), so if that bound squared
        exceeds the largest stored value in g by 3e, c is farther from each x in g than its nearest
        applied centre by the rule and by BLAS (a rule value within e of the exact one, BLAS ones
        within e of the rule's). Where most (group, centre) pairs stay in reach (uniform data) one
        product over all points is cheaper than a product per group.
        """
        first, last = self.applied, self.n_centres
        if first == last:
            return
        if self.groups is None and last >= self.n_groups > 0:
            self._build_groups()
        pending = np.arange(first, last)
        if self.groups is None:
            self._apply(slice(None), pending)
        else:
            in_reach = self._groups_in_reach(pending)
            if (self.group_sizes @ in_reach.sum(axis=1)) > GROUP_MAX_FRACTION * len(self.points) * len(pending):
                self._apply(slice(None), pending)
            else:
                for group in np.flatnonzero(in_reach.any(axis=1)):
                    self._apply(self.groups[group], pending[in_reach[group]])
        self.applied = last

    def _apply(self, rows: slice | np.ndarray, centre_ids: np.ndarray) -> None:
        """BLAS distances of points `rows` to centres `centre_ids`, into their nearest ones."""
        points, sq_norms = self.points[rows], self.sq_norms[rows]
        centres, centre_sqs = self.centres[centre_ids], self.centre_sqs[centre_ids]
        nearest = self.nearest[rows]                  # a view for a slice, a copy for indices
        block_rows = max(256, FLUSH_ELEMENTS // len(centre_ids))    # a block of products stays in the cache
        for start in range(0, len(points), block_rows):
            stop = start + block_rows
            block = finish_distances(points[start:stop] @ centres.T, centre_sqs)
            closest = block.min(axis=1)
            closest += sq_norms[start:stop]
            np.minimum(nearest[start:stop], closest, out=nearest[start:stop])
        if not isinstance(rows, slice):
            self.nearest[rows] = nearest

    def _build_groups(self) -> None:
        """The points grouped by the nearest of n_groups pivots, and the groups' radii."""
        n_points, n_groups = len(self.points), self.n_groups
        # Evenly spaced points as pivots: groups follow the density (the first centres would be
        # outliers, leaving most points in a few wide groups). Any pivots keep the bounds valid.
        pivot_ids = np.linspace(0, n_points - 1, n_groups).astype(np.int64)
        pivots, pivot_sqs = self.points[pivot_ids], self.sq_norms[pivot_ids]
        owner = np.empty(n_points, dtype=np.int64)
        distance = np.empty(n_points, dtype=np.float32)
        block_rows = max(256, FLUSH_ELEMENTS // n_groups)
        for start in range(0, n_points, block_rows):
            stop = min(start + block_rows, n_points)
            block = finish_distances(self.points[start:stop] @ pivots.T, pivot_sqs)
            owner[start:stop] = block.argmin(axis=1)
            distance[start:stop] = block[np.arange(stop - start), owner[start:stop]] + self.sq_norms[start:stop]
        order = np.argsort(owner, kind="stable")                  # members in index order
        counts = np.bincount(owner, minlength=n_groups)
        nonempty = np.flatnonzero(counts)
        starts = (np.cumsum(counts) - counts)[nonempty]
        self.groups = np.split(order, starts[1:])
        # A BLAS distance is within e of the rule's, which is within e of the exact one.
        largest = np.maximum.reduceat(distance[order], starts).astype(np.float64) + 2 * self.error
        self.group_radius = np.sqrt(np.maximum(largest, 0.0))
        self.group_starts = starts
        self.group_sizes = counts[nonempty]
        self.group_order = order
        self.pivots = pivots[nonempty].astype(np.float64)
        self.pivot_sqs = np.einsum("ij,ij->i", self.pivots, self.pivots)

    def _groups_in_reach(self, pending: np.ndarray) -> np.ndarray:
        """[groups, pending] whether a pending centre may come nearer some point of a group."""
        centres = self.centres[pending].astype(np.float64)
        norms = self.pivot_sqs[:, None] + np.einsum("ij,ij->i", centres, centres)[None, :]
        gap_sq = norms - 2 * self.pivots @ centres.T
        # float64 rounding of that difference: well under 1e-12 of the squared norms (d u64 each).
        gap = np.sqrt(np.maximum(gap_sq - 1e-12 * norms, 0.0))
        lower = np.square(np.maximum(gap - self.group_radius[:, None], 0.0))
        largest = np.maximum.reduceat(self.nearest[self.group_order], self.group_starts).astype(np.float64)
        return lower <= largest[:, None] + 3 * self.error

    def farthest(self) -> int:
        """Index of the farthest point (lowest on ties), from this round's top rows or a new round's."""
        while True:
            widened_to_all = self.rows is None and self.want > TOP_ROWS
            if self.values is not None and not (widened_to_all and self.round_picks >= TOP_RETRY_STEPS):
                rows = self.rows
                position = _farthest_among(self.values, self.error, self.bound, lambda among: self.rule_nearest(
                    among if rows is None else rows[among], self.n_centres))
                if position is not None:
                    return position if rows is None else int(rows[position])
            self._new_round()

    def _new_round(self) -> None:
        """Pending centres applied to all points, and new top rows (four times as many after a
        round that decided nothing: values within rounding of each other)."""
        if self.values is not None:
            self.want = TOP_ROWS if self.round_picks else self.want * 4
        self.apply_pending()
        self.rows, self.bound = top_rows(self.nearest, self.want, self.error)
        if self.rows is None:                               # every point is a top row: update them in place
            self.round_points, self.round_sq_norms, self.values = self.points, self.sq_norms, self.nearest
        else:
            rows = self.rows
            self.round_points, self.round_sq_norms, self.values = self.points[rows], self.sq_norms[rows], self.nearest[rows]
        self.round_picks = 0

    def exact_distance(self, index: int) -> float:
        """The rule's distance of point `index` to its nearest centre."""
        return float(self.rule_nearest(np.array([index]), self.n_centres)[0])

    def rule_nearest(self, rows: np.ndarray, n_centres: int) -> np.ndarray:
        """The rule's distances of points `rows` (sorted) to their nearest of the first `n_centres` centres.

        Kept per point with the number of centres it covers: a point near the top is asked again
        and again (ties, plateaus of equal distances), and then only the newer centres are computed.
        """
        need = n_centres - self.exact_done[rows]
        wide = rows[need >= WIDE_NEED]
        if len(wide) > LOOP_ROWS:                   # a plateau of rivals: one product for all
            self._cover_by_product(wide, n_centres)
        else:
            for row in wide:
                self._cover_row_by_product(int(row), n_centres)
        narrow = rows[(need > 0) & (need < WIDE_NEED)]
        if len(narrow) > LOOP_ROWS:
            self._cover_pairwise(narrow, n_centres)
        else:
            for row in narrow:
                done = int(self.exact_done[row])
                # The rule's pair values: einsum rounds x.c as c.x, and the additions keep its order.
                distance = finish_distances(np.einsum("ij,j->i", self.centres[done:n_centres], self.points[row]),
                                            self.sq_norms[row], self.centre_sqs[done:n_centres])
                self.exact_nearest[row] = min(self.exact_nearest[row], distance.min())
                self.exact_done[row] = n_centres
        return self.exact_nearest[rows]

    def _cover_row_by_product(self, row: int, n_centres: int) -> None:
        """_cover_by_product for one point (a matrix-vector product over its missing centres)."""
        done = int(self.exact_done[row])
        # |x|^2 left out, as below
        shifted = finish_distances(self.centres[done:n_centres] @ self.points[row], self.centre_sqs[done:n_centres])
        near = done + np.flatnonzero(shifted <= shifted.min() + np.float32(TOP_MARGIN * self.error))
        distance = rule_pair_distances(self.points, self.sq_norms, self.centres, self.centre_sqs,
                                       np.full(len(near), row), near)
        self.exact_nearest[row] = min(self.exact_nearest[row], distance.min())
        self.exact_done[row] = n_centres

    def _cover_by_product(self, rows: np.ndarray, n_centres: int) -> None:
        """rule_nearest's update of points missing many centres: BLAS distances to all of them in
        one product, the rule's only to those within TOP_MARGIN errors of a point's nearest (only
        they can be it). All rows take the centres from the earliest any of them misses: a few more
        than needed for some, and their minimum is still the rule's over all centres so far."""
        first = int(self.exact_done[rows].min())
        centres, centre_sqs = self.centres[first:n_centres], self.centre_sqs[first:n_centres]
        block_rows = max(1, FLUSH_ELEMENTS // (n_centres - first))
        for start in range(0, len(rows), block_rows):
            block = rows[start:start + block_rows]
            # |x|^2 is left out: the same for every centre, it shifts a row's values but not their order.
            # [centres, rows]: for a few rows BLAS runs this way round 2-3x faster than [rows, centres].
            shifted = finish_distances(centres @ self.points[block].T, centre_sqs[:, None])
            limit = shifted.min(axis=0) + np.float32(TOP_MARGIN * self.error)
            near_row, near_centre = np.nonzero((shifted <= limit).T)           # row-major: grouped by row
            distance = rule_pair_distances(self.points, self.sq_norms, self.centres, self.centre_sqs,
                                           block[near_row], first + near_centre)
            row_starts = np.flatnonzero(np.diff(near_row, prepend=-1))
            nearest = np.minimum.reduceat(distance, row_starts)
            self.exact_nearest[block] = np.minimum(self.exact_nearest[block], nearest)
            self.exact_done[block] = n_centres

    def _cover_pairwise(self, rows: np.ndarray, n_centres: int) -> None:
        """rule_nearest's update for many rows at once: every missing (row, centre) pair in one call."""
        done = self.exact_done[rows]
        need = n_centres - done
        pairs = np.repeat(np.arange(len(rows)), need)
        if len(pairs):
            first = np.cumsum(need) - need              # pair k of row i: centre done_i + k - first_i
            centre_ids = np.arange(len(pairs)) - first[pairs] + done[pairs]
            values = rule_pair_distances(self.points, self.sq_norms, self.centres, self.centre_sqs, rows[pairs], centre_ids)
            asked = rows[need > 0]
            nearest = np.minimum.reduceat(values, first[need > 0])
            self.exact_nearest[asked] = np.minimum(self.exact_nearest[asked], nearest)
            self.exact_done[rows] = n_centres


def greedy_coreset(points: np.ndarray, n_select: int, seed: int = 0, progress: bool = False) -> np.ndarray:
    """Farthest-point selection (see BatchedSelection); the same indices as greedy_coreset_reference."""
    points = np.ascontiguousarray(points, dtype=np.float32)
    n_select = min(n_select, len(points))
    if n_select == 0:
        return np.empty(0, dtype=np.int64)
    state = BatchedSelection(points, n_select)
    state.add_local_centre(start_index(len(points), seed))
    return _select(state, n_select, progress)


def _select(state: BatchedSelection, n_select: int, progress: bool) -> np.ndarray:
    """The remaining picks of `state`, each the farthest point."""
    for _ in tqdm(range(state.n_centres, n_select), desc="coreset", unit="pt", mininterval=1.0, disable=not progress):
        state.add_local_centre(state.farthest())
    return state.selected


def greedy_coreset_continued(points: np.ndarray, centres: np.ndarray, n_select: int,
                             progress: bool = False) -> np.ndarray:
    """The farthest-point selection continued: `centres` [M, d] are already chosen, pick `n_select`
    of `points` (indices, in order of choice).

    The first pick is the point farthest from every given centre (lowest index on ties), then the
    rule goes on as in greedy_coreset.
    """
    points = np.ascontiguousarray(points, dtype=np.float32)
    centres = np.ascontiguousarray(centres, dtype=np.float32)
    n_select = min(n_select, len(points))
    if n_select == 0:
        return np.empty(0, dtype=np.int64)
    state = BatchedSelection(points, n_select)
    # Distance to the nearest given centre, recomputed exactly (float64) by the kNN search, so it
    # does not depend on how BLAS blocks the products: the same inputs give the same picks. Exact,
    # it is both the stored value and the rule's over the given centres.
    nearest = MemoryBank(centres).search(points, k=1)[0][:, 0].astype(np.float64)
    state.start_from((nearest * nearest).astype(np.float32))
    return _select(state, n_select, progress)
