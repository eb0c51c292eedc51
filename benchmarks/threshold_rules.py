"""The old threshold rule against the new one, pure defaults otherwise: false-reject rate on the test
good images, miss rate on the defective ones, image AUROC, fit and total train.py time.

  python benchmarks/threshold_rules.py --pretrained /tmp/mnv2.pdparams --save_path /tmp/rules \
      [--mvtec ../shared/data/mvtec --category bottle --mvtec_seeds 0] [--seeds 0 1 2]

Old rule: `--val_ratio 0.1` (the default before: a tenth of train/good held out, threshold at the
0.99 quantile of their scores, in effect their maximum). New rule: the defaults (`--val_ratio 0`,
leave-own-image-out scores of every training image, threshold at the 1% false-reject target).
Data: MVTec bottle if given, and generated categories written under SAVE_PATH/data: a uniform
surface with rare good outliers (a harmless glare on 3% of the good images; datasets.line_cases),
the same with faint spots (8 grey levels instead of 25) and elongated rods with thin scratches
(datasets.synthetic). Every run is train.py --eval in its own
process (so `train_seconds` includes the calibration, `fit_seconds` is train.py's own column); each
seed changes the held-out split and the coreset's start. Prints one table, saves threshold_rules.csv.
"""
from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time

from tqdm import tqdm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from utils.runtime import configure_environment  # noqa: E402
configure_environment()   # the BLAS / OpenMP threading environment, before NumPy and Paddle load

from datasets.line_cases import generate_outlier_surface_category  # noqa: E402
from datasets.synthetic import generate_elongated_category  # noqa: E402
from utils.table import format_table, write_csv  # noqa: E402

RULES = {"old (held out 0.1)": ("--val_ratio", "0.1"), "new (own image out)": ()}
COLUMNS = ("data", "rule", "seed", "false_reject_rate", "miss_rate", "Image_AUROC", "fit_seconds", "train_seconds")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrained", required=True, help="backbone weights (e.g. the converted MobileNetV2)")
    parser.add_argument("--arch", default="mobilenet_v2")
    parser.add_argument("--save_path", required=True)
    parser.add_argument("--mvtec", default=None, help="an MVTec root holding --category (skipped if not given)")
    parser.add_argument("--category", default="bottle")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the generated cases")
    parser.add_argument("--mvtec_seeds", type=int, nargs="+", default=[0], help="seeds of the MVTec category")
    return parser.parse_args()


def generated_data(root: str) -> list[tuple[str, str]]:
    """(data root, category) of the generated cases, written once."""
    cases = [("outlier_surface", lambda: generate_outlier_surface_category(root, "outlier_surface")),
             ("faint_spots", lambda: generate_outlier_surface_category(root, "faint_spots", contrast=8)),
             ("rods", lambda: generate_elongated_category(root, "rods", n_train=40, n_test_good=40,
                                                          n_test_defect=20, height=96, contrast=35))]
    for category, make in cases:
        if not os.path.isdir(os.path.join(root, category)):
            make()
    return [(root, category) for category, _ in cases]


def run(root: str, category: str, rule: tuple[str, ...], seed: int, args: argparse.Namespace, out: str) -> dict:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--data_path", root, "--category", category,
                           "--arch", args.arch, "--pretrained", args.pretrained, "--seed", str(seed), "--eval",
                           "--no_progress", "--save_path", out, *rule], capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"error: train.py failed on {category}: {done.stderr.strip().splitlines()[-1]}")
    with open(os.path.join(out, "train_results.csv")) as f:
        row = next(csv.DictReader(f))
    return {**{c: float(row[c]) for c in ("false_reject_rate", "miss_rate", "Image_AUROC", "fit_seconds")},
            "train_seconds": seconds}


def main() -> int:
    args = parse_args()
    data = [(root, category, args.seeds) for root, category in generated_data(os.path.join(args.save_path, "data"))]
    if args.mvtec:
        data.insert(0, (args.mvtec, args.category, args.mvtec_seeds))
    jobs = [(root, category, name, seed) for root, category, seeds in data for seed in seeds for name in RULES]
    rows = []
    for root, category, name, seed in tqdm(jobs, desc="train.py runs", unit="run"):
        out = os.path.join(args.save_path, "runs", f"{category}_{name.split()[0]}_{seed}")
        rows.append({"data": category, "rule": name, "seed": seed, **run(root, category, RULES[name], seed, args, out)})
    for category in dict.fromkeys(r["data"] for r in rows):
        for name in RULES:
            mine = [r for r in rows if r["data"] == category and r["rule"] == name]
            rows.append({"data": category, "rule": name, "seed": "mean",
                         **{c: sum(r[c] for r in mine) / len(mine) for c in COLUMNS[3:]}})
    path = os.path.join(args.save_path, "threshold_rules.csv")
    write_csv(path, rows, COLUMNS)
    print(format_table(rows, COLUMNS))
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
