"""The leave-own-image-out threshold as the tail fit placed it before the rare-outlier change and as
it does now, on the same calibration scores and the same test scores.

  python benchmarks/tail_fit_before_after.py --runs /tmp/rules/bench --pretrained /tmp/rules/mnv2.pdparams \
      [--before 8552541^]

For every generated category of a finished `benchmarks/threshold_rules.py --save_path RUNS` run:
train.py's new-rule fit again (same seed and geometry, in a child process that keeps the
leave-own-image-out scores of the training images), then models/calibration.py as of git revision
--before (the estimator with the mean excess and the gap's middle) and as now place the 1% threshold
on those scores, and the new-rule run's test scores (the bank does not depend on the threshold)
give each one's false-reject and miss rate. Prints one table, saves tail_fit_before_after.csv.
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import runpy
import subprocess
import sys
import tempfile

import numpy as np
from tqdm import tqdm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.threshold_rules import CASES  # noqa: E402
from models import calibration  # noqa: E402
from utils.table import print_and_save  # noqa: E402

COLUMNS = ("data", "seed", "threshold_before", "false_reject_before", "miss_before", "threshold_now",
           "outliers_left_out", "expected_false_reject_now", "false_reject_now", "miss_now")
TARGET = 0.01


def capture(scores_path: str, train_args: list[str]) -> None:
    """(child process) train.py with the calibration scores saved to `scores_path`."""
    import engine.calibration_rule as rule
    calibrate_good = rule.calibrate_good

    def keeping(scores, *args, **kwargs):
        np.save(scores_path, scores)
        return calibrate_good(scores, *args, **kwargs)

    rule.calibrate_good = keeping
    sys.argv = ["train.py", *train_args]
    runpy.run_path(os.path.join(ROOT, "train.py"), run_name="__main__")


def module_at(revision: str, folder: str):
    """models/calibration.py as of `revision`, imported from a temporary copy."""
    path = os.path.join(folder, "calibration_before.py")
    text = subprocess.run(["git", "show", f"{revision}:models/calibration.py"], capture_output=True, text=True,
                          cwd=ROOT, check=True).stdout
    with open(path, "w") as f:
        f.write(text)
    spec = importlib.util.spec_from_file_location("calibration_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_scores(path: str) -> tuple[np.ndarray, np.ndarray]:
    with open(path) as f:
        rows = list(csv.DictReader(f))
    scores = np.array([float(r["image_score"]) for r in rows])
    labels = np.array([int(r["label"]) for r in rows])
    return scores[labels == 0], scores[labels == 1]


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--capture":
        capture(sys.argv[2], sys.argv[3:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", required=True, help="the --save_path of a finished threshold_rules.py run")
    parser.add_argument("--pretrained", required=True)
    parser.add_argument("--arch", default="mobilenet_v2")
    parser.add_argument("--before", default="8552541^", help="git revision of the estimator before")
    args = parser.parse_args()
    data_root = os.path.join(args.runs, "data")
    per_seed = {name for name, case in CASES.items() if case.per_seed}
    categories = sorted(c for c in os.listdir(data_root) if c.rsplit("_", 1)[0] in per_seed)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        before = module_at(args.before, folder)
        for category in tqdm(categories, desc="fits", unit="fit"):
            case, seed = category.rsplit("_", 1)
            scores_path = os.path.join(folder, f"{category}.npy")
            subprocess.run([sys.executable, os.path.abspath(__file__), "--capture", scores_path,
                            "--data_path", data_root, "--category", category, "--arch", args.arch,
                            "--pretrained", args.pretrained, "--seed", seed, "--no_progress",
                            "--save_path", os.path.join(folder, category), *CASES[case].geometry],
                           capture_output=True, check=True, cwd=ROOT)
            loo = np.load(scores_path)
            good, defective = test_scores(os.path.join(args.runs, "runs", f"{category}_new_{seed}",
                                                       f"{category}_test_scores.csv"))
            maps = np.zeros((len(loo), 1, 1))
            old = before.calibrate_good(loo, maps, TARGET, 0.001, "")["image_threshold"]
            new = calibration.calibrate_good(loo, maps, TARGET, 0.001, "")
            tail = calibration.fit_tail(loo)
            rows.append({"data": case, "seed": int(seed), "threshold_before": old,
                         "false_reject_before": float(np.mean(good >= old)),
                         "miss_before": float(np.mean(defective < old)),
                         "threshold_now": new["image_threshold"], "outliers_left_out": tail.outliers if tail else 0,
                         "expected_false_reject_now": new["expected_false_reject"],
                         "false_reject_now": float(np.mean(good >= new["image_threshold"])),
                         "miss_now": float(np.mean(defective < new["image_threshold"]))})
    print_and_save(rows, COLUMNS, os.path.join(args.runs, "tail_fit_before_after.csv"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
