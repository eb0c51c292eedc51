import numpy as np
import pytest

import models.patchcore.coreset.batched as batched
import models.patchcore.coreset.distances as distances
from models.patchcore.coreset import (coreset_size, greedy_coreset, greedy_coreset_continued, greedy_coreset_reference,
                                      random_projection)


def clustered(seed: int, n_points: int = 3000, dim: int = 32, n_clusters: int = 20) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim)).astype(np.float32) * 10
    return centres[rng.integers(0, n_clusters, n_points)] + rng.standard_normal((n_points, dim)).astype(np.float32) * 0.3


@pytest.fixture(autouse=True, params=[None, 4], ids=["top_rows_default", "top_rows_4"])
def top_rows(request, monkeypatch):
    """Every test also with a tiny TOP_ROWS, so the farthest-point search runs on top_rows (the
    default only does so above 4096 points)."""
    if request.param is not None:
        monkeypatch.setattr(batched, "TOP_ROWS", request.param)
    return request.param


@pytest.mark.parametrize("n_points,dim,n_select,seed", [
    (1, 4, 1, 0), (50, 3, 10, 1), (400, 8, 80, 2), (2000, 16, 200, 3), (3000, 128, 300, 4),
])
def test_matches_plain_greedy_on_random_data(n_points, dim, n_select, seed):
    rng = np.random.default_rng(seed)
    points = rng.standard_normal((n_points, dim)).astype(np.float32)
    expected = greedy_coreset_reference(points, n_select, seed)
    np.testing.assert_array_equal(greedy_coreset(points, n_select, seed), expected)


def test_matches_on_clustered_data_with_duplicates_and_ties():
    # Clustered points (what real patch features look like) with exact duplicates and ties.
    points = clustered(7)
    points[100:200] = points[0]
    points = np.round(points, 1).astype(np.float32)
    for n_select in (5, 150, 1500):
        np.testing.assert_array_equal(greedy_coreset(points, n_select, 5), greedy_coreset_reference(points, n_select, 5))


def test_matches_when_most_distances_are_equal():
    # Five distinct points repeated: after five picks every distance is zero and the lowest index wins.
    rng = np.random.default_rng(8)
    points = rng.standard_normal((5, 16)).astype(np.float32)[rng.integers(0, 5, 600)]
    np.testing.assert_array_equal(greedy_coreset(points, 60, 2), greedy_coreset_reference(points, 60, 2))


def test_farthest_point_is_mostly_found_among_top_rows(monkeypatch):
    # Most picks are decided among the top rows, between two updates of all points.
    monkeypatch.setattr(batched, "TOP_ROWS", 64)
    updates = {"all_points": 0}
    original = batched.BatchedSelection.apply_pending

    def counted(self):
        updates["all_points"] += self.n_centres > self.applied
        return original(self)
    monkeypatch.setattr(batched.BatchedSelection, "apply_pending", counted)
    points = np.random.default_rng(4).standard_normal((6000, 8)).astype(np.float32)
    np.testing.assert_array_equal(greedy_coreset(points, 600, 3), greedy_coreset_reference(points, 600, 3))
    assert 0 < 10 * updates["all_points"] < 600, updates


@pytest.mark.parametrize("scale", [1e-4, 1e4])
def test_same_indices_whatever_the_feature_scale(scale):
    points = clustered(3, n_points=1500) * np.float32(scale)
    np.testing.assert_array_equal(greedy_coreset(points, 300, 1), greedy_coreset_reference(points, 300, 1))


def test_matches_on_cnn_patch_features(synthetic_root):
    """Projected patch features of generated texture images through a (random-init) ResNet18."""
    from datasets.mvtec import MVTecDataset
    from models.feature_extractor import build_extractor, extract
    from utils.config import DataConfig, ModelConfig

    data = MVTecDataset(str(synthetic_root), "fabric", "train", DataConfig(resize=64, crop_size=64))
    images = np.stack([data[i][0] for i in range(len(data))])
    embedding = extract(build_extractor(ModelConfig(arch="resnet18", pretrained="none")), images)
    patches = embedding.transpose(0, 2, 3, 1).reshape(-1, embedding.shape[1])
    points = random_projection(patches, 128, 0)
    np.testing.assert_array_equal(greedy_coreset(points, 400, 0), greedy_coreset_reference(points, 400, 0))


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


def test_continued_selection_equals_one_selection_split_in_two():
    # Continuing from the first picks of a selection, on the remaining points, gives its later picks
    # (the order of the points does not matter to the rule except for ties, absent in random data).
    points = np.random.default_rng(21).standard_normal((3000, 12)).astype(np.float32)
    whole = greedy_coreset(points, 120, seed=5)
    first, later = whole[:40], whole[40:]
    rest = np.setdiff1d(np.arange(len(points)), first)
    continued = greedy_coreset_continued(points[rest], points[first], 80)
    np.testing.assert_array_equal(rest[continued], later)


