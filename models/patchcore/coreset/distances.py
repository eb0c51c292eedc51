"""The rule's squared distance, |x|^2 - 2 x.c + |c|^2 in float32, and how far a BLAS one may be.

The dot products are summed by NumPy's einsum, whose result for a row does not depend on which
other rows are in the call (unlike BLAS, whose kernels round a row differently by its position),
so every way of computing a rule distance here is bit-identical to every other.
"""
from __future__ import annotations

import numpy as np

# Exact distances of scattered rows gather at most this many rows (and their centres) at a time.
GATHER_ROWS = 8192


def start_index(n_points: int, seed: int) -> int:
    """The seeded first pick of every selection."""
    return int(np.random.default_rng(seed).integers(n_points))


def squared_norms(points: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", points, points)


def finish_distances(products, first, second=None):
    """Dot products -> squared distances, in place: `products * -2 + first (+ second)`, in that
    order (the rule adds the point's squared norm, then the centre's; a form that leaves out the
    point's norm, the same for all its centres, adds only the centres'). Every distance of the
    selectors is finished here, so every one rounds its additions alike."""
    products *= np.float32(-2)
    products += first
    if second is not None:
        products += second
    return products


def rule_distances(points: np.ndarray, sq_norms: np.ndarray, centre: np.ndarray, centre_sq: np.float32,
                   out: np.ndarray | None = None) -> np.ndarray:
    """The rule's squared distances of `points` (with their squared norms) to `centre`."""
    return finish_distances(np.einsum("ij,j->i", points, centre, out=out), sq_norms, centre_sq)


def blas_distance_error(dim: int, largest_sq_norm: float) -> float:
    """How far a squared distance computed with a BLAS dot product (|x|^2 - 2 p + |c|^2, its two
    additions in either order) may be from the rule's, for points of squared norm at most
    `largest_sq_norm`.

    Both use the same squared norms, so they differ by twice the difference of their dot products
    (each within d u |x||c| of the exact one, whatever the summation order) plus their own float32
    roundings of values <= 4 max|x|^2: 7 u for each side's two additions, (4 d + 14) u in all;
    the rest is headroom for the roundings of the comparisons that use it. A minimum over centres
    of such values is as close to the rule's minimum.
    """
    return (4 * dim + 48) * 2.0**-24 * largest_sq_norm


def rule_pair_distances(points: np.ndarray, sq_norms: np.ndarray, centres: np.ndarray, centre_sqs: np.ndarray,
                        rows: np.ndarray, centre_ids: np.ndarray) -> np.ndarray:
    """The rule's squared distances of points[rows] to centres[centre_ids] (pairwise).

    einsum's "ij,ij->i" sums each row with the same kernel, in the same order, as the "ij,j->i"
    of rule_distances (one operand contiguous along j, one output per row), so a pair's value does
    not depend on the other pairs in the call nor on which centre they use: one call serves
    points with different nearest centres. Gathers at most GATHER_ROWS pairs at a time.
    """
    def block(rows: np.ndarray, centre_ids: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        out = np.einsum("ij,ij->i", np.take(points, rows, axis=0), np.take(centres, centre_ids, axis=0), out=out)
        return finish_distances(out, sq_norms[rows], centre_sqs[centre_ids])

    if len(rows) <= GATHER_ROWS:                          # most calls: a few rows, no loop
        return block(rows, centre_ids)
    out = np.empty(len(rows), dtype=np.float32)
    for start in range(0, len(rows), GATHER_ROWS):
        block(rows[start:start + GATHER_ROWS], centre_ids[start:start + GATHER_ROWS], out[start:start + GATHER_ROWS])
    return out
