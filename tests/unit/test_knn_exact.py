"""The tiled nearest-neighbour search against float64 brute force: ties, duplicates, odd sizes, tiny banks."""
import numpy as np
import pytest

import models.knn as knn
from models.knn import MemoryBank, exact_sq_distances


def brute_force_nearest(queries, bank):
    """Index of the nearest entry in float64, lowest index among equal distances (np.argmin's rule)."""
    sq = np.stack([exact_sq_distances(np.broadcast_to(q, bank.shape), bank) for q in queries])
    return sq.argmin(axis=1), np.sqrt(sq.min(axis=1))


@pytest.fixture
def small_tiles(monkeypatch):
    # Tiles smaller than the data, with sizes that do not divide it: every edge case of the loop.
    monkeypatch.setattr(knn, "QUERY_TILE", 7)
    monkeypatch.setattr(knn, "BANK_TILE", 13)


@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("n_bank,n_query,dim", [(1, 5, 3), (2, 1, 1), (50, 33, 17), (129, 64, 128)])
def test_tiled_search_is_the_float64_nearest(small_tiles, grouped, n_bank, n_query, dim):
    rng = np.random.default_rng(n_bank + dim)
    bank = rng.standard_normal((n_bank, dim)).astype(np.float32)
    queries = rng.standard_normal((n_query, dim)).astype(np.float32)
    dists, index = MemoryBank(bank, grouped=grouped).search(queries, k=1)
    expected_index, expected_dist = brute_force_nearest(queries, bank)
    np.testing.assert_array_equal(index[:, 0], expected_index)
    np.testing.assert_allclose(dists[:, 0], expected_dist, rtol=1e-6)


@pytest.mark.parametrize("grouped", [False, True])
def test_duplicates_and_near_ties_go_to_the_float64_winner(small_tiles, grouped):
    rng = np.random.default_rng(3)
    base = rng.standard_normal((40, 24)).astype(np.float32) * 50
    # Exact duplicates (equal distances: the lowest index wins) and copies moved by one float32 ulp
    # in one coordinate (differences far below the product form's rounding: float64 decides).
    nudged = base.copy()
    nudged[:, 0] = np.nextafter(nudged[:, 0], np.float32(np.inf))
    bank = np.concatenate([base, base, nudged, base[::-1]])
    queries = np.concatenate([base, nudged, base + rng.standard_normal(base.shape).astype(np.float32) * 1e-3])
    tiled = MemoryBank(bank, grouped=grouped)
    dists, index = tiled.search(queries, k=1)
    expected_index, expected_dist = brute_force_nearest(queries, bank)
    np.testing.assert_array_equal(index[:, 0], expected_index)
    np.testing.assert_array_equal(dists[:, 0], expected_dist.astype(np.float32))
    assert tiled.settled_ties > 0


def test_settled_ties_are_few_on_ordinary_data():
    rng = np.random.default_rng(4)
    bank = MemoryBank(rng.standard_normal((3000, 64)).astype(np.float32))
    bank.search(rng.standard_normal((500, 64)).astype(np.float32))
    assert bank.settled_ties < 25


def test_tiled_and_untiled_products_agree_with_groups_on_clustered_data():
    rng = np.random.default_rng(5)
    centres = rng.standard_normal((30, 32)) * 10
    bank = (np.repeat(centres, 200, 0) + rng.standard_normal((6000, 32))).astype(np.float32)
    queries = (centres[rng.integers(0, 30, 400)] + rng.standard_normal((400, 32)) * 1.2).astype(np.float32)
    expected = brute_force_nearest(queries, bank)[0]
    for options in ({"grouped": False, "tiled": True}, {"grouped": True}, {"grouped": False, "tiled": False}):
        np.testing.assert_array_equal(MemoryBank(bank, **options).search(queries)[1][:, 0], expected)


def test_an_empty_bank_is_refused():
    with pytest.raises(ValueError, match="non-empty"):
        MemoryBank(np.zeros((0, 8), np.float32))


def test_no_queries_give_empty_answers():
    dists, index = MemoryBank(np.ones((3, 4), np.float32)).search(np.zeros((0, 4), np.float32))
    assert dists.shape == (0, 1) and index.shape == (0, 1)
