"""The export's self-check compares decisions: a runtime within the score tolerance that flips one
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


def test_check_images_from_a_folder_and_refusals(tmp_path):
    from PIL import Image

    from utils.config import DataConfig

    data = DataConfig(resize=32, crop_size=32)
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/1.png", "a/b/2.png"):
        Image.new("RGB", (40, 40), (120, 30, 60)).save(tmp_path / name)
    assert export_check.check_inputs(data, str(tmp_path / "a")).shape == (2 + 2, 3, 32, 32)
    assert export_check.check_inputs(data, str(tmp_path / "a" / "1.png")).shape == (3, 3, 32, 32)
    (tmp_path / "empty").mkdir()
    for bad in ("empty", "missing"):
        with pytest.raises(UserError, match="not an image file or a folder holding images"):
            export_check.check_inputs(data, str(tmp_path / bad))
