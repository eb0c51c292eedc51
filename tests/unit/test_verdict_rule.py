"""The one verdict rule (models.thresholds): decide, region_shown, and every user of them agreeing."""
import numpy as np

from deploy.batch_scoring import decision_row
from engine.evaluation import decision_rates
from models.thresholds import Thresholds


def _thresholds() -> Thresholds:
    return Thresholds(image=2.0, pixel=1.0, image_range=(0.0, 4.0))


def test_decide_at_and_around_the_threshold():
    t = _thresholds()
    assert t.decide(2.0) == "anomalous" and t.decide(1.999) == "normal" and t.decide(5.0) == "anomalous"
    assert t.flags(np.array([1.0, 2.0, 3.0])).tolist() == [False, True, True]


def test_region_only_on_anomalous_images():
    t = _thresholds()
    amap = np.zeros((4, 4), np.float32)
    amap[0, 0] = 1.5          # a pixel above the pixel threshold
    assert not t.region_shown(1.5, amap).any()           # OK card: no region although a pixel reaches it
    assert t.region_shown(2.5, amap).sum() == 1
    normal = decision_row("a.png", 1.5, amap, t)
    flagged = decision_row("b.png", 2.5, amap, t)
    assert (normal["decision"], normal["defect_area"]) == ("normal", 0.0)
    assert (flagged["decision"], flagged["defect_area"]) == ("anomalous", 1 / 16)


def test_evaluation_rates_follow_the_same_rule():
    t = _thresholds()
    scores, labels = np.array([1.0, 2.0, 1.9, 3.0]), np.array([0, 0, 1, 1])
    rates = decision_rates(scores, labels, t)
    assert rates == {"false_reject_rate": 0.5, "miss_rate": 0.5}
    assert [t.decide(s) for s in scores] == [decision_row("x", s, np.zeros((2, 2)), t)["decision"] for s in scores]
