"""The self-contained ONNX model's fixed parts against the project's scoring code."""
import numpy as np
import pytest

from engine.onnx_full import neighbourhood_table
from models.knn import MemoryBank
from models.scoring import upsample_and_smooth


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
