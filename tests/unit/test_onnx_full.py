"""The self-contained ONNX model's fixed parts against the project's scoring code."""
import numpy as np
import pytest

from engine.onnx_full import axis_operators, neighbourhood_table
from models.knn import MemoryBank
from models.scoring import upsample_and_smooth


@pytest.mark.parametrize("grid, size", [((8, 8), (64, 64)), ((7, 5), (56, 40)), ((28, 28), (224, 224))])
def test_axis_operators_are_the_upsampling_and_blur(grid, size):
    patch_scores = np.random.default_rng(0).random((3, *grid)).astype(np.float32)
    rows, cols = axis_operators(grid, size, 4.0)
    assert rows.shape == (size[0], grid[0]) and cols.shape == (size[1], grid[1])
    expected = upsample_and_smooth(patch_scores, size, 4.0)
    np.testing.assert_allclose(rows @ patch_scores @ cols.T, expected, rtol=1e-5, atol=1e-6 * expected.max())


def test_neighbourhood_table_is_each_entry_and_its_nearest_others():
    bank = np.random.default_rng(1).standard_normal((50, 6)).astype(np.float32)
    table = neighbourhood_table(bank, 4)
    assert table.shape == (50, 4) and (table[:, 0] == np.arange(50)).all()
    dists = np.linalg.norm(bank[:, None] - bank[None], axis=2)
    np.fill_diagonal(dists, np.inf)
    for m in range(50):
        np.testing.assert_array_equal(np.sort(table[m, 1:]), np.sort(np.argsort(dists[m])[:3]))
    # A bank smaller than the neighbourhood: every entry, itself first (as reweight takes them).
    assert neighbourhood_table(bank[:2], 4).tolist() == [[0, 1], [1, 0]]
    assert MemoryBank(bank).search(bank[:1], k=1)[1][0, 0] == 0
