"""Thresholds between the classes (never on a score), the tail estimator, leave-own-image-out scores."""
import numpy as np
import pytest

from models.calibration import (MARGIN_FRACTION, MIN_TAIL_SCORES, between_scores, calibrate, calibrate_good,
                                decision_margin, false_reject_quantile, fit_tail)
from models.knn import MemoryBank
from models.padim.own_image_out import own_image_out_distances
from models.patchcore.own_image_out import nearest_excluding, own_image_out_scores
from models.patchcore.scorer import PatchCoreScorer


def test_labelled_threshold_is_the_midpoint_between_the_classes():
    scores = np.array([1.0, 2.0, 3.0, 3.5, 5.0])
    cal = calibrate(scores, np.zeros((5, 2, 2)), np.array([0, 0, 0, 1, 1]))
    assert cal["image_threshold"] == 3.25 and cal["image_margin"] == 0.25


def test_overlapping_classes_keep_the_f1_decisions_with_a_margin():
    scores = np.array([1.0, 2.0, 4.0, 3.0, 5.0])
    labels = np.array([0, 0, 0, 1, 1])
    cal = calibrate(scores, np.zeros((5, 2, 2)), labels)
    assert cal["image_threshold"] == 2.5                 # below the lowest defect, in the gap under it
    assert decision_margin(cal["image_threshold"], scores) == 0.5


@pytest.mark.parametrize("middle", [True, False])
def test_placement_never_lands_on_a_score(middle):
    rng = np.random.default_rng(0)
    scores = rng.random(50)
    gaps = np.diff(np.sort(scores))
    for estimate in [*scores, scores.max() + 1e-9, 0.5]:
        placed = between_scores(estimate, scores, middle)
        assert decision_margin(placed, scores) >= 0.999 * min(gaps.min() / 2, 1e-3 * np.ptp(scores))
        # the calibration images' decisions are those of the estimate (or it sits above them all)
        assert (np.sum(scores >= placed) == np.sum(scores >= estimate)) or placed > scores.max()


def test_empirical_quantile_with_many_scores_and_fitted_tail_with_few():
    rng = np.random.default_rng(1)
    many = rng.exponential(1.0, 5000)
    estimate, rate, how = false_reject_quantile(many, 0.01)
    assert "empirical" in how and abs(np.mean(many >= estimate) - 0.01) < 0.002
    few = rng.exponential(1.0, 200)          # 200 * 1% = 2 scores above: too few, the tail is fitted
    estimate, rate, how = false_reject_quantile(few, 0.01)
    assert 200 * 0.01 < MIN_TAIL_SCORES and "exponential tail" in how
    assert abs(estimate - np.log(100)) < 1.2   # the true 0.99 quantile of Exp(1) is ln 100 = 4.6


def _bulk_with_rare_outliers(rng: np.random.Generator, n: int, outliers: int) -> np.ndarray:
    """Typical good scores (1 + an exponential tail of scale 0.05) and a few one-off goods far above."""
    scores = 1 + rng.exponential(0.05, n)
    scores[:outliers] = rng.uniform(2.5, 4.0, outliers)
    return scores


def test_rare_good_outliers_do_not_lift_the_threshold_above_the_defects():
    """3 one-off goods among 300 (1%, their excesses ~30 scales) once multiplied the fitted tail's
    scale and the gap's middle carried the threshold to ~2 (every defect at 1.4-2.4 below it would
    pass). Now they are left out of the fit, counted as rejects of their own, and the threshold
    holds the 1% target on the typical goods: 1 + 0.05 ln 100 = 1.23."""
    rng = np.random.default_rng(6)
    scores = _bulk_with_rare_outliers(rng, 300, 3)
    tail = fit_tail(scores)
    assert tail.outliers == 3 and abs(tail.beta - 0.05) < 0.02
    cal = calibrate_good(scores, np.zeros((300, 2, 2)), 0.01, 0.001, "test scores")
    threshold = cal["image_threshold"]
    assert abs(threshold - (1 + 0.05 * np.log(100))) < 0.1
    assert "3 of them beyond the tail" in cal["image_rule"]
    # unseen good parts from the same source (typical ones and the same 1% of one-offs)
    fresh = _bulk_with_rare_outliers(rng, 100_000, 1000)
    measured = np.mean(fresh >= threshold)
    assert abs(measured - 0.02) < 0.01 and abs(cal["expected_false_reject"] - 0.02) < 0.01
    assert np.mean(rng.uniform(1.4, 2.4, 1000) >= threshold) == 1.0


def test_a_wide_gap_does_not_carry_the_good_only_threshold_to_its_middle():
    scores = np.array([1.0, 1.1, 1.2, 3.0])
    placed = between_scores(1.25, scores, middle=False)
    assert placed == 1.25 and between_scores(1.25, scores) == 2.1
    floor = MARGIN_FRACTION * 3.0
    assert between_scores(1.2 + 1e-9, scores, middle=False) == pytest.approx(1.2 + floor)


