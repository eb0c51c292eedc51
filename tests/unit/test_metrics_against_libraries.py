"""The project's metrics against independent implementations: scikit-learn's roc_auc_score and PRO
regions from scikit-image's connected-component labelling."""
import numpy as np
import pytest
from skimage.measure import label
from sklearn.metrics import roc_auc_score

from utils.metrics import auroc, pixel_auroc, pro_curve, pro_score


@pytest.mark.parametrize("seed", range(5))
def test_auroc_equals_scikit_learn_with_and_without_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 500)
    labels[:2] = (0, 1)
    continuous = rng.standard_normal(500) + labels
    tied = np.round(continuous, 1)              # many ties, across both classes
    for scores in (continuous, tied):
        assert auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_pixel_auroc_equals_scikit_learn_on_maps():
    rng = np.random.default_rng(9)
    masks = rng.random((4, 16, 16)) < 0.1
    maps = np.round(rng.random((4, 16, 16)) + masks, 2).astype(np.float32)
    assert pixel_auroc(maps, masks) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)


def reference_pro(maps: np.ndarray, masks: np.ndarray, limit: float = 0.3) -> float:
    """PRO written out plainly: skimage regions (8-connected, per image), one threshold per distinct
    value, trapezoids up to `limit` with the last segment interpolated, divided by `limit`."""
    regions = [(i, label(m, connectivity=2)) for i, m in enumerate(masks)]
    region_masks = [labels == r for i, labels in regions for r in range(1, labels.max() + 1)]
    region_images = [i for i, labels in regions for _ in range(1, labels.max() + 1)]
    ok = ~masks
    points = [(0.0, 0.0)]
    for t in np.unique(maps)[::-1]:
        above = maps >= t
        fpr = (above & ok).sum() / ok.sum()
        pro = np.mean([(above[i] & r).sum() / r.sum() for i, r in zip(region_images, region_masks)])
        points.append((fpr, pro))
    fprs, pros = np.array(points).T
    area, (x0, y0) = 0.0, (0.0, 0.0)
    for x1, y1 in zip(fprs[1:], pros[1:]):
        if x1 > limit:
            y1 = y0 + (limit - x0) * (y1 - y0) / (x1 - x0)
            area += (limit - x0) * (y0 + y1) / 2
            break
        area += (x1 - x0) * (y0 + y1) / 2
        x0, y0 = x1, y1
    return area / limit


@pytest.mark.parametrize("seed", range(3))
def test_pro_regions_and_score_equal_an_independent_version(seed):
    rng = np.random.default_rng(seed)
    masks = np.zeros((3, 12, 12), dtype=bool)
    for image in masks:
        for _ in range(3):                       # blobs that touch diagonally now and then
            y, x = rng.integers(0, 10, 2)
            image[y:y + rng.integers(1, 4), x:x + rng.integers(1, 4)] = True
        image[0, 0] = image[1, 1] = True         # diagonal neighbours: one region under 8-connectivity
    maps = np.round(rng.random(masks.shape) + 0.6 * masks, 2)
    fprs, pros = pro_curve(maps, masks)
    assert pros[-1] == pytest.approx(1.0) and fprs[-1] == pytest.approx(1.0)
    assert pro_score(maps, masks) == pytest.approx(reference_pro(maps, masks), abs=1e-12)


def test_diagonal_pixels_form_one_region_as_in_the_mvtec_evaluation():
    # Two pixels side by side and one touching them diagonally: one 3-pixel region (8-connected),
    # so covering the pair gives PRO 2/3; two regions (4-connected) would give (1 + 0) / 2.
    masks = np.zeros((1, 4, 4), dtype=bool)
    masks[0, 0, 0] = masks[0, 0, 1] = masks[0, 1, 2] = True
    maps = np.zeros((1, 4, 4))
    maps[0, 0, :2] = 1.0
    assert label(masks[0], connectivity=2).max() == 1
    assert pro_curve(maps, masks)[1][1] == pytest.approx(2 / 3)
