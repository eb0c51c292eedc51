"""Nearest-neighbour search against a memory bank, in bounded memory.

Squared distances come from ||a||^2 - 2ab + ||b||^2 matrix products on chunks of queries, so the
distance matrix in memory never exceeds `max_chunk_bytes` whatever the bank or image size.

On the CPU, large banks are also split into groups around a few of their own entries; a query
only visits the groups whose ball can still hold something nearer than the best entry found so
far (triangle inequality, with a margin for the rounding of the product form). Where that prunes
little (distances concentrate: uniform textures, noise) the search falls back to the full product,
so it is never much slower than it and the answer is the same nearest entry.

Two backends compute the product: NumPy's BLAS (the CPU default: on the 2-core test machine it
measured 17 ms for 784 x 16386 x 129, against 95 ms for Paddle's eager CPU matmul) and Paddle
(for GPUs, where the product runs on the device).
"""
from __future__ import annotations

import contextlib
from typing import ContextManager

import numpy as np

DEFAULT_CHUNK_BYTES = 64 * 2**20
BACKENDS = ("numpy", "paddle")
# Banks smaller than this are searched with the full product: it is already cheap.
GROUPED_MIN_ENTRIES = 4096
# A chunk of queries falls back to the full product when the groups it would still have to visit
# hold more than this fraction of its query x entry pairs (small products run slower than one
# large one, so pruning has to skip most of the work to pay).
GROUPED_MAX_VISIT = 0.4
# After a fallback, the next chunks go straight to the full product (the first pass that found
# pruning useless costs about a sixth of it); the gap doubles up to this many chunks, then the
# groups are tried again, since the queries (not the bank) decide how much pruning saves.
GROUPED_MAX_SKIP = 16


_blas_controller = None


def one_blas_thread() -> ContextManager:
    """BLAS on a single thread inside the block.

    The grouped search runs hundreds of small products per image; waking OpenBLAS's worker threads
    for each costs far more than they save (bottle, 2 cores: 1.2 s per image with 2 threads against
    13 ms with one), and the other core is busy decoding the next image anyway.
    """
    global _blas_controller
    if _blas_controller is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _blas_controller = False
        else:
            _blas_controller = ThreadpoolController()
    if not _blas_controller:
        return contextlib.nullcontext()
    return _blas_controller.limit(limits=1, user_api="blas")


def product_rounding_bound(dim: int) -> float:
    """Bound, relative to the largest squared norm involved, on the float32 error of |a|^2 - 2ab + |b|^2.

    Any summation order of a d-term dot product errs by at most about d u |a||b| (u = 2^-24), the
    squared norms likewise, and the two additions by u times at most 4 max|a|^2 each: in all
    (4 d + 8) u max|a|^2, rounded up here to (4 d + 16) u. The coreset selector and the grouped
    search both take their safety margins from it.
    """
    return (4 * dim + 16) * 2.0**-24


