"""Greedy k-center (farthest point) coreset selection.

The rule: start at a seeded random index, then repeatedly take the point whose squared distance to
its nearest selected point is largest (lowest index on ties), in float32 on the randomly projected
features, a squared distance being |x|^2 - 2 x.c + |c|^2 (the mat-vec form every fast greedy uses)
with each dot product summed by NumPy's einsum, whose result for a row does not depend on which
other rows are in the call (unlike BLAS, whose kernels round a row differently by its position).
That makes every way of computing a distance below bit-identical, so
`greedy_coreset_reference` (the plain loop) and `greedy_coreset` return the same indices.

`greedy_coreset` runs _BatchedSelection: picks decided among the points of largest distance, all
other points updated for many centres at once by one matrix product (with groups of points out of
reach skipped). _Selection (mat-vec steps with exact bookkeeping, and pruned steps over clusters of
each centre's points) serves the sharded and continued selections and the explicit test modes.
"""
from __future__ import annotations

import math
import statistics
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Callable

import numpy as np
from tqdm import tqdm

from models.knn import MemoryBank, product_rounding_bound
from utils.runtime import available_cores

if TYPE_CHECKING:
    import paddle


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


def squared_norms(points: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", points, points)


def _distances(points: np.ndarray, sq_norms: np.ndarray, centre: np.ndarray, centre_sq: np.float32,
               out: np.ndarray | None = None) -> np.ndarray:
    """The rule's squared distances of `points` (with their squared norms) to `centre`."""
    out = np.einsum("ij,j->i", points, centre, out=out)
    out *= np.float32(-2)
    out += sq_norms
    out += centre_sq
    return out


def greedy_coreset_reference(points: np.ndarray, n_select: int, seed: int = 0) -> np.ndarray:
    """Plain farthest-point selection; the definition the fast selector is tested against."""
    points = np.ascontiguousarray(points, dtype=np.float32)
    sq_norms = squared_norms(points)
    selected = [_start_index(len(points), seed)]
    min_dist = _distances(points, sq_norms, points[selected[0]], sq_norms[selected[0]])
    for _ in range(n_select - 1):
        index = int(np.argmax(min_dist))
        selected.append(index)
        np.minimum(min_dist, _distances(points, sq_norms, points[index], sq_norms[index]), out=min_dist)
    return np.asarray(selected, dtype=np.int64)


# Pruned steps bound distances from below in the LOW_DIM leading principal directions of the points
# (a quarter of the 128 projected dimensions keeps ~98% of the variance of real patch features),
# estimated from at most PCA_SAMPLE evenly spaced points.
LOW_DIM = 32
PCA_SAMPLE = 4096
# The farthest point is decided among the points whose stored distance is within this many BLAS
# errors of the largest (two would do: one for each of two stored values; the rest is headroom).
TOP_MARGIN = 2.5
# The farthest point is looked for among about TOP_ROWS points of the largest stored distances (all
# others are known to be nearer than one of them), found again from a sample of TOP_SAMPLE distances
# once none of them can be it: a gather of a few hundred values per step instead of passes over all.
TOP_ROWS = 1024
TOP_SAMPLE = 8192
# After a fresh top_rows could not decide, this many searches run over all points.
TOP_RETRY_STEPS = 64
# Relative slack on the pruning tests, for the rounding of the float32 centre-to-centre distances.
SLACK = 1e-4
# Trying pruned steps (a probe: cluster rebuild, then trial steps) may cost 1/PROBE_BUDGET of the
# mat-vec time spent since the last probe, doubled after each failed trial; before the first probe
# its cost is taken as PROBE_COST_STEPS mat-vec steps (rebuild ~ an exact pass, an argsort and, the
# first time, the low coordinates). Data where pruning never pays thus lose at most a few percent.
PROBE_BUDGET = 20.0
PROBE_COST_STEPS = 10
# A pruned step that would have to check more than this fraction of the points is not worth trying.
# Most points it checks cost two scalar lookups and a LOW_DIM gather, so on bottle features (163,856
# x 128) pruned steps already beat mat-vec steps at step ~200, when a third of the points are in reach.
PRUNED_MAX_FRACTION = 1 / 2
# Before a probe, whether a pruned step could run at all is estimated from every REACH_STRIDE-th point.
REACH_STRIDE = 16
# Pruned steps are judged against mat-vec steps after this many (the median of the last as many).
PRUNED_TRIAL_STEPS = 8
# Two pruned-mode steps in a row this many times slower than a mat-vec step end pruned steps at once.
PRUNED_GIVE_UP = 4.0
# Mat-vec passes run in row blocks (few NumPy calls per point, measured best at 32k rows on
# 50k-200k x 128), on all cores when the pass is large enough for a thread hand-off to pay.
BLOCK_ROWS = 32768
THREADED_MIN_POINTS = 16384
# Exact distances of scattered rows gather at most this many rows (and their centres) at a time.
GATHER_ROWS = 8192
# _BatchedSelection computes the rule's distances of up to this many rows one by one (each against a
# slice of the centres, no gathers), more in one pairwise call (fewer NumPy calls per row).
LOOP_ROWS = 16
# A point missing at least this many centres gets them by a BLAS product first (see _cover_by_product).
WIDE_NEED = 256
# Mat-vec steps use the BLAS filter while fewer than this fraction of the points are candidates
# (measured on 50k x 128: recomputing N/8 gathered rows costs 0.75 of the BLAS pass, N/4 2.3x).
FILTER_MAX_FRACTION = 1 / 6
MODES = ("auto", "batched", "mixed", "matvec", "pruned")
# _BatchedSelection applies pending centres to blocks of at most about this many (point, centre) pairs.
FLUSH_ELEMENTS = 1 << 20
# It groups the points by the nearest of its first GROUPS centres (groups of GROUP_MIN_SIZE points
# at least, on average), and applies pending centres group by group while at most
# GROUP_MAX_FRACTION of the (point, centre) pairs stay in reach.
GROUPS = 128
GROUP_MIN_SIZE = 256
GROUP_MAX_FRACTION = 1 / 2


def blas_distance_error(dim: int, largest_sq_norm: float) -> float:
    """How far a squared distance computed with a BLAS dot product (|x|^2 - 2 p + |c|^2, in any of the
    selector's forms) may be from the rule's, for points of squared norm at most `largest_sq_norm`.

    Both use the same squared norms, so they differ by twice the difference of their dot products
    (each within d u |x||c| of the exact one) plus their own float32 roundings of values <= 4 max|x|^2:
    7 u for the rule's two additions, 16 u at most for the forms of _Selection._blas_step (half gap,
    the product minus it and back, additions). (4 d + 23) u in all; 25 u more for the roundings of
    the comparisons that use it. A minimum over centres of such values is as close to the rule's.
    """
    return (4 * dim + 48) * 2.0**-24 * largest_sq_norm


def rule_pair_distances(points: np.ndarray, sq_norms: np.ndarray, centres: np.ndarray, centre_sqs: np.ndarray,
                        rows: np.ndarray, centre_ids: np.ndarray) -> np.ndarray:
    """The rule's squared distances of points[rows] to centres[centre_ids] (pairwise).

    einsum's "ij,ij->i" sums each row with the same kernel, in the same order, as the "ij,j->i"
    of _distances (one operand contiguous along j, one output per row), so a pair's value does
    not depend on the other pairs in the call nor on which centre they use: one call serves
    points with different nearest centres. Gathers at most GATHER_ROWS pairs at a time.
    """
    def block(rows: np.ndarray, centre_ids: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        out = np.einsum("ij,ij->i", np.take(points, rows, axis=0), np.take(centres, centre_ids, axis=0), out=out)
        out *= np.float32(-2)
        out += sq_norms[rows]
        out += centre_sqs[centre_ids]
        return out

    if len(rows) <= GATHER_ROWS:                          # most calls: a few rows, no loop
        return block(rows, centre_ids)
    out = np.empty(len(rows), dtype=np.float32)
    for start in range(0, len(rows), GATHER_ROWS):
        block(rows[start:start + GATHER_ROWS], centre_ids[start:start + GATHER_ROWS], out[start:start + GATHER_ROWS])
    return out


class _FarthestSearch:
    """The farthest point (largest rule distance, lowest index on ties) from stored distances that
    are the rule's, or within `error` of it where `approximate`.

    The search runs among about TOP_ROWS "top rows": the points at or above a threshold t taken from
    a sample of the stored distances. Every other point's stored distance is below t, so its rule
    distance is below t + error, and stays so: a point's rule distance never grows. While the largest
    stored value among the top rows is above that by more than its own error, the farthest point is
    one of them: a gather of a few hundred values per step instead of passes over all points.
    """

    def __init__(self) -> None:
        self.rows: np.ndarray | None = None     # sorted; None until the first search or after reset
        self.bound = math.inf                   # every rule distance outside `rows` is below it
        self.skip = 0                           # searches left over all points (see TOP_RETRY_STEPS)

    def reset(self) -> None:
        """Forget the top rows (stored distances changed other than by shrinking, or their scale)."""
        self.rows = None

    def farthest(self, values: np.ndarray, error: float, approximate: bool,
                 exact: Callable[[np.ndarray], np.ndarray],
                 prepare: Callable[[np.ndarray], None] | None = None) -> int:
        """Index of the farthest point. `exact(rows)` gives the rule's distances of sorted `rows`;
        `prepare(rows)` is told of new top rows (to make their values exact at once, say)."""
        if self.skip:
            self.skip -= 1
            return self._argmax_among(values, None, error, approximate, exact)
        if self.rows is not None:
            index = self._argmax_among(values, self.rows, error, approximate, exact)
            if index is not None:
                return index
        self._find_rows(values, error)
        if self.rows is not None:
            if prepare is not None:
                prepare(self.rows)
            index = self._argmax_among(values, self.rows, error, approximate, exact)
            if index is not None:
                return index
        # Distances within rounding of each other (or few points): whole passes for a while.
        self.rows, self.skip = None, TOP_RETRY_STEPS
        return self._argmax_among(values, None, error, approximate, exact)

    def _find_rows(self, values: np.ndarray, error: float) -> None:
        self.rows, self.bound = _top_rows(values, TOP_ROWS, error)

    def _argmax_among(self, values: np.ndarray, rows: np.ndarray | None, error: float, approximate: bool,
                      exact: Callable[[np.ndarray], np.ndarray]) -> int | None:
        """The farthest point if it is one of `rows` (None: all points), else None."""
        if rows is None:
            return _farthest_among(values, error, -math.inf, exact, approximate)
        position = _farthest_among(values[rows], error, self.bound, lambda among: exact(rows[among]), approximate)
        return None if position is None else int(rows[position])


def _top_rows(values: np.ndarray, want: int, error: float) -> tuple[np.ndarray | None, float]:
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


def _farthest_among(values: np.ndarray, error: float, bound: float, exact: Callable[[np.ndarray], np.ndarray],
                    approximate: bool = True) -> int | None:
    """Position in `values` of the farthest point (largest rule distance, lowest position on ties),
    or None if it may be a point outside them, all of whose rule distances are below `bound`.

    `values` are the rule's distances, or within `error` of them where `approximate`. Only those
    within TOP_MARGIN errors of the largest can be the farthest, and only they get their rule
    distances, from `exact(positions)` (sorted positions). The largest value is `error` above its
    rule distance at worst, so it must be above `bound` by more than that.
    """
    best = int(np.argmax(values))
    if float(values[best]) - error <= bound:
        return None
    if not approximate:
        return best
    top = np.flatnonzero(values >= values[best] - TOP_MARGIN * error)
    if len(top) == 1:                           # no rival: its exact value does not matter here
        return int(top[0])
    return int(top[np.argmax(exact(top))])      # top is sorted: lowest position on ties


class _BatchedSelection:
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
    groups of points out of a pending centre's reach skip it (apply_pending). No per-point owners:
    the same rule as _Selection without its per-step bookkeeping.
    """

    def __init__(self, points: np.ndarray, n_select: int):
        self.points = points
        n_points, dim = points.shape
        self.sq_norms = squared_norms(points)
        self.scale_sq = float(self.sq_norms.max())
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
            distance = self.round_points @ centre
            distance *= np.float32(-2)
            distance += self.round_sq_norms
            distance += centre_sq
            np.minimum(self.values, distance, out=self.values)
            if self.rows is None:
                self.applied = self.n_centres
        self.round_picks += 1

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
            sizes = np.array([len(members) for members in self.groups])
            if (sizes @ in_reach.sum(axis=1)) > GROUP_MAX_FRACTION * len(self.points) * len(pending):
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
            block = points[start:stop] @ centres.T
            block *= np.float32(-2)
            block += centre_sqs
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
            block = self.points[start:stop] @ pivots.T
            block *= np.float32(-2)
            block += pivot_sqs
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
        self.group_order = order
        self.pivots = pivots[nonempty].astype(np.float64)

    def _groups_in_reach(self, pending: np.ndarray) -> np.ndarray:
        """[groups, pending] whether a pending centre may come nearer some point of a group."""
        centres = self.centres[pending].astype(np.float64)
        norms = np.einsum("ij,ij->i", self.pivots, self.pivots)[:, None] + np.einsum("ij,ij->i", centres, centres)[None, :]
        gap_sq = norms - 2 * self.pivots @ centres.T
        # float64 rounding of that difference: well under 1e-12 of the squared norms (d u64 each).
        gap = np.sqrt(np.maximum(gap_sq - 1e-12 * norms, 0.0))
        lower = np.square(np.maximum(gap - self.group_radius[:, None], 0.0))
        largest = np.maximum.reduceat(self.nearest[self.group_order], self.group_starts).astype(np.float64)
        return lower <= largest[:, None] + 3 * self.error

    def farthest(self) -> int:
        """Index of the farthest point (lowest on ties), from this round's top rows or a new round's."""
        while True:
            if self.values is not None and not (
                    self.rows is None and len(self.points) > 4 * TOP_ROWS and self.round_picks >= TOP_RETRY_STEPS):
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
        self.rows, self.bound = _top_rows(self.nearest, self.want, self.error)
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
        if len(wide):
            self._cover_by_product(wide, n_centres)
        narrow = rows[(need > 0) & (need < WIDE_NEED)]
        if len(narrow) > LOOP_ROWS:
            self._cover_pairwise(narrow, n_centres)
        else:
            for row in narrow:
                done = int(self.exact_done[row])
                # The rule's pair values: einsum rounds x.c as c.x, and the additions keep its order.
                distance = np.einsum("ij,j->i", self.centres[done:n_centres], self.points[row])
                distance *= np.float32(-2)
                distance += self.sq_norms[row]
                distance += self.centre_sqs[done:n_centres]
                self.exact_nearest[row] = min(self.exact_nearest[row], distance.min())
                self.exact_done[row] = n_centres
        return self.exact_nearest[rows]

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
            shifted = self.points[block] @ centres.T
            shifted *= np.float32(-2)
            shifted += centre_sqs
            limit = shifted.min(axis=1) + np.float32(TOP_MARGIN * self.error)
            near_row, near_centre = np.nonzero(shifted <= limit[:, None])      # row-major: grouped by row
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


class _Selection:
    """State of one farthest-point selection and its two kinds of step; both compute the rule exactly.

    * mat-vec step: the distance of every point to the new centre, in cache-sized row blocks on all
      cores (dot product, distance, minimum, owner and the next farthest point in one sweep).
    * pruned step: every point belongs to the cluster of its nearest centre so far, radius R_c =
      the largest member distance. For a new centre c', a member x of cluster c satisfies
      |x - c'| >= |c - c'| - |x - c|, so x can only move to c' when |c - c'| < 2 |x - c|: whole
      clusters with |c - c'| >= 2 R_c are skipped, and inside the others so is every such point
      (with a margin for the rounding of the mat-vec form, see models.knn.product_rounding_bound).
      Both tests use lower bounds of distances from the points' coordinates in their LOW_DIM leading
      principal directions B (orthonormal columns: |x - y| >= |B^T (x - y)| / |B|), which cost a
      quarter of the full ones: one small mat-vec over all centres finds the clusters in reach,
      and a candidate is recomputed exactly only if its low-dimensional distance to c' does not
      already rule it out.

    Pruning pays once clusters are small and well separated (late in the selection, clustered
    data); where distances concentrate (uniform textures, isotropic noise) nearly every cluster
    stays in reach and a mat-vec step is cheaper. The selection starts with mat-vec steps, tries
    pruned ones once that is cheap against the time spent so far (PROBE_BUDGET), keeps them while
    they are measured to be faster, and backs off exponentially when they are not. Timing only chooses the path, never the result.
    """

    def __init__(self, points: np.ndarray, n_select: int, pool: ThreadPoolExecutor, workers: int):
        self.points = points
        self.pool, self.workers = pool, workers
        n_points, dim = points.shape
        self.n_select = n_select
        self.selected = np.empty(n_select, dtype=np.int64)        # indices of the centres (global when sharded)
        self.centres = np.empty((n_select, dim), dtype=np.float32)
        self.centre_sqs = np.empty(n_select, dtype=np.float32)
        self.owner = np.zeros(n_points, dtype=np.int64)          # index of each point's nearest centre
        self.sq_norms = squared_norms(points)
        # Clusters: only kept while pruned steps run (None otherwise), rebuilt from `owner`.
        self.members: list[np.ndarray] | None = None
        self.sizes = np.zeros(n_select, dtype=np.int64)      # number of members
        self.radius = np.zeros(n_select)                     # sqrt of the largest member distance
        self.centre_gap = np.zeros(n_select)                 # this step's lower bounds of squared centre gaps
        self.min_dist = np.full(n_points, np.inf, dtype=np.float32)
        self.farthest: int | None = None                     # argmax of min_dist, when a step found it
        self.search = _FarthestSearch()
        self.filter_next = False
        # Outside pruned steps a point's distance may be left as its BLAS value (approx[i]): within
        # approx_error of the rule's distance to its owner, which is its nearest centre for sure.
        self.approx = np.zeros(n_points, dtype=bool)
        self.any_approx = False                              # False: no point is approx (saves a pass)
        # (|x|^2 - d(x)) / 2, with which one comparison of the BLAS product finds the points in reach.
        self.half_gap = np.empty(n_points, dtype=np.float32)
        self.half_gap_valid = False
        self.mask = np.empty(n_points, dtype=bool)
        # Low-dimensional coordinates: built by the first rebuild_clusters (only pruned steps use them).
        self.basis: np.ndarray | None = None
        self.low = np.empty((0, 0), dtype=np.float32)
        self.centre_low = np.empty((0, 0), dtype=np.float32)
        self.centre_low_sq = np.empty(0, dtype=np.float32)
        self.low_ready = 0                                   # centres 0..low_ready-1 have theirs
        self._set_scale(float(self.sq_norms.max()))
        bounds = np.linspace(0, n_points, workers + 1).astype(int)
        self.row_ranges = list(zip(bounds[:-1], bounds[1:]))

    def _set_scale(self, largest_sq_norm: float) -> None:
        """Rounding margins for points and centres of squared norm at most `largest_sq_norm`."""
        self.scale_sq = largest_sq_norm
        dim = self.points.shape[1]
        bound = product_rounding_bound(dim) * largest_sq_norm
        # Margin of the pruning tests on squared distances: 12 x the rounding bound (see pruned_step).
        self.margin = 12.0 * bound
        # BLAS filter: its distances and the rule's are each within the rounding bound of the exact
        # value, so a point can only move if the filter puts it within twice that of its distance.
        self.filter_margin = 2.0 * bound
        self.approx_error = blas_distance_error(dim, largest_sq_norm)
        self.search.reset()
        if self.basis is not None:
            # A low coordinate b.x (|b| ~ 1) errs by at most (d + 2) u |x| whatever the summation
            # order, so the vector of two points' coordinate differences by sqrt(r) 2 (d + 2) u max|x|;
            # the mat-vec form over r of them adds product_rounding_bound(r) x the largest |B^T x|^2.
            low_dim = self.basis.shape[1]
            self.low_error = math.sqrt(low_dim) * 2 * (dim + 2) * 2.0**-24 * math.sqrt(largest_sq_norm)
            self.low_gap_margin = product_rounding_bound(low_dim) * self.basis_norm ** 2 * largest_sq_norm * 1.01

    def _build_low(self) -> None:
        """The points' coordinates in their leading principal directions, and the error margins."""
        n_points, dim = self.points.shape
        # Any orthonormal basis keeps the bounds valid; the sample and float32 products only decide
        # how tight they are (a probe that rebuilds must stay cheap against the mat-vec steps).
        sample = self.points[:: max(1, n_points // PCA_SAMPLE)]
        sample = sample - sample.mean(axis=0)
        _, vectors = np.linalg.eigh((sample.T @ sample).astype(np.float64))     # ascending eigenvalues
        low_dim = min(LOW_DIM, dim)
        self.basis = np.ascontiguousarray(vectors[:, ::-1][:, :low_dim], dtype=np.float32)
        self.basis_norm = float(np.linalg.norm(self.basis.astype(np.float64), 2)) * (1 + 1e-6)
        self.low = self.points @ self.basis
        self.centre_low = np.empty((self.n_select, low_dim), dtype=np.float32)
        self.centre_low_sq = np.empty(self.n_select, dtype=np.float32)
        self._set_scale(self.scale_sq)

    def _fill_centre_low(self, n_centres: int) -> None:
        """Low coordinates of centres low_ready..n_centres-1 (from their vectors: sharded centres
        may come from another process)."""
        if n_centres > self.low_ready:
            new = self.centres[self.low_ready:n_centres] @ self.basis
            self.centre_low[self.low_ready:n_centres] = new
            self.centre_low_sq[self.low_ready:n_centres] = squared_norms(new)
            self.low_ready = n_centres

    def local_farthest(self) -> int:
        """Index of the point farthest from its nearest centre (lowest index on ties)."""
        index = self.farthest if self.farthest is not None else self._exact_argmax()
        self.farthest = None
        return index

    def set_distances(self, distances: np.ndarray) -> None:
        """Start from given (exact) distances to the nearest centre, instead of none."""
        self.min_dist[:] = distances
        self.approx[:] = False
        self.any_approx = False
        self.half_gap_valid = False
        self.search.reset()

    def rule_distances(self, rows: np.ndarray, centres: np.ndarray) -> np.ndarray:
        """The rule's squared distances of points `rows` to centres number `centres` (pairwise)."""
        return rule_pair_distances(self.points, self.sq_norms, self.centres, self.centre_sqs, rows, centres)

    def _resolve(self, rows: np.ndarray) -> None:
        """Replace the BLAS distances among `rows` by the rule's distances to their owners."""
        rows = rows[self.approx[rows]]
        if len(rows):
            self._store_exact(rows, self.rule_distances(rows, self.owner[rows]))

    def _store_exact(self, rows: np.ndarray, distances: np.ndarray) -> None:
        """The rule's distances of `rows` to their owners."""
        self.min_dist[rows] = distances
        self.approx[rows] = False
        self.half_gap[rows] = (self.sq_norms[rows] - distances) * np.float32(0.5)

    def exact_distance(self, row: int) -> float:
        """The rule's distance of point `row` to its nearest centre."""
        self._resolve(np.array([row]))
        return float(self.min_dist[row])

    def _exact_argmax(self) -> int:
        """argmax of the rule's distances (lowest index on ties)."""
        return self.search.farthest(self.min_dist, self.approx_error, self.any_approx, self._exact_values,
                                    prepare=self._resolve)

    def _exact_values(self, rows: np.ndarray) -> np.ndarray:
        self._resolve(rows)
        return self.min_dist[rows]

    def set_centre(self, step: int, index: int, centre: np.ndarray, centre_sq: np.float32) -> None:
        """Make `centre` (point `index`, squared norm `centre_sq`) centre number `step`.

        Sharded selections pass centres found on other shards: the same row gives the same squared
        norm on every shard (einsum), so every shard sees the rule's exact values.
        """
        self.selected[step] = index
        self.centres[step] = centre
        self.centre_sqs[step] = centre_sq
        if centre_sq > self.scale_sq:               # a sharded centre longer than any local point
            self._set_scale(float(centre_sq))

    def add_local_centre(self, step: int, index: int | None = None) -> None:
        """Make point `index` (default: the farthest) centre number `step`."""
        index = self.local_farthest() if index is None else index
        self.set_centre(step, index, self.points[index], self.sq_norms[index])

    def _centre_sq(self, step: int) -> np.float32:
        return self.centre_sqs[step]

    def matvec_step(self, step: int) -> None:
        """Every point against centre `step`, by whichever full pass is cheaper now.

        Early on many points move and the exact sweep is best. Later only a few move, and one BLAS
        matrix-vector product (faster than einsum, but rounding a row by its position) rules out
        all the others: its values are within twice the rounding bound of the rule's, so only
        points it puts within that margin of their distance are recomputed exactly.
        """
        if self.members is None:
            self._blas_step(step)
            return
        if self.filter_next:
            candidates = self._blas_filter(step)
            if len(candidates) <= FILTER_MAX_FRACTION * len(self.points):
                self._update(step, candidates, self._centre_distances(step, candidates))
                return
            self.filter_next = False
        self._exact_sweep(step)

    def _blas_step(self, step: int) -> None:
        """The mat-vec step while no clusters are kept: one BLAS product decides almost every point.

        A point can only move if its BLAS distance v = |x|^2 - 2 p + |c|^2 (p = x.c) is below its
        stored distance plus twice the error e of either: p > (|x|^2 - d) / 2 + (|c|^2 - 2e) / 2
        (1.5e for the float32 roundings of that test). Of those, points surely closer (v + e below
        d minus its error) get v as a BLAS distance, points surely not stay, and the rest get the
        rule's exact values of both. Costs about the plain greedy's step: no pass of the rule's.
        """
        error, centre_sq = self.approx_error, float(self.centre_sqs[step])
        if np.isinf(self.min_dist[0]):
            # No centre yet: every point moves, to the rule's exact distance (a pass like the product).
            self._exact_sweep(step)
            return
        products = self.points @ self.centres[step]
        if not self.half_gap_valid:
            np.multiply(self.sq_norms - self.min_dist, np.float32(0.5), out=self.half_gap)
            self.half_gap_valid = True
        # In place (the cache at 50k x 128 holds the points only if each step touches little else).
        np.subtract(products, self.half_gap, out=products)
        np.greater(products, np.float32((centre_sq - 3.5 * error) / 2), out=self.mask)
        candidates = np.flatnonzero(self.mask)
        value = self.sq_norms[candidates] - np.float32(2) * (products[candidates] + self.half_gap[candidates])
        value += np.float32(centre_sq)
        stored = self.min_dist[candidates]
        stored_error = self.approx[candidates] * np.float32(error)
        surely = value + np.float32(error) < stored - stored_error
        unsure = candidates[~surely & (value - np.float32(error) < stored + stored_error)]
        moved = candidates[surely]
        self._set_nearest(moved, value[surely], step)
        self.approx[moved] = True
        self.any_approx = self.any_approx or len(moved) > 0
        if len(unsure):
            # The rule's values of both sides in one call: the distances of the approximate ones to
            # their owners, and of all to the new centre.
            stale = unsure[self.approx[unsure]]
            exact = self.rule_distances(np.concatenate([stale, unsure]),
                                        np.concatenate([self.owner[stale], np.full(len(unsure), step)]))
            self._store_exact(stale, exact[:len(stale)])
            exact = exact[len(stale):]
            closer = exact < self.min_dist[unsure]
            self._set_nearest(unsure[closer], exact[closer], step)
        self.farthest = self._exact_argmax()

    def _set_nearest(self, rows: np.ndarray | int, distances: np.ndarray | np.float32, step: int) -> None:
        self.min_dist[rows] = distances
        self.owner[rows] = step
        self.half_gap[rows] = (self.sq_norms[rows] - distances) * np.float32(0.5)

    def _blas_filter(self, step: int) -> np.ndarray:
        """Points whose distance to centre `step` may be below their current one."""
        centre = self.centres[step]
        bound = self.points @ centre
        bound *= np.float32(-2)
        bound += self.sq_norms
        bound += self._centre_sq(step) - np.float32(self.filter_margin)
        return np.flatnonzero(bound <= self.min_dist)

    def _centre_distances(self, step: int, rows: np.ndarray) -> np.ndarray:
        return _distances(np.take(self.points, rows, axis=0), self.sq_norms[rows], self.centres[step], self._centre_sq(step))

    def _update(self, step: int, candidates: np.ndarray, new_dist: np.ndarray) -> None:
        """Give the candidates closer to centre `step` to it, and keep the clusters (if any)."""
        closer = new_dist < self.min_dist[candidates]
        moved = candidates[closer]
        losers = np.unique(self.owner[moved]) if self.members is not None else None
        self.min_dist[moved] = new_dist[closer]
        self.owner[moved] = step
        if losers is not None:
            self._keep_clusters(step, moved, losers)

    def _exact_sweep(self, step: int) -> None:
        """The rule's distance of every point, in row blocks on all cores, with the next farthest point."""
        centre, centre_sq = self.centres[step], self._centre_sq(step)
        keep_clusters = self.members is not None

        def sweep(first: int, last: int) -> tuple[float, int, int, list[np.ndarray], list[np.ndarray]]:
            dist = np.empty(BLOCK_ROWS, dtype=np.float32)
            closer = np.empty(BLOCK_ROWS, dtype=bool)
            best, best_index, n_moved, moved, losers = -np.inf, -1, 0, [], []
            for start in range(first, last, BLOCK_ROWS):
                stop = min(start + BLOCK_ROWS, last)
                rows = stop - start
                block_dist, block_closer = dist[:rows], closer[:rows]
                _distances(self.points[start:stop], self.sq_norms[start:stop], centre, centre_sq, out=block_dist)
                np.less(block_dist, self.min_dist[start:stop], out=block_closer)
                if keep_clusters:
                    index = np.flatnonzero(block_closer)
                    moved.append(start + index)
                    losers.append(self.owner[start:stop][index])
                n_moved += int(np.count_nonzero(block_closer))
                np.copyto(self.min_dist[start:stop], block_dist, where=block_closer)
                np.copyto(self.owner[start:stop], step, where=block_closer)
                local = int(np.argmax(self.min_dist[start:stop]))
                if self.min_dist[start + local] > best:          # strict: the lowest index wins ties
                    best, best_index = float(self.min_dist[start + local]), start + local
            return best, best_index, n_moved, moved, losers

        if self.workers == 1:
            parts = [sweep(0, len(self.points))]
        else:
            # Threads write disjoint row ranges; NumPy releases the GIL inside these loops.
            parts = [f.result() for f in [self.pool.submit(sweep, a, b) for a, b in self.row_ranges]]
        best = max(part[0] for part in parts)
        self.farthest = next(part[1] for part in parts if part[0] == best)
        self.filter_next = sum(part[2] for part in parts) < FILTER_MAX_FRACTION / 2 * len(self.points)
        if keep_clusters:
            moved = np.concatenate([block for part in parts for block in part[3]])
            losers = np.unique(np.concatenate([block for part in parts for block in part[4]]))
            self._keep_clusters(step, moved, losers)

    def _keep_clusters(self, step: int, moved: np.ndarray, losers: np.ndarray) -> None:
        """Cluster upkeep after a step: the new centre's members, and the clusters that lost some."""
        members = self.members
        members.append(moved)
        self.sizes[step] = len(moved)
        self.radius[step] = math.sqrt(max(float(self.min_dist[moved].max()), 0.0)) if len(moved) else 0.0
        for c in losers:
            kept = members[c][self.owner[members[c]] == c]
            members[c] = kept
            self.sizes[c] = len(kept)
            self.radius[c] = math.sqrt(max(float(self.min_dist[kept].max()), 0.0)) if len(kept) else 0.0

    def rebuild_clusters(self, n_centres: int) -> None:
        """Members and radii of the first `n_centres` centres, from `owner` (exact distances)."""
        if self.basis is None:
            self._build_low()
        self._resolve(np.flatnonzero(self.approx))
        self.any_approx = False
        self.half_gap_valid = False                 # pruned steps do not keep it
        order = np.argsort(self.owner, kind="stable")
        counts = np.bincount(self.owner, minlength=n_centres)
        self.members = np.split(order, np.cumsum(counts)[:-1])
        self.sizes[:n_centres] = counts
        self.radius[:n_centres] = 0.0
        nonempty = np.flatnonzero(counts)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])[nonempty]
        largest = np.maximum.reduceat(self.min_dist[order], starts).astype(np.float64)
        self.radius[nonempty] = np.sqrt(np.maximum(largest, 0.0))

    def pruned_reach(self, n_centres: int) -> float:
        """Estimated fraction of the points a pruned step for the next farthest point would check.

        A look before a probe, from every REACH_STRIDE-th point (its cluster radii are no larger
        than the true ones, so the estimate errs towards trying): where distances concentrate, every
        cluster stays in reach of every new centre, and no rebuild is needed to see that.
        """
        if self.farthest is None:
            self.farthest = self._exact_argmax()
        owner = self.owner[::REACH_STRIDE]
        radius_sq = np.zeros(n_centres, dtype=np.float32)
        np.maximum.at(radius_sq, owner, self.min_dist[::REACH_STRIDE])
        offsets = self.centres[:n_centres] - self.points[self.farthest]
        in_reach = np.einsum("ij,ij->i", offsets, offsets) < 4 * radius_sq
        return float(np.count_nonzero(in_reach[owner])) / len(owner)

    def pruned_step(self, step: int, max_candidates: int) -> bool:
        """One step touching only clusters in reach; False if more than `max_candidates` points
        would have to be checked (then a mat-vec step, which keeps the clusters too, does this step).

        With m the margin (12 x the rounding bound of a squared distance), a point x of cluster c
        cannot move when |c - c'|^2 >= 4 d(x) + m, d(x) its stored distance, nor when
        |x - c'|^2 >= d(x) + m: then its computed distance to c' is at least d(x) whatever the
        rounding. Both are tested on lower bounds from the low coordinates (see _set_scale).
        """
        self._fill_centre_low(step + 1)
        low_centre = self.centre_low[step]
        low_gap_sq = self.centre_low[:step] @ low_centre
        low_gap_sq *= np.float32(-2)
        low_gap_sq += self.centre_low_sq[:step]
        low_gap_sq += self.centre_low_sq[step]
        low_gap = np.sqrt(np.maximum(low_gap_sq.astype(np.float64) - self.low_gap_margin, 0.0)) - self.low_error
        gap = np.square(np.maximum(low_gap, 0.0) / self.basis_norm)          # <= |c - c'|^2
        reach = (4.0 * self.radius[:step] ** 2 + self.margin) * (1 + SLACK)
        reachable = np.flatnonzero(gap < reach)
        # The few centres left get their full gaps (a sum of squares: no cancellation to allow for).
        offsets = np.take(self.centres, reachable, axis=0) - self.centres[step]
        gap = np.einsum("ij,ij->i", offsets, offsets).astype(np.float64)
        in_reach = gap < reach[reachable]
        reachable = reachable[in_reach]
        if self.sizes[reachable].sum() > max_candidates:
            return False
        self.centre_gap[reachable] = gap[in_reach]
        members = self.members
        candidates = np.concatenate([members[c] for c in reachable]) if len(reachable) else np.empty(0, np.int64)
        nearest = self.min_dist[candidates].astype(np.float64)
        close = self.centre_gap[self.owner[candidates]] < (4.0 * nearest + self.margin) * (1 + SLACK)
        candidates, nearest = candidates[close], nearest[close]
        offsets = np.take(self.low, candidates, axis=0) - low_centre  # take: ~2x fancy indexing
        low_reach = (np.sqrt(nearest + self.margin) * self.basis_norm + self.low_error) * (1 + SLACK)
        candidates = candidates[np.einsum("ij,ij->i", offsets, offsets) < np.square(low_reach)]
        self._update(step, candidates, self._centre_distances(step, candidates))
        return True


def _workers(n_points: int) -> int:
    # Threads only pay on passes far larger than a thread hand-off.
    return available_cores() if n_points >= THREADED_MIN_POINTS else 1


def greedy_coreset(points: np.ndarray, n_select: int, seed: int = 0, progress: bool = False,
                   mode: str = "auto") -> np.ndarray:
    """Farthest-point selection; the same indices as greedy_coreset_reference, in any `mode`.

    `mode` chooses how: "auto" and "batched" (_BatchedSelection), "mixed" (_Selection's mat-vec
    and pruned steps, whichever is measured faster now), "matvec" (_Selection's mat-vec steps only)
    or "pruned" (pruned steps from the second centre on; for tests).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    points = np.ascontiguousarray(points, dtype=np.float32)
    n_points = len(points)
    n_select = min(n_select, n_points)
    if mode in ("auto", "batched"):
        state = _BatchedSelection(points, n_select)
        state.add_local_centre(_start_index(n_points, seed))
        for _ in tqdm(range(1, n_select), desc="coreset", unit="pt", mininterval=1.0, disable=not progress):
            state.add_local_centre(state.farthest())
        return state.selected
    workers = _workers(n_points)
    with ThreadPoolExecutor(workers) as pool:
        state = _Selection(points, n_select, pool, workers)
        state.add_local_centre(0, _start_index(n_points, seed))
        return _select(state, mode, progress, state.add_local_centre)


def greedy_coreset_continued(points: np.ndarray, centres: np.ndarray, n_select: int,
                             progress: bool = False) -> np.ndarray:
    """The farthest-point selection continued: `centres` [M, d] are already chosen, pick `n_select`
    of `points` (indices, in order of choice).

    The first pick is the point farthest from every given centre (lowest index on ties), then the
    rule goes on as in greedy_coreset. Mat-vec steps only: the pruned steps' clusters assume every
    point's nearest centre is one of the selection's own.
    """
    points = np.ascontiguousarray(points, dtype=np.float32)
    centres = np.ascontiguousarray(centres, dtype=np.float32)
    n_select = min(n_select, len(points))
    if n_select == 0:
        return np.empty(0, dtype=np.int64)
    workers = _workers(len(points))
    with ThreadPoolExecutor(workers) as pool:
        state = _Selection(points, n_select, pool, workers)
        # Distance to the nearest given centre, recomputed exactly (float64) by the kNN search, so it
        # does not depend on how BLAS blocks the products: the same inputs give the same picks.
        nearest = MemoryBank(centres).search(points, k=1)[0][:, 0].astype(np.float64)
        state.set_distances((nearest * nearest).astype(np.float32))
        state.add_local_centre(0)
        return _select(state, "matvec", progress, state.add_local_centre)


class _ProbeSchedule:
    """When the next probe of pruned steps is due (see PROBE_BUDGET)."""

    def __init__(self) -> None:
        self.matvec_seconds = math.inf          # moving average of a mat-vec step
        self.since_probe = 0.0                  # mat-vec seconds since the last probe
        self.probe_cost: float | None = None    # what the last probe cost beyond mat-vec steps
        self.budget = PROBE_BUDGET

    def matvec_done(self, elapsed: float) -> None:
        self.matvec_seconds = elapsed if math.isinf(self.matvec_seconds) else 0.8 * self.matvec_seconds + 0.2 * elapsed
        self.since_probe += elapsed

    def due(self) -> bool:
        cost = self.probe_cost if self.probe_cost is not None else PROBE_COST_STEPS * self.matvec_seconds
        return self.since_probe >= self.budget * cost

    def looked(self) -> None:
        """A look found pruned steps out of reach (cheap): the next one after as long again."""
        self.since_probe = 0.0

    def probe_ended(self, cost: float, failed: bool) -> None:
        self.probe_cost, self.since_probe = cost, 0.0
        self.budget = self.budget * 2 if failed else PROBE_BUDGET


def _select(state: _Selection, mode: str, progress: bool, add_centre: Callable[[int], None]) -> np.ndarray:
    """Steps 0..n_select-1 (centre 0 is set): the distances to each new centre, by the cheaper kind
    of step (see _Selection); `add_centre(step)` sets centre `step` from the current distances."""
    state.matvec_step(0)
    n_points, n_select = len(state.points), state.n_select
    pruning = mode == "pruned"
    if pruning:
        state.rebuild_clusters(1)
    schedule = _ProbeSchedule()
    pruned_steps, slow_steps, probe_cost = 0, 0, 0.0
    recent: deque[float] = deque(maxlen=PRUNED_TRIAL_STEPS)   # the last pruned-mode step times
    max_candidates = n_points if mode == "pruned" else int(PRUNED_MAX_FRACTION * n_points)

    def leave_pruning() -> None:
        nonlocal pruning
        pruning, state.members = False, None
        schedule.probe_ended(probe_cost, failed=pruned_steps <= 2 * PRUNED_TRIAL_STEPS)

    steps = range(1, n_select)
    for step in tqdm(steps, desc="coreset", unit="pt", mininterval=1.0) if progress else steps:
        add_centre(step)
        if pruning:
            start = time.perf_counter()
            if not state.pruned_step(step, max_candidates):
                # Too many points in reach: a mat-vec step instead, which keeps the clusters once
                # pruning has proven itself, and ends a trial that has not.
                if pruned_steps < PRUNED_TRIAL_STEPS:
                    leave_pruning()
                state.matvec_step(step)
            elapsed = time.perf_counter() - start
            recent.append(elapsed)
            pruned_steps += 1
            probe_cost += max(0.0, elapsed - schedule.matvec_seconds)
            # A median and two slow steps in a row: one step held up by the host is not the data.
            slow_steps = slow_steps + 1 if elapsed > PRUNED_GIVE_UP * schedule.matvec_seconds else 0
            losing = (len(recent) == PRUNED_TRIAL_STEPS and statistics.median(recent) > schedule.matvec_seconds
                      or slow_steps >= 2)
            if mode == "mixed" and pruning and losing:
                leave_pruning()
            continue
        start = time.perf_counter()
        state.matvec_step(step)
        schedule.matvec_done(time.perf_counter() - start)
        if mode == "mixed" and step + 1 < n_select and schedule.due():
            if state.pruned_reach(step + 1) > PRUNED_MAX_FRACTION:
                schedule.looked()                   # no pruned step possible yet: no rebuild either
                continue
            start = time.perf_counter()
            state.rebuild_clusters(step + 1)
            pruning, pruned_steps, slow_steps = True, 0, 0
            recent.clear()
            probe_cost = time.perf_counter() - start
    return state.selected


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
    chosen = paddle.to_tensor([_start_index(n_points, seed)], dtype="int64")
    selected = [chosen]
    steps = range(1, n_select)
    for _ in tqdm(steps, desc="coreset", unit="pt", mininterval=1.0) if progress else steps:
        centre = paddle.gather(points, chosen)                       # [1, d]
        dist = sq_norms - 2.0 * paddle.matmul(points, centre, transpose_y=True)[:, 0] + sq_norms[chosen]
        nearest = paddle.minimum(nearest, dist)
        chosen = paddle.argmax(nearest, axis=0, keepdim=True)        # first index of the maximum
        selected.append(chosen)
    return paddle.concat(selected).numpy().astype(np.int64)


# A shard's proposal for the next centre: [distance, global index, squared norm, vector...], float64
# (each float32 value and every index below 2^53 is exact in it).
Exchange = Callable[[np.ndarray], np.ndarray]


def greedy_coreset_sharded(points: np.ndarray, first_index: int, n_total: int, n_select: int, exchange: Exchange,
                           seed: int = 0, progress: bool = False) -> np.ndarray:
    """greedy_coreset over points split between processes: the same indices as one process.

    This process holds rows `first_index` .. `first_index + len(points) - 1` of the `n_total`
    points. At every step each shard proposes its farthest point; `exchange` (an all-gather) gives
    every shard every proposal, in rank order, and all agree on the largest distance, the lowest
    global index on ties: the single-process rule. Each shard keeps its own _BatchedSelection over its
    points, to which every agreed centre is added. Returns the global indices (identical on every shard).
    """
    points = np.ascontiguousarray(points, dtype=np.float32)
    n_select = min(n_select, n_total)
    state = _BatchedSelection(points, n_select)

    def agree(local: int | None, distance: float) -> None:
        proposal = np.full(3 + points.shape[1], -np.inf)
        if local is not None:
            proposal[:3] = distance, first_index + local, state.sq_norms[local]
            proposal[3:] = points[local]
        proposals = exchange(proposal)
        farthest = proposals[:, 0] == proposals[:, 0].max()
        winner = proposals[farthest][np.argmin(proposals[farthest, 1])]
        state.add_centre(int(winner[1]), winner[3:].astype(np.float32), np.float32(winner[2]))

    start = _start_index(n_total, seed) - first_index
    agree(start if 0 <= start < len(points) else None, np.inf)
    for _ in tqdm(range(1, n_select), desc="coreset", unit="pt", mininterval=1.0, disable=not progress):
        local = state.farthest()
        agree(local, state.exact_distance(local))
    return state.selected
