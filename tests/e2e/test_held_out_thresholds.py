"""Thresholds from good images only (--val_ratio) and the decision rates eval reports at them."""
import csv

from models.model_file import AnomalyModel
from tests.helpers import FAST_TRAIN_ARGS, run_in_process, run_script


def _row(path):
    with open(path) as f:
        return next(csv.DictReader(f))


def test_held_out_images_set_the_thresholds_and_eval_reports_rates(synthetic_root, tmp_path):
    out = tmp_path / "out"
    done = run_script("train.py", "--data_path", str(synthetic_root), "--category", "part", *FAST_TRAIN_ARGS,
                      "--val_ratio", "0.25", "--max_false_reject", "0.1", "--save_path", str(out))
    assert done.returncode == 0, done.stderr
    model = AnomalyModel.load(str(out / "part.pdparams"))
    # 8 good training images: 2 held out of the fit, whose scores place the thresholds.
    assert model.fit_stats["held_out_images"] == 2 and model.fit_stats["train_images"] == 6
    assert model.calibration["image_rule"] == "0.9 quantile of 2 held-out good images"
    assert model.config.model.val_ratio == 0.25

    done = run_script("eval.py", "--data_path", str(synthetic_root), "--category", "part", "--save_path", str(out),
                      "--no_progress")
    assert done.returncode == 0, done.stderr
    row = _row(out / "eval_results.csv")
    scores = {r["path"]: float(r["image_score"]) for r in csv.DictReader(open(out / "part_test_scores.csv"))}
    labels = {r["path"]: int(r["label"]) for r in csv.DictReader(open(out / "part_test_scores.csv"))}
    threshold = model.calibration["image_threshold"]
    good = [s for p, s in scores.items() if labels[p] == 0]
    bad = [s for p, s in scores.items() if labels[p] == 1]
    # The table prints 4 decimals (and the scores CSV rounds them too).
    assert abs(float(row["false_reject_rate"]) - sum(s >= threshold for s in good) / len(good)) < 1e-3
    assert abs(float(row["miss_rate"]) - sum(s < threshold for s in bad) / len(bad)) < 1e-3


def test_val_ratio_zero_keeps_every_image_in_the_fit(synthetic_root, tmp_path):
    done = run_script("train.py", "--data_path", str(synthetic_root), "--category", "part", *FAST_TRAIN_ARGS,
                      "--val_ratio", "0", "--save_path", str(tmp_path))
    assert done.returncode == 0, done.stderr
    model = AnomalyModel.load(str(tmp_path / "part.pdparams"))
    assert model.fit_stats["train_images"] == 8 and "held_out_images" not in model.fit_stats
    c = model.calibration
    assert model.config.model.threshold_rule == "own_image_out"
    assert c["image_rule"].endswith("leave-own-image-out scores of the training images")
    assert c["calibration_images"] == 8 and c["false_reject_target"] == 0.01 and c["image_margin"] > 0
    # one line says where the threshold is, from how many scores, the rate it expects, its margin
    line = next(x for x in done.stdout.splitlines() if x.startswith("part: image threshold"))
    assert "8 calibration scores" in line and "expected false-reject rate 1.00%" in line
    assert f"{c['image_margin']:.4g} from the nearest calibration score" in line


def test_rules_that_cannot_apply_are_refused(synthetic_root, tmp_path):
    for extra, message in ((("--threshold_rule", "held_out"), "val_ratio"),
                           (("--threshold_rule", "test_split"), "needs --eval")):
        done = run_script("train.py", "--data_path", str(synthetic_root), "--category", "part", *FAST_TRAIN_ARGS,
                          *extra, "--save_path", str(tmp_path))
        assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_out_of_range_rates_are_one_line_errors(synthetic_root, tmp_path):
    # Refused while the options are read: in this process (a child process would only add Paddle's import).
    for flag, value in (("--val_ratio", "1"), ("--max_false_reject", "-0.1"), ("--val_ratio", "nan")):
        done = run_in_process("train.py", "--data_path", str(synthetic_root), "--category", "part", *FAST_TRAIN_ARGS,
                          flag, value, "--save_path", str(tmp_path))
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