@pytest.mark.parametrize("gather_rows", [8192, 64])
@pytest.mark.parametrize("dim", [3, 31, 128, 1536])
def test_pairwise_rule_distances_are_bitwise_the_vector_ones(dim, gather_rows, monkeypatch):
    # The selector computes the rule for rows with different centres in one call (in one gather or
    # several), one row at a time and for all rows against one centre: every way must round alike.
    monkeypatch.setattr(distances, "GATHER_ROWS", gather_rows)
    rng = np.random.default_rng(dim)
    points = (rng.standard_normal((300, dim)) * rng.uniform(1e-3, 1e3, (300, 1))).astype(np.float32)
    sq_norms = distances.squared_norms(points)
    centres = points[[17, 250, 3]]
    centre_sqs = sq_norms[[17, 250, 3]]
    vectors = [distances.rule_distances(points, sq_norms, centres[c], centre_sqs[c]) for c in range(3)]
    owners = rng.integers(0, 3, len(points))
    rows = rng.permutation(len(points))
    mixed = distances.rule_pair_distances(points, sq_norms, centres, centre_sqs, rows, owners[rows])
    expected = np.array([vectors[owners[row]][row] for row in rows], dtype=np.float32)
    np.testing.assert_array_equal(mixed.view(np.int32), expected.view(np.int32))
    for row in rows[:20]:
        one = distances.rule_pair_distances(points, sq_norms, centres, centre_sqs, np.array([row]), owners[row:row + 1])
        np.testing.assert_array_equal(one.view(np.int32), vectors[owners[row]][row:row + 1].view(np.int32))


@pytest.mark.parametrize("loop_rows,wide_need", [(16, 256), (0, 256), (16, 1), (0, 1)])
def test_batched_selection_rule_nearest_is_bitwise_the_reference_minimum(loop_rows, wide_need, monkeypatch):
    # The exact nearest distances of rows near the top, asked again as centres are added (only the
    # new centres are computed then): one row at a time, in one pairwise call, or by a BLAS product
    # over the centres (one row at a time or all in one) and the rule only for those near its minimum.
    monkeypatch.setattr(batched, "LOOP_ROWS", loop_rows)
    monkeypatch.setattr(batched, "WIDE_NEED", wide_need)
    rng = np.random.default_rng(12)
    points = (rng.standard_normal((400, 64)) * rng.uniform(1e-2, 1e2, (400, 1))).astype(np.float32)
    state = batched.BatchedSelection(points, 9)
    sq_norms = distances.squared_norms(points)
    for step, index in enumerate(rng.choice(len(points), 9, replace=False)):
        state.add_local_centre(int(index))
    for n_centres, rows in ((3, [5, 17, 300]), (7, [5, 6, 17, 399]), (9, list(range(0, 400, 7))), (9, [0, 7, 8, 14, 15])):
        rows = np.array(rows)
        expected = np.min([distances.rule_distances(points, sq_norms, points[i], sq_norms[i])
                           for i in state.selected[:n_centres]], axis=0)
        np.testing.assert_array_equal(state.rule_nearest(rows, n_centres).view(np.int32), expected[rows].view(np.int32))


def test_batched_selection_skips_groups_out_of_reach_without_changing_the_result(monkeypatch):
    # Small groups, applied group by group whatever the fraction in reach: the pruning must skip
    # (group, centre) pairs on clustered data, and the picks stay the reference's.
    monkeypatch.setattr(batched, "TOP_ROWS", 64)
    monkeypatch.setattr(batched, "GROUPS", 32)
    monkeypatch.setattr(batched, "GROUP_MIN_SIZE", 16)
    monkeypatch.setattr(batched, "GROUP_MAX_FRACTION", 1.0)
    checked = {"pairs": 0, "skipped": 0}
    original = batched.BatchedSelection._groups_in_reach

    def counted(self, pending):
        in_reach = original(self, pending)
        checked["pairs"] += in_reach.size
        checked["skipped"] += int(np.count_nonzero(~in_reach))
        return in_reach
    monkeypatch.setattr(batched.BatchedSelection, "_groups_in_reach", counted)
    rng = np.random.default_rng(13)
    for points, n_select in ((clustered(14, n_points=4000), 800),
                             (rng.standard_normal((3000, 16)).astype(np.float32), 600)):
        np.testing.assert_array_equal(greedy_coreset(points, n_select, 1),
                                      greedy_coreset_reference(points, n_select, 1))
    assert checked["skipped"] > checked["pairs"] // 4, checked
