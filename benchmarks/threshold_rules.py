"""The old threshold rule against the new one, pure defaults otherwise: false-reject rate on the test
good images, miss rate on the defective ones, image AUROC, fit and total train.py time, and the
threshold each rule placed with the false-reject rate it expects.

  python benchmarks/threshold_rules.py --pretrained /tmp/mnv2.pdparams --save_path /tmp/rules \
      [--mvtec ../shared/data/mvtec --category bottle --mvtec_seeds 0] [--cases CASE ...] [--seeds 0 1 2]

Old rule: `--val_ratio 0.1` (the default before: a tenth of train/good held out, threshold at the
0.99 quantile of their scores, in effect their maximum). New rule: the defaults (`--val_ratio 0`,
leave-own-image-out scores of every training image, threshold at the 1% false-reject target).

Data: MVTec bottle if given (MVTec protocol 256 -> 224), and generated categories (CASES), one
per seed (the seed draws the images, the held-out split and the coreset's start), inspected whole
at their own size (`--resize auto:N`, the README's advice for own parts):

* rare_highlights: 300 training images of a uniform surface, 200 good + 40 test images with small
  dark spots 15 grey levels deep; each good image carries a one-off specular highlight with
  probability 1/150 (rare good outliers, scoring above the spots; datasets.line_cases);
* rare_highlight_rods: the same with 96 x 240 rods and thin scratches 20 grey levels bright
  (datasets.synthetic);
* outlier_surface, faint_spots, rods: the earlier cases (100 / 100 / 40 training images, a soft
  glare on 3% of the good surfaces), at the MVTec protocol geometry.

The `outliers` column counts the good outliers (train / of them held out / test good) from the
generator's marker file. Every run is train.py --eval in its own process (`train_seconds` includes
the calibration, `fit_seconds` is train.py's own column). Prints one table, saves threshold_rules.csv.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from typing import Callable, NamedTuple

from tqdm import tqdm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from utils.runtime import configure_environment  # noqa: E402
configure_environment()   # the BLAS / OpenMP threading environment, before NumPy and Paddle load

from datasets.line_cases import generate_outlier_surface_category  # noqa: E402
from datasets.mvtec import held_out_split  # noqa: E402
from datasets.synthetic import MARKER_NAME, generate_elongated_category  # noqa: E402
from models.model_file import AnomalyModel  # noqa: E402
from utils.table import print_and_save  # noqa: E402

RULES = {"old (held out 0.1)": ("--val_ratio", "0.1"), "new (own image out)": ()}
OLD_VAL_RATIO = 0.1
COLUMNS = ("data", "rule", "seed", "outliers", "threshold", "expected_false_reject", "false_reject_rate",
           "miss_rate", "Image_AUROC", "fit_seconds", "train_seconds")
MEANS = COLUMNS[5:]
RARE = 1 / 150


class Case(NamedTuple):
    """A generated category: how to write it (root, category, seed) and train.py's geometry for it."""
    make: Callable[[str, str, int], object]
    geometry: tuple[str, ...]
    per_seed: bool = True       # False: the images are drawn once (seed 0), only the split and coreset vary


CASES = {
    "rare_highlights": Case(lambda root, name, seed: generate_outlier_surface_category(
        root, name, n_train=300, n_test_good=200, n_test_defect=40, outlier_rate=RARE, outlier_kind="highlight",
        contrast=15, seed=seed), ("--resize", "auto:128")),
    "rare_highlight_rods": Case(lambda root, name, seed: generate_elongated_category(
        root, name, n_train=300, n_test_good=200, n_test_defect=40, height=96, contrast=20, outlier_rate=RARE,
        seed=seed), ("--resize", "auto:96")),
    "outlier_surface": Case(lambda root, name, seed: generate_outlier_surface_category(root, name), (), False),
    "faint_spots": Case(lambda root, name, seed: generate_outlier_surface_category(root, name, contrast=8), (), False),
    "rods": Case(lambda root, name, seed: generate_elongated_category(
        root, name, n_train=40, n_test_good=40, n_test_defect=20, height=96, contrast=35), (), False),
}
DEFAULT_CASES = ("rare_highlights", "rare_highlight_rods")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrained", required=True, help="backbone weights (e.g. the converted MobileNetV2)")
    parser.add_argument("--arch", default="mobilenet_v2")
    parser.add_argument("--save_path", required=True)
    parser.add_argument("--mvtec", default=None, help="an MVTec root holding --category (skipped if not given)")
    parser.add_argument("--category", default="bottle")
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(DEFAULT_CASES),
                        help="generated cases (default: %(default)s)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the generated cases")
    parser.add_argument("--mvtec_seeds", type=int, nargs="+", default=[0], help="seeds of the MVTec category")
    return parser.parse_args()


