"""PaDiM's distributed merge, with ranks as threads: the single-process sums, chunk by chunk."""
import threading

import numpy as np
import pytest

import models.padim.fit as padim_fit
from models.sharding import Shard
from test_padim import embedding_batches
from test_sharded_coreset import ThreadExchange


@pytest.mark.parametrize("chunk_bytes", [1, padim_fit.MERGE_CHUNK_BYTES])
@pytest.mark.parametrize("split", [(2, 7), (1, 3, 7)], ids=["2_ranks", "3_ranks"])
def test_merged_sums_equal_one_process(monkeypatch, chunk_bytes, split):
    monkeypatch.setattr(padim_fit, "MERGE_CHUNK_BYTES", chunk_bytes)    # 1 byte: one position a chunk
    batches = embedding_batches(seed=3, sizes=(2, 2, 2, 1), channels=6)
    images = np.concatenate(batches)
    one = padim_fit.GaussianAccumulator()
    for batch in batches:
        one.update(batch)
    bounds = (0, *split)
    exchange = ThreadExchange(len(bounds) - 1)
    merged = [None] * (len(bounds) - 1)

    def rank(r: int) -> None:
        gather = exchange.for_rank(r)
        shard = Shard(rank=r, world_size=len(merged), all_gather=gather,
                      all_reduce_sum=lambda a: gather(np.asarray(a)).sum(axis=0))
        accumulator = padim_fit.GaussianAccumulator()
        accumulator.update(images[bounds[r]:bounds[r + 1]])
        try:
            accumulator.merge_shards(shard)
            merged[r] = accumulator
        except BaseException as err:
            merged[r] = err
            exchange.barrier.abort()

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(len(merged))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    mean, inverse = one.gaussians()
    for accumulator in merged:
        assert isinstance(accumulator, padim_fit.GaussianAccumulator), accumulator
        assert accumulator.count == one.count
        if np.array_equal(accumulator.shift, one.shift):    # rank 0's first images are the first batch
            np.testing.assert_allclose(accumulator.outer, one.outer, rtol=1e-9)
        merged_mean, merged_inverse = accumulator.gaussians()
        np.testing.assert_allclose(merged_mean, mean, rtol=1e-7)
        np.testing.assert_allclose(merged_inverse, inverse, rtol=1e-5, atol=1e-7)
