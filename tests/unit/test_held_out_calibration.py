"""Thresholds from good images only: the held-out split and the quantile rule."""
import numpy as np
import pytest

from datasets.mvtec import held_out_split
from models.calibration import calibrate_held_out


@pytest.mark.parametrize("n, ratio, held", [(200, 0.1, 20), (9, 0.1, 1), (1, 0.5, 0), (10, 0.0, 0), (5, 0.99, 4)])
def test_split_sizes_and_disjoint(n, ratio, held):
    fitted, held_out = held_out_split(n, ratio, seed=3)
    assert len(held_out) == held and sorted(fitted + held_out) == list(range(n))
    assert fitted == sorted(fitted) and held_out == sorted(held_out)


def test_split_is_seeded():
    assert held_out_split(100, 0.2, 1) == held_out_split(100, 0.2, 1)
    assert held_out_split(100, 0.2, 1) != held_out_split(100, 0.2, 2)


def test_quantile_thresholds_flag_at_most_the_asked_fraction():
    rng = np.random.default_rng(0)
    scores = rng.random(200)
    maps = rng.random((200, 8, 8))
    cal = calibrate_held_out(scores, maps, max_false_reject=0.05, pixel_false_reject=0.01)
    assert np.mean(scores >= cal["image_threshold"]) <= 0.05 + 1 / 200
    assert np.mean(scores > cal["image_threshold"]) <= 0.05
    assert np.mean(maps > cal["pixel_threshold"]) <= 0.01
    assert cal["image_threshold"] not in scores                 # between scores, never on one
    assert cal["image_margin"] > 0
    assert "200 held-out good images" in cal["image_rule"]


def test_few_images_and_a_small_rate_give_their_maximum():
    scores = np.array([1.0, 3.0, 2.0])
    cal = calibrate_held_out(scores, np.zeros((3, 2, 2)), max_false_reject=0.01, pixel_false_reject=0.001)
    assert cal["image_threshold"] == 2.5          # the old rule flags their maximum: just below it, between scores
