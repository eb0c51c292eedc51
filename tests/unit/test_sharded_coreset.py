"""The sharded (distributed) coreset, with shards as threads: the same indices as one process."""
import threading

import numpy as np
import pytest

import models.patchcore.coreset.batched as batched
import models.patchcore.coreset.sharded as sharded
from models.patchcore.coreset import greedy_coreset, greedy_coreset_reference, greedy_coreset_sharded
from models.patchcore.coreset.distances import start_index as sampling_start


class ThreadExchange:
    """An all-gather between `world` threads, in rank order."""

    def __init__(self, world: int):
        self.rows = [None] * world
        self.barrier = threading.Barrier(world, timeout=60)

    def for_rank(self, rank: int):
        def exchange(row: np.ndarray) -> np.ndarray:
            self.rows[rank] = row
            self.barrier.wait()
            stacked = np.stack(self.rows)
            self.barrier.wait()          # nobody overwrites its row before everyone has read
            return stacked
        return exchange


def run_sharded(points, bounds, n_select, seed, exchange_for=None):
    """Each shard's (indices or exception, stats), shards as threads."""
    exchange = ThreadExchange(len(bounds) - 1)
    results = [None] * (len(bounds) - 1)

    def worker(rank):
        first, last = bounds[rank], bounds[rank + 1]
        stats = {}
        own = exchange.for_rank(rank) if exchange_for is None else exchange_for(rank, exchange.for_rank(rank))
        try:
            results[rank] = (greedy_coreset_sharded(points[first:last], first, len(points), n_select, own,
                                                    seed=seed, stats=stats), stats)
        except BaseException as err:       # a failed shard must not leave the others waiting
            results[rank] = (err, stats)
            exchange.barrier.abort()

    threads = [threading.Thread(target=worker, args=(r,)) for r in range(len(bounds) - 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results


def assert_all_equal(results, expected):
    for failure, _ in results:
        if isinstance(failure, BaseException) and not isinstance(failure, threading.BrokenBarrierError):
            raise failure
    for indices, _ in results:
        np.testing.assert_array_equal(indices, expected)


@pytest.fixture(params=[None, 4], ids=["top_rows_default", "top_rows_4"])
def top_rows(request, monkeypatch):
    """Every agreement test also with 4 candidates a shard: many rounds, most deciding few picks."""
    if request.param is not None:
        monkeypatch.setattr(sharded, "TOP_ROWS", request.param)
        monkeypatch.setattr(batched, "TOP_ROWS", request.param)
    return request.param


def data(kind: str) -> np.ndarray:
    rng = np.random.default_rng(11)
    if kind == "random":
        return rng.standard_normal((3000, 16)).astype(np.float32)
    if kind.startswith("rescaled"):
        return rng.standard_normal((3000, 16)).astype(np.float32) * np.float32(float(kind.split("_")[1]))
    # Repeated points across the shard boundaries: ties must go to the lowest global index.
    base = np.round(rng.standard_normal((300, 8)).astype(np.float32) * 5, 1)
    return np.concatenate([base, base, base + 0.01, base[::-1]] * 2 + [base[::2], base[1::2], base])[:3000]


@pytest.mark.parametrize("kind", ["random", "clustered_with_ties", "rescaled_1e-4", "rescaled_1e4"])
@pytest.mark.parametrize("bounds", [(0, 1100, 3000), (0, 700, 2100, 3000), (0, 500, 1200, 2000, 3000), (0, 2999, 3000),
                                    (0, 1500, 1500, 3000)],
                         ids=["2_unequal", "3_unequal", "4_unequal", "one_point", "an_empty_shard"])
def test_sharded_selection_equals_one_process(kind, bounds, top_rows):
    points = data(kind)
    expected = greedy_coreset_reference(points, 400, seed=4)
    results = run_sharded(points, bounds, 400, seed=4)
    assert_all_equal(results, expected)
    stats = [s for _, s in results]
    # Wait times differ between shards; the counts must not.
    for key in ("selection_collectives", "selection_rounds", "selection_single_pick_rounds"):
        assert len({s[key] for s in stats}) == 1, stats


def test_rounds_decide_many_picks_each():
    # The point of agreeing per round: far fewer collectives than picks.
    points = np.random.default_rng(3).standard_normal((20000, 32)).astype(np.float32)
    results = run_sharded(points, (0, 6000, 20000), 1000, seed=1)
    assert_all_equal(results, greedy_coreset(points, 1000, seed=1))
    stats = results[0][1]
    assert stats["selection_collectives"] <= 1000 / 20, stats
    assert stats["selection_collectives"] == 1 + stats["selection_rounds"] + stats["selection_single_pick_rounds"]


def test_rounds_that_cannot_decide_agree_pick_by_pick(monkeypatch):
    # Five distinct points repeated: once they are chosen every distance is zero, and a round whose
    # shards send only some of their points cannot decide (their bounds are above zero): that pick
    # is agreed alone, lowest index first, until the shards send all their points.
    monkeypatch.setattr(sharded, "TOP_ROWS", 4)
    rng = np.random.default_rng(8)
    points = rng.standard_normal((5, 16)).astype(np.float32)[rng.integers(0, 5, 900)]
    results = run_sharded(points, (0, 200, 550, 900), 60, seed=2)
    assert_all_equal(results, greedy_coreset_reference(points, 60, seed=2))
    assert results[0][1]["selection_single_pick_rounds"] >= 2, results[0][1]


def test_a_shard_whose_candidates_never_win():
    # One shard holds only copies of the first pick: after it, its candidates are all at distance 0.
    rng = np.random.default_rng(5)
    points = rng.standard_normal((2000, 8)).astype(np.float32)
    start = sampling_start(len(points), 7)
    points[:500] = points[start]
    results = run_sharded(points, (0, 500, 2000), 300, seed=7)
    assert_all_equal(results, greedy_coreset_reference(points, 300, seed=7))


def test_a_shard_failing_mid_round_stops_every_shard():
    class Failure(Exception):
        pass

    def exchange_for(rank, exchange):
        calls = {"n": 0}

        def failing(row):
            calls["n"] += 1
            if rank == 1 and calls["n"] == 2:          # its first round
                raise Failure("worker 1 stopped")
            return exchange(row)
        return failing

    points = np.random.default_rng(1).standard_normal((3000, 8)).astype(np.float32)
    results = run_sharded(points, (0, 1000, 2000, 3000), 400, seed=0, exchange_for=exchange_for)
    assert isinstance(results[1][0], Failure)
    assert all(isinstance(r, threading.BrokenBarrierError) for r, _ in (results[0], results[2]))
