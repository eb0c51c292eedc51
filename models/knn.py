"""Nearest-neighbour search against a memory bank, in bounded memory.

Squared distances come from ||a||^2 - 2ab + ||b||^2 matrix products on chunks of queries, so the
distance matrix in memory never exceeds `max_chunk_bytes` whatever the bank or image size.

On the CPU, large banks are also split into groups around a few of their own entries; a query
only visits the groups whose ball can still hold something nearer than the best entry found so
far (triangle inequality, with a margin for the rounding of the product form). Where that prunes
little (distances concentrate: uniform textures, noise) the search falls back to the full product,
so it is never much slower than it and the answer is the same nearest entry.

Without groups (or when they prune too little) the CPU search is tiled: the queries' [a, 1] rows
against the bank's [-2b, |b|^2] columns in blocks of QUERY_TILE x BANK_TILE, each product's
minimum taken while it is still in cache and folded into a running minimum, so the distance matrix
of a large image against a large bank never goes through main memory (448 px images have 4x the
patches of 224 and, at the same coreset ratio, 4x the bank: 16x the pairs).

Near ties: the float32 product form can misorder entries whose squared distances differ by less
than its rounding bound (product_rounding_bound). Every tile also notes whether another entry
came within twice that bound of a query's minimum; those few queries are searched again with
their candidates' distances in float64, so the entry returned is the nearest one in exact
arithmetic (the lowest index among exactly equal distances), whatever the tiling or grouping.
That holds for k = 1 on the NumPy array library (the scorer's search); Paddle's product and k > 1 (eq.
7's neighbourhood of one entry) keep the plain float32 order, with their distances recomputed.

Two array libraries compute the product: NumPy's BLAS (the CPU default: on the 2-core test machine it
measured 17 ms for 784 x 16386 x 129, against 95 ms for Paddle's eager CPU matmul) and Paddle
(for GPUs, where the product runs on the device).
"""
from __future__ import annotations

import contextlib
from typing import ContextManager

import numpy as np

from utils.workers import Workers

DEFAULT_CHUNK_BYTES = 64 * 2**20
ARRAY_LIBS = ("numpy", "paddle")
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
# Tiles of the full product: a bank block of 129 x 2048 float32 (1 MB) stays in the core's L2
# while 256 query rows go through it, and the 2 MB product block is reduced to its row minima at
# once. On the 2-core test machine this ran about as fast as one large product per chunk (NumPy's
# BLAS already reaches ~80 GFLOPS on one core), with a 2 MB block in place of 64 MB chunks
# (docs/results.md, High resolution).
QUERY_TILE = 256
BANK_TILE = 2048


_blas_controller = None


