"""Tests for utils/metrics.py: hand-computed answers (worked out in the comments) plus brute force."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from utils.metrics import (
    UndefinedMetricError,
    auroc,
    compute_metrics,
    f1_optimal_threshold,
    image_auroc,
    pixel_auroc,
    pro_curve,
    pro_score,
)


# --------------------------------------------------------------------------------------------------
# brute-force references, written straight from the definitions (slow, small inputs only)
# --------------------------------------------------------------------------------------------------

def brute_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney over all (positive, negative) pairs: win = 1, tie = 1/2."""
    pos = scores[labels == 1][:, None]
    neg = scores[labels == 0][None, :]
    return float(((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (pos.size * neg.size))


def brute_pro_curve(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One threshold at a time over the distinct values, descending; regions labelled per image."""
    regions = []  # (image index, boolean region mask) for every region of every image
    for i, mask in enumerate(masks):
        lab, n = ndimage.label(mask > 0, structure=np.ones((3, 3)))
        regions += [(i, lab == r) for r in range(1, n + 1)]
    ok = masks == 0
    fprs, pros = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        above = maps >= t
        fprs.append(above[ok].sum() / ok.sum())
        pros.append(np.mean([above[i][region].mean() for i, region in regions]))
    return np.array(fprs), np.array(pros)


def brute_area(fprs: np.ndarray, pros: np.ndarray, limit: float) -> float:
    """Trapezoids segment by segment, cutting the segment that crosses `limit`."""
    area = 0.0
    for i in range(1, len(fprs)):
        x0, x1, y0, y1 = fprs[i - 1], fprs[i], pros[i - 1], pros[i]
        if x0 >= limit:
            break
        if x1 > limit:
            y1 = y0 + (limit - x0) * (y1 - y0) / (x1 - x0)
            x1 = limit
        area += (x1 - x0) * (y0 + y1) / 2
    return area


# --------------------------------------------------------------------------------------------------
# AUROC
# --------------------------------------------------------------------------------------------------

def test_auroc_perfect_and_reversed():
    labels = np.array([0, 0, 1, 1])
    assert auroc(np.array([0.1, 0.2, 0.3, 0.4]), labels) == 1.0  # every positive above every negative
    assert auroc(np.array([0.4, 0.3, 0.2, 0.1]), labels) == 0.0  # every positive below every negative


def test_auroc_ties_by_hand():
    # pos = {0.4, 0.8}, neg = {0.1, 0.4}; pairs (pos, neg):
    # (0.4,0.1)=1, (0.4,0.4)=1/2 tie, (0.8,0.1)=1, (0.8,0.4)=1  ->  3.5 / 4 = 0.875
    assert auroc(np.array([0.1, 0.4, 0.4, 0.8]), np.array([0, 0, 1, 1])) == 0.875
    # All scores tied: one diagonal ROC step -> 0.5
    assert auroc(np.full(5, 0.3), np.array([0, 1, 0, 1, 1])) == 0.5


def test_auroc_matches_brute_force_with_many_ties():
    rng = np.random.default_rng(0)
    for trial in range(20):
        n = int(rng.integers(2, 400))
        scores = rng.integers(0, 8, n).astype(np.float64)  # only 8 values: heavy ties
        labels = rng.integers(0, 2, n)
        labels[:2] = [0, 1]  # both classes present
        if trial % 2:
            scores = scores.astype(np.float32)
        assert auroc(scores, labels) == pytest.approx(brute_auroc(scores, labels), abs=1e-12)


def test_auroc_accepts_bool_and_int_scores():
    assert auroc(np.array([1, 2, 3]), np.array([False, True, True])) == 1.0


def test_auroc_errors():
    with pytest.raises(UndefinedMetricError, match="both classes"):
        auroc(np.array([0.1, 0.2]), np.array([1, 1]))
    with pytest.raises(ValueError, match="both classes"):  # UndefinedMetricError is a ValueError
        auroc(np.array([0.1, 0.2]), np.array([0, 0]))
    with pytest.raises(ValueError, match="same shape"):
        auroc(np.array([0.1, 0.2, 0.3]), np.array([0, 1]))
    with pytest.raises(ValueError, match="NaN"):
        auroc(np.array([0.1, np.nan]), np.array([0, 1]))
    with pytest.raises(ValueError, match="binary"):
        auroc(np.array([0.1, 0.2]), np.array([0, 255]))
    with pytest.raises(ValueError, match="empty"):
        auroc(np.array([]), np.array([]))


def test_image_auroc_wrapper():
    # pos = {0.9, 0.2}, neg = {0.5, 0.1}: (0.9,0.5)=1 (0.9,0.1)=1 (0.2,0.5)=0 (0.2,0.1)=1 -> 3/4
    assert image_auroc([0.9, 0.5, 0.2, 0.1], [1, 0, 1, 0]) == 0.75


# --------------------------------------------------------------------------------------------------
# pixel AUROC
# --------------------------------------------------------------------------------------------------

def test_pixel_auroc_by_hand():
    maps = np.array([[[0.9, 0.2], [0.5, 0.5]],
                     [[0.3, 0.1], [0.6, 0.95]]], dtype=np.float32)
    masks = np.array([[[255, 0], [255, 0]],     # mask values > 0 are defects (255 allowed here)
                      [[0, 0], [0, 0]]], dtype=np.uint8)
    # pos = {0.9, 0.5}; neg = {0.2, 0.5, 0.3, 0.1, 0.6, 0.95} (6 pixels, good image included)
    # 0.9 beats 0.2, 0.5, 0.3, 0.1, 0.6 = 5, loses to 0.95          -> 5
    # 0.5 beats 0.2, 0.3, 0.1 = 3, ties 0.5 = 1/2, loses 0.6, 0.95   -> 3.5
    # AUROC = 8.5 / (2 * 6) = 17/24
    assert pixel_auroc(maps, masks) == pytest.approx(17 / 24, abs=1e-12)


def test_pixel_auroc_errors():
    maps = np.zeros((2, 3, 3), dtype=np.float32)
    with pytest.raises(UndefinedMetricError):
        pixel_auroc(maps, np.zeros((2, 3, 3)))
    with pytest.raises(ValueError, match="same shape"):
        pixel_auroc(maps, np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match=r"\[N, H, W\]"):
        pixel_auroc(np.zeros((1, 2, 3, 3)), np.zeros((1, 2, 3, 3)))


# --------------------------------------------------------------------------------------------------
# PRO
# --------------------------------------------------------------------------------------------------

# Two 3x4 images. Image 0 has two defect regions:
#   mask 0:  1 0 0 1       region A = (0,0),(1,1),(2,2): only diagonally connected -> ONE region of
#            0 1 0 0       size 3 under 8-connectivity (it would be 3 regions under 4-connectivity);
#            0 0 1 0       region B = (0,3): size 1.
# Image 1 is a good image (all-zero mask): its 12 pixels are defect-free too.
# num_regions = 2; defect-free pixels = 24 - 4 = 20.
# Per-pixel contributions: defect-free +1/20 FPR; A pixel +1/(3*2) = 1/6 PRO; B pixel +1/(1*2) = 1/2.
PRO_MASKS = np.array([[[1, 0, 0, 1],
                       [0, 1, 0, 0],
                       [0, 0, 1, 0]],
                      [[0, 0, 0, 0],
                       [0, 0, 0, 0],
                       [0, 0, 0, 0]]], dtype=np.uint8)
PRO_MAPS = np.array([[[0.8, 0.7, 0.1, 0.9],
                      [0.1, 0.6, 0.6, 0.5],
                      [0.1, 0.1, 0.5, 0.5]],
                     [[0.9, 0.7, 0.5, 0.5],
                      [0.1, 0.1, 0.1, 0.1],
                      [0.1, 0.1, 0.1, 0.1]]], dtype=np.float64)
# Threshold sweep, descending (one point per tied group):
#   t=0.9: B + 1 ok (img1)               -> FPR 1/20 = 0.05, PRO 1/2
#   t=0.8: A(0,0)                        -> FPR 0.05,        PRO 1/2 + 1/6 = 2/3
#   t=0.7: 2 ok                          -> FPR 3/20 = 0.15, PRO 2/3
#   t=0.6: A(1,1) + 1 ok                 -> FPR 4/20 = 0.2,  PRO 2/3 + 1/6 = 5/6
#   t=0.5: A(2,2) + 4 ok (2 + 2)         -> FPR 8/20 = 0.4,  PRO 1
#   t=0.1: remaining 12 ok               -> FPR 20/20 = 1,   PRO 1
PRO_FPRS = np.array([0.0, 0.05, 0.05, 0.15, 0.2, 0.4, 1.0])
PRO_PROS = np.array([0.0, 1 / 2, 2 / 3, 2 / 3, 5 / 6, 1.0, 1.0])


def test_pro_curve_by_hand():
    fprs, pros = pro_curve(PRO_MAPS, PRO_MASKS)
    assert fprs.shape == PRO_FPRS.shape  # exactly one point per tied group, plus (0, 0)
    np.testing.assert_allclose(fprs, PRO_FPRS, rtol=0, atol=1e-12)
    np.testing.assert_allclose(pros, PRO_PROS, rtol=0, atol=1e-12)


def test_pro_score_by_hand_with_interpolated_cut():
    # Area up to FPR 0.3, segment by segment:
    #   (0,0)->(0.05,1/2):        0.05 * (0 + 1/2) / 2       = 1/80   = 3/240
    #   (0.05,1/2)->(0.05,2/3):   zero width                 = 0
    #   (0.05,2/3)->(0.15,2/3):   0.10 * 2/3                 = 1/15   = 16/240
    #   (0.15,2/3)->(0.2,5/6):    0.05 * (2/3 + 5/6) / 2     = 3/80   = 9/240
    #   (0.2,5/6)->(0.4,1) is cut at 0.3: PRO(0.3) = 5/6 + (0.1/0.2) * (1 - 5/6) = 11/12
    #   (0.2,5/6)->(0.3,11/12):   0.1 * (5/6 + 11/12) / 2    = 7/80   = 21/240
    #   total = 49/240; normalised by 0.3 -> 49/240 * 10/3 = 49/72
    assert pro_score(PRO_MAPS, PRO_MASKS, fpr_limit=0.3) == pytest.approx(49 / 72, abs=1e-12)
    # Default fpr_limit is 0.3.
    assert pro_score(PRO_MAPS, PRO_MASKS) == pytest.approx(49 / 72, abs=1e-12)


def test_pro_score_other_limits_by_hand():
    # Full curve: 49/240 up to 0.3, then (0.3,11/12)->(0.4,1): 0.1 * (11/12 + 1)/2 = 23/240,
    # then (0.4,1)->(1,1): 0.6 = 144/240. Total 216/240 = 0.9 (limit 1 -> divide by 1).
    assert pro_score(PRO_MAPS, PRO_MASKS, fpr_limit=1.0) == pytest.approx(0.9, abs=1e-12)
    # Limit exactly on a vertex, FPR 0.15: 3/240 + 16/240 = 19/240; / 0.15 = 19/36.
    assert pro_score(PRO_MAPS, PRO_MASKS, fpr_limit=0.15) == pytest.approx(19 / 36, abs=1e-12)
    # Limit inside the first segment, FPR 0.02: PRO(0.02) = 0.02/0.05 * 1/2 = 1/5;
    # area = 0.02 * 1/5 / 2 = 0.002; / 0.02 = 0.1.
    assert pro_score(PRO_MAPS, PRO_MASKS, fpr_limit=0.02) == pytest.approx(0.1, abs=1e-12)


def test_pro_uses_8_connectivity():
    # With 4-connectivity region A would split into 3 regions (4 in total), and the first point
    # would be PRO 1/4 instead of 1/2. Also: labels must not connect across images.
    fprs, pros = pro_curve(PRO_MAPS, PRO_MASKS)
    assert pros[1] == pytest.approx(0.5, abs=1e-12)
    # Same defect pixel in two stacked images = two regions: each image's pixel is half the PRO.
    masks = np.zeros((2, 3, 3), dtype=np.uint8)
    masks[:, 1, 1] = 1
    maps = np.zeros((2, 3, 3))
    maps[0, 1, 1] = 1.0  # only image 0's region detected at t=1
    fprs, pros = pro_curve(maps, masks)
    # t=1: region 0 fully covered, region 1 not -> PRO 1/2, FPR 0; t=0: everything -> (1, 1)
    np.testing.assert_allclose(pros, [0.0, 0.5, 1.0], atol=1e-12)
    np.testing.assert_allclose(fprs, [0.0, 0.0, 1.0], atol=1e-12)


def test_pro_perfect_map_scores_one():
    masks = PRO_MASKS
    fprs, pros = pro_curve(masks.astype(np.float32), masks)
    # t=1: every defect pixel, no ok pixel -> (0, 1); t=0: everything -> (1, 1)
    np.testing.assert_allclose(fprs, [0.0, 0.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(pros, [0.0, 1.0, 1.0], atol=1e-12)
    assert pro_score(masks.astype(np.float32), masks) == pytest.approx(1.0, abs=1e-12)


def test_pro_tied_scores_give_a_single_point():
    # A constant map: one tie group -> the curve is just (0,0) -> (1,1), the diagonal.
    fprs, pros = pro_curve(np.full(PRO_MASKS.shape, 0.5), PRO_MASKS)
    np.testing.assert_allclose(fprs, [0.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(pros, [0.0, 1.0], atol=1e-12)
    # Diagonal up to 0.3: area 0.3 * 0.3 / 2 = 0.045; / 0.3 = 0.15.
    assert pro_score(np.full(PRO_MASKS.shape, 0.5), PRO_MASKS) == pytest.approx(0.15, abs=1e-12)


def test_pro_matches_brute_force_on_random_maps():
    rng = np.random.default_rng(1)
    for trial in range(10):
        masks = (rng.random((3, 6, 7)) < 0.25).astype(np.uint8)
        masks[0, 0, 0] = 1  # at least one region
        masks[2] = 0        # a good image
        maps = rng.integers(0, 6, masks.shape).astype(np.float32)  # many ties
        fprs, pros = pro_curve(maps, masks)
        ref_fprs, ref_pros = brute_pro_curve(maps, masks)
        np.testing.assert_allclose(fprs, ref_fprs, atol=1e-12)
        np.testing.assert_allclose(pros, ref_pros, atol=1e-12)
        for limit in (0.05, 0.3, 1.0):
            assert pro_score(maps, masks, limit) == pytest.approx(
                brute_area(ref_fprs, ref_pros, limit) / limit, abs=1e-12)


def test_pro_errors():
    with pytest.raises(UndefinedMetricError, match="no defect region"):
        pro_score(np.random.rand(2, 4, 4), np.zeros((2, 4, 4)))
    with pytest.raises(UndefinedMetricError, match="no defect-free pixel"):
        pro_curve(np.random.rand(2, 4, 4), np.ones((2, 4, 4)))
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="fpr_limit"):
            pro_score(PRO_MAPS, PRO_MASKS, fpr_limit=bad)
    maps = PRO_MAPS.copy()
    maps[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pro_score(maps, PRO_MASKS)


# --------------------------------------------------------------------------------------------------
# F1-optimal threshold
# --------------------------------------------------------------------------------------------------

def test_f1_optimal_threshold_by_hand():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    labels = np.array([1, 0, 1, 1, 0, 0])
    # P = 3, F1 = 2TP / (#predicted + P):
    #   t=0.9: TP1 -> 2/4 = 0.5     t=0.8: TP1 -> 2/5 = 0.4   t=0.7: TP2 -> 4/6
    #   t=0.6: TP3 -> 6/7 (best)    t=0.5: TP3 -> 6/8         t=0.4: TP3 -> 6/9
    thr, f1 = f1_optimal_threshold(scores, labels)
    assert thr == 0.6
    assert f1 == pytest.approx(6 / 7, abs=1e-12)


def test_f1_optimal_threshold_tie_rule_smallest():
    # P = 2: t=0.9: TP1 -> 2/3; t=0.8: 2/4; t=0.7: 2/5; t=0.6: TP2 -> 4/6 = 2/3.
    # 0.9 and 0.6 tie at 2/3 -> the documented rule returns the smallest threshold, 0.6.
    thr, f1 = f1_optimal_threshold(np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 0, 1]))
    assert thr == 0.6
    assert f1 == pytest.approx(2 / 3, abs=1e-12)


def test_f1_optimal_threshold_tied_scores():
    # Tied 0.5s can't be split: t=0.5: TP1 of 2 predicted -> 2/(2+2) = 0.5; t=0.2: TP2 -> 4/(3+2) = 0.8
    thr, f1 = f1_optimal_threshold(np.array([0.5, 0.5, 0.2]), np.array([1, 0, 1]))
    assert (thr, f1) == (0.2, pytest.approx(0.8, abs=1e-12))
    # Splitting the tie would wrongly allow "just the positive 0.5" (F1 = 1). Grouped:
    # t=0.5: TP1, 2 predicted -> 2/(2+1) = 2/3; t=0.2: TP1, 3 predicted -> 2/(3+1) = 1/2.
    for labels in ([1, 0, 0], [0, 1, 0]):
        thr, f1 = f1_optimal_threshold(np.array([0.5, 0.5, 0.2]), np.array(labels))
        assert thr == 0.5
        assert f1 == pytest.approx(2 / 3, abs=1e-12)


def test_f1_optimal_threshold_pixel_shaped_input_and_brute_force():
    rng = np.random.default_rng(2)
    scores = rng.integers(0, 20, (4, 8, 8)).astype(np.float32)
    labels = (rng.random((4, 8, 8)) < 0.3).astype(np.uint8)
    thr, f1 = f1_optimal_threshold(scores, labels)
    # brute force over every observed value; smallest threshold among the best
    best = max((2 * np.sum((scores >= t) & (labels == 1)) / (np.sum(scores >= t) + labels.sum()), -t)
               for t in np.unique(scores))
    assert f1 == pytest.approx(best[0], abs=1e-12)
    assert thr == -best[1]


def test_f1_optimal_threshold_errors():
    with pytest.raises(UndefinedMetricError, match="no positive"):
        f1_optimal_threshold(np.array([0.1, 0.2]), np.array([0, 0]))


# --------------------------------------------------------------------------------------------------
# compute_metrics
# --------------------------------------------------------------------------------------------------

def test_compute_metrics_values():
    image_scores = np.array([0.9, 0.2])  # image 0 defective, image 1 good -> AUROC 1
    out = compute_metrics(image_scores, np.array([1, 0]), PRO_MAPS, PRO_MASKS, with_pro=True)
    assert list(out) == ["Image_AUROC", "Pixel_AUROC", "PRO_score"]
    assert out["Image_AUROC"] == 1.0
    assert out["Pixel_AUROC"] == pytest.approx(brute_auroc(PRO_MAPS.ravel(), PRO_MASKS.ravel()), abs=1e-12)
    assert out["PRO_score"] == pytest.approx(49 / 72, abs=1e-12)
    out = compute_metrics(image_scores, np.array([1, 0]), PRO_MAPS, PRO_MASKS, with_pro=False)
    assert math.isnan(out["PRO_score"]) and out["Image_AUROC"] == 1.0


def test_compute_metrics_all_good_test_set_gives_nan():
    maps = np.random.default_rng(3).random((3, 4, 4)).astype(np.float32)
    out = compute_metrics(np.array([0.1, 0.2, 0.3]), np.zeros(3), maps, np.zeros((3, 4, 4)), True)
    assert all(math.isnan(v) for v in out.values())


def test_compute_metrics_still_raises_on_bad_input():
    with pytest.raises(ValueError, match="image scores"):
        compute_metrics(np.array([0.1]), np.array([1]), PRO_MAPS, PRO_MASKS, True)
    with pytest.raises(ValueError, match="same shape"):
        compute_metrics(np.array([0.1, 0.2]), np.array([1, 0]), PRO_MAPS, PRO_MASKS[:, :2], True)
