import numpy as np
import pytest

from models.patchcore.sampling import coreset_size, greedy_coreset, greedy_coreset_reference, random_projection


@pytest.mark.parametrize("n_points,dim,n_select,seed", [
    (1, 4, 1, 0), (50, 3, 10, 1), (400, 8, 80, 2), (2000, 16, 200, 3), (3000, 128, 300, 4),
])
def test_fast_coreset_matches_plain_greedy(n_points, dim, n_select, seed):
    rng = np.random.default_rng(seed)
    points = rng.standard_normal((n_points, dim)).astype(np.float32)
    expected = greedy_coreset_reference(points, n_select, seed)
    np.testing.assert_array_equal(greedy_coreset(points, n_select, seed), expected)


def test_fast_coreset_matches_on_clustered_data_with_duplicates():
    # Clustered points (what real patch features look like) with exact duplicates and ties.
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((20, 32)).astype(np.float32) * 10
    points = centres[rng.integers(0, 20, 3000)] + rng.standard_normal((3000, 32)).astype(np.float32) * 0.3
    points[100:200] = points[0]
    points = np.round(points, 1).astype(np.float32)
    for n_select in (5, 150, 1500):
        np.testing.assert_array_equal(greedy_coreset(points, n_select, 5), greedy_coreset_reference(points, n_select, 5))


def test_greedy_coreset_picks_farthest_points():
    # 1-D by hand: start at the seeded index, then always the farthest remaining point.
    points = np.array([[0.0], [1.0], [10.0], [4.0], [6.0]], dtype=np.float32)
    selected = greedy_coreset_reference(points, 3, seed=0)
    first = selected[0]
    dist = np.abs(points[:, 0] - points[first, 0])
    assert selected[1] == int(np.argmax(dist))
    assert len(set(selected.tolist())) == 3
    np.testing.assert_array_equal(greedy_coreset(points, 3, seed=0), selected)


def test_coreset_size_and_projection_are_deterministic():
    assert coreset_size(163856, 10) == 16386
    assert coreset_size(5, 1) == 1 and coreset_size(5, 100) == 5
    x = np.random.default_rng(0).standard_normal((10, 300)).astype(np.float32)
    a, b = random_projection(x, 128, 3), random_projection(x, 128, 3)
    assert a.shape == (10, 128) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, random_projection(x, 128, 4))
