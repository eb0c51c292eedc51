"""The export's self-check compares decisions: an engine within the score tolerance that flips one
verdict is refused."""
import numpy as np
import pytest

from engine import export_check
from models.thresholds import Thresholds
from utils.errors import UserError


def test_decision_flips_finds_the_inputs_on_the_other_side():
    t = Thresholds(image=1.0, pixel=0.5, image_range=(0.0, 2.0))
    expected = np.array([0.5, 0.999999, 1.5])
    actual = np.array([0.5, 1.000001, 1.5])           # 2e-6 apart: within any score tolerance
    flips = export_check.decision_flips(t, expected, actual)
    assert flips.tolist() == [1]
    with pytest.raises(UserError, match=r"^export refused: openvino running model\.xml flips the verdict of 1 of 3"):
        export_check.refuse_flips("openvino", "/x/model.xml", flips, expected, actual, t)
    export_check.refuse_flips("paddle", "/x/model.pdmodel", np.array([], int), expected, expected, t)   # no flip: fine