def one_blas_thread() -> ContextManager:
    """BLAS on a single thread inside the block.

    The grouped search runs hundreds of small products per image; waking OpenBLAS's worker threads
    for each costs far more than they save (bottle, 2 cores: 1.2 s per image with 2 threads against
    13 ms with one), and the other core is busy decoding the next image anyway. The tiles of the
    full product are spread over threads of the bank's own instead (MemoryBank.product_threads).
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


def exact_sq_distances(queries: np.ndarray, entries: np.ndarray) -> np.ndarray:
    """Squared distances in float64 between rows paired one to one (the reference every search is held to)."""
    diff = queries.astype(np.float64) - entries.astype(np.float64)
    return np.einsum("qc,qc->q", diff, diff)


class _RunningNearest:
    """The nearest entry found so far for each query, from float32 products |b|^2 - 2ab seen block by
    block, with a flag for queries where another entry came within `tolerance` of the minimum (the
    product's rounding could have swapped them: the caller settles those in float64)."""

    def __init__(self, n_queries: int, tolerance: float):
        self.value = np.full(n_queries, np.inf, dtype=np.float32)
        self.position = np.zeros(n_queries, dtype=np.int64)
        self.tied = np.zeros(n_queries, dtype=bool)
        self.tolerance = np.float32(tolerance)

    def update(self, rows: slice | np.ndarray, block: np.ndarray, first_column: int) -> None:
        """Fold in `block` [len(rows), n] = the products of queries `rows` with columns first_column..
        (the block is scratch space: it is changed)."""
        local = block.argmin(axis=1)
        every = np.arange(len(block))
        value = block[every, local]
        # Only rows whose block minimum is near or below the best so far change (after the first
        # block, few): for them, is another entry of the block within the tolerance of that
        # minimum (the block's minimum once its own is masked)?
        contenders = np.flatnonzero(value <= self.value[rows] + self.tolerance)
        if len(contenders) == 0:
            return
        block[every, local] = np.inf
        if len(contenders) < len(block):
            block, value, local = block[contenders], value[contenders], local[contenders]
        near = block.min(axis=1) <= value + self.tolerance
        target = (np.arange(rows.start, rows.stop) if isinstance(rows, slice) else rows)[contenders]
        current = self.value[target]
        # A clearly better minimum replaces the old one and its ties; a close one is itself a tie.
        self.tied[target] = near | (value >= current - self.tolerance)
        # Strictly better only: in a block sequence by increasing column the lowest index wins ties.
        better = value < current
        self.value[target[better]] = value[better]
        self.position[target[better]] = first_column + local[better]


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

    def __init__(self, features: np.ndarray, max_chunk_bytes: int = DEFAULT_CHUNK_BYTES, array_lib: str = "numpy",
                 grouped: bool | None = None, tiled: bool = True, product_threads: int = 1):
        if features.ndim != 2 or len(features) == 0:
            raise ValueError(f"memory bank must be a non-empty [M, C] array, got shape {features.shape}")
        if array_lib not in ARRAY_LIBS:
            raise ValueError(f"array_lib must be one of {ARRAY_LIBS}, not {array_lib!r}")
        self.features = np.ascontiguousarray(features, dtype=np.float32)
        # Ranking by ||b||^2 - 2ab gives the same order as ||a - b||^2 (||a||^2 is constant per
        # query), and with the bank stored as [-2b, ||b||^2] against queries [a, 1] it is a single
        # matrix product: no extra passes over the large distance matrix.
        self.sq_norms = np.einsum("mc,mc->m", self.features, self.features)
        if grouped is None:
            grouped = array_lib == "numpy" and len(self.features) >= GROUPED_MIN_ENTRIES
        self.groups = _Groups(self.features, self.sq_norms, int(np.sqrt(len(self.features)))) if grouped else None
        # Bank columns in group order when grouped: positions map back through groups.order.
        stored = self.features if self.groups is None else self.features[self.groups.order]
        stored_sq = self.sq_norms if self.groups is None else self.sq_norms[self.groups.order]
        augmented_t = np.ascontiguousarray(np.hstack([-2.0 * stored, stored_sq[:, None]]).T.astype(np.float32))
        self.array_lib = array_lib
        # tiled=False: one product per chunk of queries then its argmin, as before the tiles (benchmarks).
        self.tiled = tiled and array_lib == "numpy"
        if array_lib == "paddle":
            import paddle

            self._bank_t = paddle.to_tensor(augmented_t)
        else:
            self._bank_t = augmented_t
        if self.groups is not None:
            self._centres_t = np.ascontiguousarray(
                np.hstack([-2.0 * self.features[self.groups.centres],
                           self.sq_norms[self.groups.centres, None]]).T.astype(np.float32))
        self.max_chunk_bytes = max_chunk_bytes
        # Threads sharing the full product's query tiles, each running its products on one BLAS
        # thread (the grouped search, the near-tie pass and eq. 7's neighbours stay on the caller's
        # thread). Not BLAS's own threads: those meet at a barrier in every product and spin while
        # they wait, so on a busy machine one descheduled worker stalls every tile (bottle 448,
        # load 2: 66 -> 180 ms per image's scoring in infer.py; docs/results.md, High resolution).
        # The process that scores chooses the count (deploy.exported_model.scoring_options): 1 beside
        # Paddle's dynamic graph and Paddle Inference, the CPU threads beside OpenVINO and ONNX
        # Runtime, whose network does not run while the scorer does.
        if product_threads < 1:
            raise ValueError(f"product_threads must be at least 1, not {product_threads}")
        self.product_threads = int(product_threads)
        self.workers = Workers(self.product_threads)
        # Chunks answered by visiting groups / by the full product (tests and benchmarks read it).
        self.chunk_counts = {"grouped": 0, "full": 0}
        self.settled_ties = 0   # queries searched again in float64 (benchmarks read it)
        self._skip_gap = 0      # chunks to answer with the full product before trying the groups again
        self._skip_left = 0

    def __len__(self) -> int:
        return len(self.features)

    @property
    def dim(self) -> int:
        return self.features.shape[1]

    def _full_product(self, augmented_queries: np.ndarray, k: int) -> np.ndarray:
        if self.array_lib == "paddle":
            import paddle

            partial = paddle.matmul(paddle.to_tensor(augmented_queries), self._bank_t)
            if k == 1:
                return paddle.argmin(partial, axis=1, keepdim=True).numpy()
            return paddle.topk(partial, k=k, axis=1, largest=False)[1].numpy()
        partial = augmented_queries @ self._bank_t
        if k == 1:
            return partial.argmin(axis=1)[:, None]
        return np.argpartition(partial, k - 1, axis=1)[:, :k]

    def _rounding(self, augmented_queries: np.ndarray) -> float:
        """Bound on the float32 error of one |b|^2 - 2ab product for these queries."""
        queries = augmented_queries[:, :-1]
        largest = max(float(np.einsum("qc,qc->q", queries, queries).max()), float(self.sq_norms.max()))
        return product_rounding_bound(self.dim) * largest

    def _grouped_nearest(self, augmented_queries: np.ndarray) -> _RunningNearest | None:
        """The nearest entries (positions in group order), visiting only the groups that can hold
        them; None when that would visit too much (the full product is cheaper)."""
        groups = self.groups
        queries = augmented_queries[:, :-1]
        query_sq = np.einsum("qc,qc->q", queries, queries)
        to_centres = augmented_queries @ self._centres_t          # |c|^2 - 2 q.c
        margin = self._rounding(augmented_queries)
        nearest = _RunningNearest(len(queries), 2 * margin)

        def visit(g: int, rows: np.ndarray) -> None:
            start, end = groups.starts[g], groups.starts[g + 1]
            nearest.update(rows, augmented_queries[rows] @ self._bank_t[:, start:end], start)

        own = to_centres.argmin(axis=1)
        by_group = np.argsort(own, kind="stable")
        bounds = np.searchsorted(own[by_group], np.arange(len(groups.sizes) + 1))
        for g in np.flatnonzero(np.diff(bounds)):
            visit(int(g), by_group[bounds[g]:bounds[g + 1]])
        # The best so far, exactly, bounds the nearest distance from above; a group whose centre is
        # farther than that plus its radius (less the product form's rounding) cannot beat it.
        upper = np.sqrt(exact_sq_distances(queries, self.features[groups.order[nearest.position]]))
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
        return nearest

    def _tiled_nearest(self, augmented_queries: np.ndarray) -> _RunningNearest:
        """The nearest entries (positions in stored order) through the full product, tile by tile."""
        nearest = _RunningNearest(len(augmented_queries), 2 * self._rounding(augmented_queries))
        starts = range(0, len(augmented_queries), QUERY_TILE)
        # Thread w takes every n-th query tile from the w-th: its own buffer, its own rows of `nearest`.
        n = min(self.product_threads, len(starts))
        self.workers.map(lambda w: self._query_tiles(augmented_queries, starts[w::n], nearest), range(n))
        return nearest

    def _query_tiles(self, augmented_queries: np.ndarray, starts: range, nearest: _RunningNearest) -> None:
        """Fold the query tiles starting at `starts`, against every bank tile, into `nearest`."""
        n_stored = self._bank_t.shape[1]
        buffer = np.empty((min(QUERY_TILE, len(augmented_queries)), min(BANK_TILE, n_stored)), dtype=np.float32)
        for start in starts:
            rows = slice(start, min(start + QUERY_TILE, len(augmented_queries)))
            query_block = augmented_queries[rows]
            for first in range(0, n_stored, BANK_TILE):
                block = buffer[:len(query_block), :min(BANK_TILE, n_stored - first)]
                np.matmul(query_block, self._bank_t[:, first:first + block.shape[1]], out=block)
                nearest.update(rows, block, first)

    def _settle_ties(self, augmented_queries: np.ndarray, nearest: _RunningNearest) -> None:
        """Re-decide the flagged queries in float64 among every entry the rounding could have put first."""
        rows = np.flatnonzero(nearest.tied)
        self.settled_ties += len(rows)
        per_chunk = max(1, self.max_chunk_bytes // (4 * len(self)))
        for start in range(0, len(rows), per_chunk):
            chunk = rows[start:start + per_chunk]
            partial = augmented_queries[chunk] @ self._bank_t
            row, position = np.nonzero(partial <= (partial.min(axis=1) + nearest.tolerance)[:, None])
            entry = position if self.groups is None else self.groups.order[position]
            exact = exact_sq_distances(augmented_queries[chunk[row], :-1], self.features[entry])
            # Per row, the smallest exact distance, then the lowest bank index among equals.
            ranked = np.lexsort((entry, exact, row))
            winners = ranked[np.r_[True, row[ranked][1:] != row[ranked][:-1]]]
            nearest.position[chunk[row[winners]]] = position[winners]

    def _nearest_indices(self, augmented_queries: np.ndarray, k: int) -> np.ndarray:
        """Bank indices [Q, k] of the nearest entries (k = 1: exact, ties settled in float64)."""
        if k > 1 or not self.tiled and self.groups is None:
            # One thread here too: eq. 7 asks k neighbours of a single entry per image, a product
            # far too small to pay for waking BLAS workers (35 ms against 1 ms on a loaded machine).
            with one_blas_thread() if self.array_lib == "numpy" else contextlib.nullcontext():
                positions = self._full_product(augmented_queries, k)
            self.chunk_counts["full"] += k == 1
        else:
            nearest = None
            # BLAS on one thread (see one_blas_thread); the tiles may use the bank's threads.
            with one_blas_thread():
                if self.groups is not None and self._skip_left == 0:
                    nearest = self._grouped_nearest(augmented_queries)
                elif self.groups is not None:
                    self._skip_left -= 1
                if nearest is None and self.tiled:
                    nearest = self._tiled_nearest(augmented_queries)
                    self.chunk_counts["full"] += 1
                if nearest is not None:
                    self._settle_ties(augmented_queries, nearest)
            if nearest is None:
                positions = self._full_product(augmented_queries, k)
                self.chunk_counts["full"] += 1
            else:
                positions = nearest.position[:, None]
        return positions if self.groups is None else self.groups.order[positions]

    def search(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Distances [Q, k] (ascending, Euclidean) and bank indices [Q, k] of the k nearest entries."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, len(self))
        rows = max(1, self.max_chunk_bytes // (4 * len(self)))
        augmented_queries = np.hstack([queries, np.ones((len(queries), 1), np.float32)])
        index = np.concatenate([np.zeros((0, k), np.int64)]
                               + [self._nearest_indices(augmented_queries[start:start + rows], k)
                                  for start in range(0, len(queries), rows)]).astype(np.int64)
        # The expanded form loses precision for near neighbours; the chosen distances are recomputed
        # directly, which also makes them independent of chunking and array_lib.
        exact = np.sqrt(exact_sq_distances(np.repeat(queries, k, axis=0), self.features[index.reshape(-1)]))
        exact = exact.reshape(len(queries), k).astype(np.float32)
        if k > 1:
            order = np.argsort(exact, axis=1, kind="stable")
            exact, index = np.take_along_axis(exact, order, 1), np.take_along_axis(index, order, 1)
        return exact, index
