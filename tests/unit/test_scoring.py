import math

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from models.knn import MemoryBank
from models.patchcore.scorer import PatchCoreScorer, reweight
from models.scoring import upsample_and_smooth


def brute_force(queries, bank):
    d = np.sqrt(((queries[:, None, :].astype(np.float64) - bank[None].astype(np.float64)) ** 2).sum(-1))
    return d


@pytest.mark.parametrize("array_lib", ["numpy", "paddle"])
@pytest.mark.parametrize("chunk_bytes", [64, 4096, 2**28])
def test_search_matches_brute_force_in_any_chunking(chunk_bytes, array_lib):
    rng = np.random.default_rng(0)
    bank = rng.standard_normal((300, 16)).astype(np.float32)
    queries = rng.standard_normal((50, 16)).astype(np.float32)
    dists, index = MemoryBank(bank, max_chunk_bytes=chunk_bytes, array_lib=array_lib).search(queries, k=3)
    full = brute_force(queries, bank)
    np.testing.assert_array_equal(index, np.argsort(full, axis=1)[:, :3])
    np.testing.assert_allclose(dists, np.sort(full, axis=1)[:, :3], rtol=1e-6)


def test_exact_distance_for_a_query_equal_to_a_bank_entry():
    # The expanded form would give sqrt(rounding noise) here; the refined distance is exactly 0.
    bank = np.random.default_rng(1).standard_normal((100, 64)).astype(np.float32) * 30
    dists, index = MemoryBank(bank).search(bank[[5, 17]], k=1)
    assert index[:, 0].tolist() == [5, 17]
    assert dists.max() == 0.0


def test_reweight_follows_eq7_by_hand():
    # Bank on a line: m* = 0 at index 0, its neighbours 1 and 3 (b = 3); test patch at 2.
    bank = MemoryBank(np.array([[0.0], [1.0], [3.0], [10.0]], dtype=np.float32))
    test_patch = np.array([2.0], dtype=np.float32)
    # distances to N_b(m*) = {0, 1, 3}: 2, 1, 1 -> w = 1 - e^2 / (e^2 + e + e)
    expected = (1 - math.exp(2) / (math.exp(2) + 2 * math.e)) * 2.0
    assert reweight(test_patch, 0, bank, num_neighbors=3) == pytest.approx(expected, rel=1e-12)


def test_scorer_patch_scores_map_and_image_score():
    rng = np.random.default_rng(2)
    bank = rng.standard_normal((64, 8)).astype(np.float32)
    embedding = rng.standard_normal((2, 8, 4, 4)).astype(np.float32)
    scores = PatchCoreScorer(bank, image_size=16, image_score="max", sigma=4)(embedding)
    patches = embedding.transpose(0, 2, 3, 1).reshape(2, 16, 8)
    expected = np.stack([brute_force(p, bank).min(1) for p in patches]).reshape(2, 4, 4)
    np.testing.assert_allclose(scores.patch_scores, expected, rtol=1e-5)
    np.testing.assert_allclose(scores.image_scores, expected.reshape(2, -1).max(1), rtol=1e-5)
    assert scores.anomaly_maps.shape == (2, 16, 16)
    reweighted = PatchCoreScorer(bank, image_size=16, image_score="reweighted")(embedding).image_scores
    assert np.all(reweighted < scores.image_scores) and np.all(reweighted > 0)


def test_map_is_bilinear_upsampling_then_gaussian():
    grid = np.zeros((1, 2, 2), dtype=np.float32)
    grid[0, 0, 0] = 1.0
    sharp = upsample_and_smooth(grid, size=8, sigma=0)
    # align_corners=False: the top-left 2x2 output pixels sit beyond the first sample and copy it.
    assert sharp[0, 0, 0] == 1.0 and sharp[0, 1, 1] == 1.0 and sharp[0, 7, 7] == 0.0
    np.testing.assert_allclose(upsample_and_smooth(grid, 8, sigma=4)[0],
                               gaussian_filter(sharp[0], sigma=4, mode="reflect", truncate=4.0), rtol=1e-6)


