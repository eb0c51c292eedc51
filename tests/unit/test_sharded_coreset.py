"""The sharded (distributed) coreset, with shards as threads: the same indices as one process."""
import threading

import numpy as np
import pytest

from models.patchcore.coreset import greedy_coreset, greedy_coreset_sharded


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


def run_sharded(points, bounds, n_select, seed):
    exchange = ThreadExchange(len(bounds) - 1)
    results = [None] * (len(bounds) - 1)

    def worker(rank):
        first, last = bounds[rank], bounds[rank + 1]
        try:
            results[rank] = greedy_coreset_sharded(points[first:last], first, len(points), n_select,
                                                   exchange.for_rank(rank), seed=seed)
        except BaseException as err:       # a failed shard must not leave the others waiting
            results[rank] = err
            exchange.barrier.abort()

    threads = [threading.Thread(target=worker, args=(r,)) for r in range(len(bounds) - 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


@pytest.mark.parametrize("kind", ["random", "clustered_with_ties"])
@pytest.mark.parametrize("bounds", [(0, 1500, 3000), (0, 700, 2100, 3000), (0, 2999, 3000)])
def test_sharded_selection_equals_one_process(kind, bounds):
    rng = np.random.default_rng(11)
    if kind == "random":
        points = rng.standard_normal((3000, 16)).astype(np.float32)
    else:
        # Repeated points across the shard boundary: ties must go to the lowest global index.
        base = rng.standard_normal((300, 8)).astype(np.float32) * 5
        points = np.concatenate([base, base, base + 0.01, base[::-1]] * 2 + [base[::2], base[1::2], base])
        points = points[:3000]
    expected = greedy_coreset(points, 400, seed=4)
    results = run_sharded(points, bounds, 400, seed=4)
    for failure in (r for r in results if isinstance(r, BaseException)):
        if not isinstance(failure, threading.BrokenBarrierError):
            raise failure
    for indices in results:
        np.testing.assert_array_equal(indices, expected)