class Job(NamedTuple):
    root: str
    category: str          # the folder train.py reads
    data: str              # the table's name for it
    seed: int
    geometry: tuple[str, ...]


def generated_jobs(root: str, names: list[str], seeds: list[int]) -> list[Job]:
    """The generated categories (written under root once, skipped when present), one per case and seed."""
    jobs = []
    for name in names:
        case = CASES[name]
        for seed in seeds:
            category = f"{name}_{seed}" if case.per_seed else name
            if not os.path.isdir(os.path.join(root, category)):
                case.make(root, category, seed if case.per_seed else 0)
            jobs.append(Job(root, category, name, seed, case.geometry))
    return jobs


def outlier_counts(job: Job, rule: tuple[str, ...]) -> str:
    """"train/held out/test" good outliers from the generator's marker ("-": none recorded or none held out)."""
    marker = os.path.join(job.root, job.category, MARKER_NAME)
    listed = json.load(open(marker)).get("outliers") if os.path.isfile(marker) else None
    if listed is None:
        return "-"
    train = sorted(os.listdir(os.path.join(job.root, job.category, "train", "good")))
    held = "-"
    if rule:
        held_indices = held_out_split(len(train), OLD_VAL_RATIO, job.seed)[1]
        held = str(sum(train[i] in listed["train/good"] for i in held_indices))
    return f"{len(listed['train/good'])}/{held}/{len(listed['test/good'])}"


def run(job: Job, rule: tuple[str, ...], args: argparse.Namespace, out: str) -> dict:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--data_path", job.root,
                           "--category", job.category, "--arch", args.arch, "--pretrained", args.pretrained,
                           "--seed", str(job.seed), "--eval", "--no_progress", "--save_path", out, *job.geometry, *rule],
                          capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"error: train.py failed on {job.category}: {done.stderr.strip().splitlines()[-1]}")
    with open(os.path.join(out, "train_results.csv")) as f:
        row = next(csv.DictReader(f))
    calibration = AnomalyModel.load(os.path.join(out, f"{job.category}.pdparams")).calibration
    return {"outliers": outlier_counts(job, rule), "threshold": calibration["image_threshold"],
            "expected_false_reject": calibration.get("expected_false_reject", float("nan")),
            **{c: float(row[c]) for c in ("false_reject_rate", "miss_rate", "Image_AUROC", "fit_seconds")},
            "train_seconds": seconds}


def main() -> int:
    args = parse_args()
    jobs = generated_jobs(os.path.join(args.save_path, "data"), args.cases, args.seeds)
    if args.mvtec:
        jobs = [Job(args.mvtec, args.category, args.category, seed, ()) for seed in args.mvtec_seeds] + jobs
    runs = [(job, name) for job in jobs for name in RULES]
    rows = []
    for job, name in tqdm(runs, desc="train.py runs", unit="run"):
        out = os.path.join(args.save_path, "runs", f"{job.category}_{name.split()[0]}_{job.seed}")
        rows.append({"data": job.data, "rule": name, "seed": job.seed, **run(job, RULES[name], args, out)})
    for data in dict.fromkeys(r["data"] for r in rows):
        for name in RULES:
            mine = [r for r in rows if r["data"] == data and r["rule"] == name]
            rows.append({"data": data, "rule": name, "seed": "mean", "outliers": "", "threshold": "",
                         **{c: sum(r[c] for r in mine) / len(mine) for c in MEANS}})
    print_and_save(rows, COLUMNS, os.path.join(args.save_path, "threshold_rules.csv"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
