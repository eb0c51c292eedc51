"""train.py on generated elongated parts: --resize auto stores the parts' aspect in the model; the
square default prints one warning line naming the images' size and the option."""
from __future__ import annotations

from datasets.synthetic import generate_elongated_category
from models.model_file import AnomalyModel
from tests.helpers import run_script

QUICK = ("--arch", "resnet18", "--pretrained", "none", "--k", "25", "--no_progress", "--val_ratio", "0")


def test_auto_geometry_and_the_squash_warning(tmp_path):
    generate_elongated_category(tmp_path / "data", "rod", n_train=4, n_test_good=2, n_test_defect=2, height=64)
    square = run_script("train.py", "--data_path", str(tmp_path / "data"), "--category", "rod", *QUICK,
                        "--resize", "64", "--crop_size", "64", "--save_path", str(tmp_path / "square"))
    assert square.returncode == 0, square.stderr
    warnings = [line for line in square.stderr.splitlines() if line.startswith("warning: rod:")]
    assert len(warnings) == 1 and "160x64" in warnings[0] and "--resize auto (here 64,160)" in warnings[0]
    auto = run_script("train.py", "--data_path", str(tmp_path / "data"), "--category", "rod", *QUICK,
                      "--resize", "auto:64", "--crop_size", "auto:48", "--save_path", str(tmp_path / "auto"),
                      "--eval")
    assert auto.returncode == 0, auto.stderr
    # no squash warning; the explicit crop discards area and says so in one line
    warnings = [line for line in auto.stderr.splitlines() if line.startswith("warning")]
    assert len(warnings) == 1 and "centre crop 48x128 of the 64x160 resize" in warnings[0]
    assert "--crop_size none" in warnings[0]
    data = AnomalyModel.load(str(tmp_path / "auto" / "rod.pdparams")).config.data
    assert data.resize == (64, 160) and data.crop_size == (48, 128)
