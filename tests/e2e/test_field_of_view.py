"""Full field of view (issue 28 item 4): defects in the band a 256 -> 224 centre crop discards are
found with the own-data default (--resize auto: no crop) and missed with the crop, which warns."""
import csv

from datasets.line_cases import generate_border_category
from helpers import run_script


def _train(root, out, converted_mobilenet, *geometry):
    done = run_script("train.py", "--data_path", str(root), "--category", "border_fabric", "--arch", "mobilenet_v2",
                      "--pretrained", str(converted_mobilenet), "--k", "25", "--eval", "--no_progress",
                      "--save_path", str(out), *geometry)
    assert done.returncode == 0, done.stderr
    with open(out / "train_results.csv") as f:
        return next(csv.DictReader(f)), done.stderr


def test_border_defects_are_found_without_the_crop_and_missed_with_it(converted_mobilenet, tmp_path):
    root = tmp_path / "data"
    generate_border_category(root, n_train=8, n_test_good=3, n_test_defect=5, image_size=128)
    whole, stderr = _train(root, tmp_path / "whole", converted_mobilenet, "--resize", "auto:128")
    assert "warning" not in stderr
    cropped, stderr = _train(root, tmp_path / "crop", converted_mobilenet, "--resize", "128", "--crop_size", "112")
    warnings = [line for line in stderr.splitlines() if line.startswith("warning: border_fabric:")]
    assert len(warnings) == 1 and "discards 23.4% of every image" in warnings[0] and "--crop_size none" in warnings[0]
    assert float(whole["miss_rate"]) == 0.0 and float(whole["Image_AUROC"]) > 0.95
    assert float(cropped["miss_rate"]) == 1.0 and float(cropped["Image_AUROC"]) < 0.8