def test_good_only_calibration_records_its_facts():
    rng = np.random.default_rng(2)
    scores = rng.normal(10, 1, 300)
    cal = calibrate_good(scores, rng.random((300, 4, 4)), 0.01, 0.001, "test scores")
    assert cal["calibration_images"] == 300 and cal["false_reject_target"] == 0.01
    assert abs(cal["expected_false_reject"] - 0.01) < 0.005
    assert cal["image_margin"] == decision_margin(cal["image_threshold"], scores) > 0


def test_nearest_excluding_matches_a_bank_without_those_entries():
    rng = np.random.default_rng(3)
    features = rng.random((300, 8)).astype(np.float32)
    queries = rng.random((40, 8)).astype(np.float32)
    excluded = np.zeros(300, bool)
    excluded[::3] = True
    dist, index = nearest_excluding(MemoryBank(features), queries, excluded)
    want_dist, want_index = MemoryBank(features[~excluded]).search(queries)
    assert np.array_equal(index, np.flatnonzero(~excluded)[want_index[:, 0]])
    assert np.allclose(dist, want_dist[:, 0], rtol=1e-5)


@pytest.mark.parametrize("image_score", ["max", "reweighted"])
def test_own_image_out_equals_scoring_against_the_bank_of_the_other_images(image_score):
    """k = 100 (every patch an entry): no substitutes are needed, the result is exactly the bank
    of the other images."""
    rng = np.random.default_rng(4)
    features = rng.random((5, 3, 3, 6)).astype(np.float32)           # 5 training images, 9 patches each
    bank = features.reshape(-1, 6)
    entry_images = np.arange(len(bank)) // 9
    scorer = PatchCoreScorer(bank, 12, num_neighbors=3, image_score=image_score, sigma=0)
    got = own_image_out_scores(scorer, entry_images, features, range(5))
    for i in range(5):
        others = PatchCoreScorer(bank[entry_images != i], 12, num_neighbors=3, image_score=image_score, sigma=0)
        want = others(features[i:i + 1].transpose(0, 3, 1, 2))
        assert np.allclose(got.patch_scores[i], want.patch_scores[0], rtol=1e-5)
        assert np.isclose(got.image_scores[i], want.image_scores[0], rtol=1e-5)


def test_a_removed_coreset_entry_is_replaced_by_its_nearest_other_image_patch():
    # Image 0's patch was kept; image 1's near-duplicate of it was not (the coreset covered it).
    features = np.array([[[[0.0, 0.0]], [[5.0, 5.0]]], [[[0.1, 0.0]], [[9.0, 9.0]]]], np.float32)  # [2, 2, 1, 2]
    bank = np.array([[0.0, 0.0], [5.0, 5.0], [9.0, 9.0]], np.float32)
    entry_images = np.array([0, 0, 1])
    scorer = PatchCoreScorer(bank, 4, image_score="max", sigma=0)
    got = own_image_out_scores(scorer, entry_images, features, [0])
    # without the substitute patch (0, 0) would be 9 * sqrt(2) from (9, 9); with it 0.1 from (0.1, 0)
    assert np.isclose(got.patch_scores[0, 0, 0], 0.1, rtol=1e-5)


def test_padim_own_image_out_is_the_mahalanobis_distance_without_the_image():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(30, 3))
    n = len(x)

    def distance(point, sample):
        diff = point - sample.mean(axis=0)
        return float(np.sqrt(diff @ np.linalg.inv(np.cov(sample, rowvar=False)) @ diff))

    in_sample = np.array([distance(p, x) for p in x], dtype=np.float32)
    left_out = np.array([distance(x[i], np.delete(x, i, axis=0)) for i in range(n)])
    assert np.allclose(own_image_out_distances(in_sample, n), left_out, rtol=1e-4)


def test_old_model_files_keep_their_rule():
    from engine.calibration_rule import GOOD_IMAGES, HELD_OUT, OWN_IMAGE_OUT, TEST_SPLIT, calibration_rule
    from engine.settings import RunSettings
    from utils.config import Config

    old = Config.from_dict({"data": {}, "model": {"val_ratio": 0.0}}).model       # no threshold_rule field
    assert old.threshold_rule == ""

    class Images:
        def __init__(self, held):
            self.held_out = [0] * held

    run, run_eval = RunSettings("", ""), RunSettings("", "", run_eval=True)
    assert calibration_rule(old, Images(0), run) == GOOD_IMAGES
    assert calibration_rule(old, Images(0), run_eval) == TEST_SPLIT
    assert calibration_rule(old, Images(2), run) == HELD_OUT
    new = Config.from_dict({"data": {}, "model": {"threshold_rule": "own_image_out"}}).model
    assert calibration_rule(new, Images(0), run_eval) == OWN_IMAGE_OUT