@pytest.mark.parametrize("grid, size, sigma", [((8, 8), (64, 64), 4.0), ((7, 5), (56, 40), 4.0),
                                              ((28, 28), (224, 224), 4.0), ((56, 56), (448, 448), 4.0),
                                              ((14, 40), (112, 320), 2.5), ((9, 6), (20, 13), 0.0), ((12, 12), (8, 8), 1.0),
                                              ((1, 1), (4, 5), 4.0)])
def test_map_equals_paddle_interpolation_then_scipy_blur(grid, size, sigma):
    # The reference is the two steps as the scorers took them before the matrix form (upsampling
    # by Paddle, then scipy's 2-D filter), on grids square or not, up- and downsampled.
    import paddle
    import paddle.nn.functional as F

    patch_scores = np.random.default_rng(0).random((3, *grid)).astype(np.float32) * 5
    sharp = F.interpolate(paddle.to_tensor(patch_scores[:, None]), size=size, mode="bilinear",
                          align_corners=False).numpy()[:, 0]
    expected = np.stack([gaussian_filter(m, sigma, mode="reflect", truncate=4.0) for m in sharp]) if sigma else sharp
    maps = upsample_and_smooth(patch_scores, size, sigma)
    assert maps.shape == (3, *size) and maps.dtype == np.float32
    np.testing.assert_allclose(maps, expected, rtol=1e-5, atol=1e-6 * expected.max())


def test_channel_mismatch_is_refused():
    with pytest.raises(ValueError, match="channels"):
        PatchCoreScorer(np.zeros((4, 3), np.float32), 8)(np.zeros((1, 5, 2, 2), np.float32))


def clustered(rng, n_clusters, per_cluster, dim, spread):
    centres = rng.standard_normal((n_clusters, dim)) * 10
    return (np.repeat(centres, per_cluster, 0) + rng.standard_normal((n_clusters * per_cluster, dim)) * spread)


@pytest.mark.parametrize("scale", [pytest.param(1e-3, marks=pytest.mark.slow), 1.0, 1e3])
def test_grouped_search_finds_the_same_nearest_entries_as_the_full_product(scale):
    rng = np.random.default_rng(2)
    bank = (clustered(rng, 40, 120, 24, 0.5) * scale).astype(np.float32)
    # Queries near entries, between clusters, far away, and bank entries themselves.
    queries = np.concatenate([bank[rng.integers(0, len(bank), 300)] + rng.standard_normal((300, 24)) * 0.3 * scale,
                              (bank[:200] + bank[-200:]) / 2, rng.standard_normal((50, 24)) * 40 * scale,
                              bank[::97]]).astype(np.float32)
    grouped = MemoryBank(bank, grouped=True)
    dists, index = grouped.search(queries, k=1)
    assert grouped.chunk_counts["grouped"] >= 1          # the pruned path really ran
    full = brute_force(queries, bank)
    np.testing.assert_array_equal(index[:, 0], full.argmin(axis=1))
    np.testing.assert_allclose(dists[:, 0], full.min(axis=1), rtol=1e-6, atol=0)


@pytest.mark.slow
def test_grouped_search_falls_back_where_distances_concentrate():
    rng = np.random.default_rng(3)
    bank = rng.standard_normal((5000, 64)).astype(np.float32)
    queries = rng.standard_normal((400, 64)).astype(np.float32)
    grouped = MemoryBank(bank)
    assert grouped.groups is not None                    # large enough to be grouped by default
    dists, index = grouped.search(queries, k=1)
    assert grouped.chunk_counts == {"grouped": 0, "full": 1}
    full = brute_force(queries, bank)
    np.testing.assert_array_equal(index[:, 0], full.argmin(axis=1))


def test_grouped_bank_answers_k_nearest_in_bank_order():
    rng = np.random.default_rng(4)
    bank = clustered(rng, 10, 50, 8, 0.2).astype(np.float32)
    queries = bank[[3, 250, 499]] + 0.01
    dists, index = MemoryBank(bank, grouped=True).search(queries, k=4)
    full = brute_force(queries, bank)
    np.testing.assert_array_equal(index, np.argsort(full, axis=1)[:, :4])