class _Groups:
    """The bank split into groups around `n_groups` of its entries, chosen far apart.

    Entries are ordered group by group (`order[i]` is the bank index of sorted position i) so that
    each group is one contiguous block of the transposed bank. `radius[g]` is the largest exact
    distance of a member to its centre.
    """

    def __init__(self, features: np.ndarray, sq_norms: np.ndarray, n_groups: int):
        # Farthest-point traversal: centres spread over the bank, so the groups' radii stay small.
        nearest_sq = np.full(len(features), np.inf, dtype=np.float32)
        centres = np.empty(n_groups, dtype=np.int64)
        centre = 0
        for g in range(n_groups):
            centres[g] = centre
            candidate = sq_norms - 2.0 * (features @ features[centre]) + sq_norms[centre]
            np.minimum(nearest_sq, candidate, out=nearest_sq)
            centre = int(nearest_sq.argmax())
        owner = np.empty(len(features), dtype=np.int64)
        rows = max(1, (16 * 2**20) // (4 * n_groups))
        for start in range(0, len(features), rows):
            block = features[start:start + rows]
            partial = sq_norms[centres][None, :] - 2.0 * (block @ features[centres].T)
            owner[start:start + rows] = partial.argmin(axis=1)
        owner[centres] = np.arange(n_groups)
        diff = features.astype(np.float64) - features[centres[owner]]
        member_dist = np.sqrt(np.einsum("mc,mc->m", diff, diff))
        self.order = np.argsort(owner, kind="stable")
        self.starts = np.searchsorted(owner[self.order], np.arange(n_groups + 1))
        self.radius = np.zeros(n_groups)
        np.maximum.at(self.radius, owner, member_dist)
        self.radius *= 1.0 + 1e-6   # the exact distances above are float64 sums of float32 data
        self.centres = centres
        self.sizes = np.diff(self.starts)


class MemoryBank:
    """A fixed set of feature vectors, kept ready for nearest-neighbour queries."""

    def __init__(self, features: np.ndarray, max_chunk_bytes: int = DEFAULT_CHUNK_BYTES, backend: str = "numpy",
                 grouped: bool | None = None):
        if features.ndim != 2 or len(features) == 0:
            raise ValueError(f"memory bank must be a non-empty [M, C] array, got shape {features.shape}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
        self.features = np.ascontiguousarray(features, dtype=np.float32)
        # Ranking by ||b||^2 - 2ab gives the same order as ||a - b||^2 (||a||^2 is constant per
        # query), and with the bank stored as [-2b, ||b||^2] against queries [a, 1] it is a single
        # matrix product: no extra passes over the large distance matrix.
        self.sq_norms = np.einsum("mc,mc->m", self.features, self.features)
        if grouped is None:
            grouped = backend == "numpy" and len(self.features) >= GROUPED_MIN_ENTRIES
        self.groups = _Groups(self.features, self.sq_norms, int(np.sqrt(len(self.features)))) if grouped else None
        # Bank columns in group order when grouped: positions map back through groups.order.
        stored = self.features if self.groups is None else self.features[self.groups.order]
        stored_sq = self.sq_norms if self.groups is None else self.sq_norms[self.groups.order]
        augmented_t = np.ascontiguousarray(np.hstack([-2.0 * stored, stored_sq[:, None]]).T.astype(np.float32))
        self.backend = backend
        if backend == "paddle":
            import paddle

            self._bank_t = paddle.to_tensor(augmented_t)
        else:
            self._bank_t = augmented_t
        if self.groups is not None:
            self._centres_t = np.ascontiguousarray(
                np.hstack([-2.0 * self.features[self.groups.centres],
                           self.sq_norms[self.groups.centres, None]]).T.astype(np.float32))
        self.max_chunk_bytes = max_chunk_bytes
        # Chunks answered by visiting groups / by the full product (tests and benchmarks read it).
        self.chunk_counts = {"grouped": 0, "full": 0}
        self._skip_gap = 0      # chunks to answer with the full product before trying the groups again
        self._skip_left = 0

    def __len__(self) -> int:
        return len(self.features)

    @property
    def dim(self) -> int:
        return self.features.shape[1]

    def _full_product(self, augmented_queries: np.ndarray, k: int) -> np.ndarray:
        if self.backend == "paddle":
            import paddle

            partial = paddle.matmul(paddle.to_tensor(augmented_queries), self._bank_t)
            if k == 1:
                return paddle.argmin(partial, axis=1, keepdim=True).numpy()
            return paddle.topk(partial, k=k, axis=1, largest=False)[1].numpy()
        partial = augmented_queries @ self._bank_t
        if k == 1:
            return partial.argmin(axis=1)[:, None]
        return np.argpartition(partial, k - 1, axis=1)[:, :k]

    def _grouped_nearest(self, augmented_queries: np.ndarray) -> np.ndarray | None:
        """Sorted positions [Q, 1] of the nearest entries, visiting only the groups that can hold them;
        None when that would visit too much (the full product is cheaper)."""
        groups = self.groups
        queries = augmented_queries[:, :-1]
        query_sq = np.einsum("qc,qc->q", queries, queries)
        to_centres = augmented_queries @ self._centres_t          # |c|^2 - 2 q.c
        best = np.full(len(queries), np.inf, dtype=np.float32)
        best_pos = np.zeros(len(queries), dtype=np.int64)

        def visit(g: int, rows: np.ndarray) -> None:
            start, end = groups.starts[g], groups.starts[g + 1]
            partial = augmented_queries[rows] @ self._bank_t[:, start:end]
            local = partial.argmin(axis=1)
            value = partial[np.arange(len(rows)), local]
            better = value < best[rows]
            best[rows[better]] = value[better]
            best_pos[rows[better]] = start + local[better]

        own = to_centres.argmin(axis=1)
        by_group = np.argsort(own, kind="stable")
        bounds = np.searchsorted(own[by_group], np.arange(len(groups.sizes) + 1))
        for g in np.flatnonzero(np.diff(bounds)):
            visit(int(g), by_group[bounds[g]:bounds[g + 1]])
        # The best so far, exactly, bounds the nearest distance from above; a group whose centre is
        # farther than that plus its radius (less the product form's rounding) cannot beat it.
        diff = queries.astype(np.float64) - self.features[groups.order[best_pos]]
        upper = np.sqrt(np.einsum("qc,qc->q", diff, diff))
        margin = product_rounding_bound(self.dim) * max(float(query_sq.max()), float(self.sq_norms.max()))
        centre_sq = np.maximum(to_centres + query_sq[:, None] - margin, 0.0)
        needed = np.sqrt(centre_sq) - groups.radius[None, :] <= upper[:, None]
        needed[np.arange(len(queries)), own] = False
        if (needed * groups.sizes).sum() > GROUPED_MAX_VISIT * len(queries) * len(self):
            self._skip_gap = min(max(1, 2 * self._skip_gap), GROUPED_MAX_SKIP)
            self._skip_left = self._skip_gap
            return None
        for g in np.flatnonzero(needed.any(axis=0)):
            visit(int(g), np.flatnonzero(needed[:, g]))
        self.chunk_counts["grouped"] += 1
        self._skip_gap = 0
        return best_pos[:, None]

    def _nearest_indices(self, augmented_queries: np.ndarray, k: int) -> np.ndarray:
        positions = None
        if self.groups is not None and k == 1:
            if self._skip_left == 0:
                with one_blas_thread():
                    positions = self._grouped_nearest(augmented_queries)
            else:
                self._skip_left -= 1
        if positions is None:
            positions = self._full_product(augmented_queries, k)
            if k == 1:
                self.chunk_counts["full"] += 1
        return positions if self.groups is None else self.groups.order[positions]

    def search(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Distances [Q, k] (ascending, Euclidean) and bank indices [Q, k] of the k nearest entries."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, len(self))
        rows = max(1, self.max_chunk_bytes // (4 * len(self)))
        augmented_queries = np.hstack([queries, np.ones((len(queries), 1), np.float32)])
        index = np.concatenate([self._nearest_indices(augmented_queries[start:start + rows], k)
                                for start in range(0, len(queries), rows)]).astype(np.int64)
        # The expanded form loses precision for near neighbours; the chosen distances are recomputed
        # directly, which also makes them independent of chunking and backend.
        diff = queries[:, None, :] - self.features[index]
        exact = np.sqrt(np.einsum("qkc,qkc->qk", diff, diff, dtype=np.float64)).astype(np.float32)
        if k > 1:
            order = np.argsort(exact, axis=1, kind="stable")
            exact, index = np.take_along_axis(exact, order, 1), np.take_along_axis(index, order, 1)
        return exact, index
