"""The selection over points split between processes (a distributed fit): the same indices as one
process, agreed once per round of picks rather than once per pick.

A round: every shard applies the centres so far to its points (batched.py's matrix products) and
draws its top rows, the points at or above a threshold; every other point of the shard is provably
nearer than the shard's bound (the threshold plus the BLAS error bound). It sends up to `want` of
them (the largest exact distances; the bound rises to the largest one it leaves out) with their
rule distances to their nearest centre, global indices, squared norms and vectors, in one
all-gather. Every shard then runs the same greedy over the union: the farthest candidate (lowest
global index on ties) is the farthest point of all while its distance is above every shard's
bound, since the others' distances only shrink. The union's distances are updated with the rule's
row-deterministic form (distances.py), never a BLAS result that could differ between machines,
so every shard computes the same picks without talking, and they are the single process's picks.
A round that cannot decide even one pick agrees on that pick alone (each shard proposes its
farthest point) and draws four times as many candidates next time.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
from tqdm import tqdm

from models.patchcore.coreset.batched import TOP_ROWS, BatchedSelection, top_rows
from models.patchcore.coreset.distances import rule_distances, start_index

# An all-gather: the same-shaped float64 array from every shard -> stacked [shards, ...] in rank order.
# A row of the exchanged arrays: [distance, global index, squared norm, vector...] (each float32
# value and every index below 2^53 is exact in float64).
Exchange = Callable[[np.ndarray], np.ndarray]
# Candidates a shard sends in a round after one that could not decide, at most.
MAX_ROUND_ROWS = 16 * TOP_ROWS


class CountedExchange:
    """The all-gather, with the number of calls and the seconds spent in them (waiting included)."""

    def __init__(self, exchange: Exchange):
        self.exchange = exchange
        self.calls = 0
        self.seconds = 0.0

    def __call__(self, array: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        try:
            return self.exchange(array)
        finally:
            self.calls += 1
            self.seconds += time.perf_counter() - start


def _candidates(state: BatchedSelection, first_index: int, want: int) -> np.ndarray:
    """This shard's message for a round: row 0 [bound, count], then `count` candidate rows (sorted
    by global index), padded to `want` rows."""
    state.values = None                      # no top-row values to keep up to date between rounds
    state.apply_pending()
    rows, bound = top_rows(state.nearest, want, state.error)
    rows = np.arange(len(state.points)) if rows is None else rows
    exact = state.rule_nearest(rows, state.n_centres)
    if len(rows) > want:                     # the `want` farthest; the bound covers the rest
        order = np.argsort(-exact, kind="stable")
        bound = max(bound, float(exact[order[want]]))
        keep = np.sort(order[:want])
        rows, exact = rows[keep], exact[keep]
    message = np.full((want + 1, 3 + state.points.shape[1]), -np.inf)
    message[0, :2] = bound, len(rows)
    body = message[1:1 + len(rows)]
    body[:, 0], body[:, 1] = exact, first_index + rows
    body[:, 2], body[:, 3:] = state.sq_norms[rows], state.points[rows]
    return message


def decide_round(messages: np.ndarray, n_left: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(global indices, vectors, squared norms) of the picks the union of the shards' candidates
    decides, at most `n_left`; the same on every shard (the same messages, the same arithmetic)."""
    bound = float(messages[:, 0, 0].max())
    union = np.concatenate([m[1:1 + int(m[0, 1])] for m in messages])      # global index order
    distance = union[:, 0].astype(np.float32)
    sq_norms = union[:, 2].astype(np.float32)
    vectors = np.ascontiguousarray(union[:, 3:], dtype=np.float32)
    picks: list[int] = []
    while len(picks) < n_left and len(distance):
        best = int(np.argmax(distance))                                     # lowest index on ties
        if not float(distance[best]) > bound:
            break
        picks.append(best)
        np.minimum(distance, rule_distances(vectors, sq_norms, vectors[best], sq_norms[best]), out=distance)
    return union[picks, 1].astype(np.int64), vectors[picks], sq_norms[picks]


def greedy_coreset_sharded(points: np.ndarray, first_index: int, n_total: int, n_select: int, exchange: Exchange,
                           seed: int = 0, progress: bool = False, stats: dict | None = None) -> np.ndarray:
    """greedy_coreset over points split between processes: the same indices as one process.

    This process holds rows `first_index` .. `first_index + len(points) - 1` of the `n_total`
    points (possibly none); `exchange` is an all-gather between the shards. Returns the global
    indices (identical on every shard). `stats`, if given, receives the selection's collectives,
    rounds, single-pick rounds and seconds spent in collectives.
    """
    points = np.ascontiguousarray(points, dtype=np.float32)
    n_select = min(n_select, n_total)
    exchange = CountedExchange(exchange)
    state = BatchedSelection(points, n_select)

    def agree(local: int | None, distance: float) -> None:
        """One pick agreed alone: every shard's proposal, the farthest (lowest index on ties) wins."""
        proposal = np.full(3 + points.shape[1], -np.inf)
        if local is not None:
            proposal[:3] = distance, first_index + local, state.sq_norms[local]
            proposal[3:] = points[local]
        proposals = exchange(proposal)
        farthest = proposals[:, 0] == proposals[:, 0].max()
        winner = proposals[farthest][np.argmin(proposals[farthest, 1])]
        state.add_centre(int(winner[1]), winner[3:].astype(np.float32), np.float32(winner[2]))

    rounds = single = 0
    with tqdm(total=n_select, desc="coreset", unit="pt", mininterval=1.0, disable=not progress) as bar:
        if n_select:
            start = start_index(n_total, seed) - first_index
            agree(start if 0 <= start < len(points) else None, np.inf)
            bar.update(1)
        want = TOP_ROWS
        while state.n_centres < n_select:
            rounds += 1
            indices, vectors, sq_norms = decide_round(exchange(_candidates(state, first_index, want)),
                                                      n_select - state.n_centres)
            for index, vector, sq_norm in zip(indices, vectors, sq_norms):
                state.add_centre(int(index), vector, sq_norm)
            if len(indices) == 0:            # values within rounding of each other: one pick alone
                single += 1
                local = state.farthest() if len(points) else None
                agree(local, state.exact_distance(local) if local is not None else -np.inf)
            want = TOP_ROWS if len(indices) else min(4 * want, MAX_ROUND_ROWS)
            bar.update(max(1, len(indices)))
    if stats is not None:
        stats.update({"selection_collectives": float(exchange.calls), "selection_rounds": float(rounds),
                      "selection_single_pick_rounds": float(single), "selection_wait_seconds": exchange.seconds})
    return state.selected
