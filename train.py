"""Fit a model per category (and optionally evaluate it on the test split).

--method coreset (PatchCore, the default) keeps a memory bank of --k percent of the training patches;
--method padim fits a Gaussian per patch position on --k randomly chosen channels.

Example: python train.py --data_path ROOT --category bottle --arch mobilenet_v2 --k 10 --eval --eval_PRO
         python train.py --data_path ROOT --category bottle --method padim --arch resnet18 --k 100 --eval
"""
from __future__ import annotations

import utils  # noqa: F401  (first: sets the BLAS threading environment before NumPy loads)

import argparse
import os

from datasets.mvtec import resolve_categories
from utils.cli import add_data_args, add_eval_args, add_model_args, config_from_args
from utils.engine import METRIC_COLUMNS, SIZE_COLUMNS, report, train_category
from utils.errors import run_cli
from utils.io import ensure_writable_dir


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(parser)
    add_model_args(parser)
    add_eval_args(parser)
    parser.add_argument("--eval", action="store_true", help="evaluate each category after fitting it")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    config = config_from_args(args)
    categories = resolve_categories(args.data_path, args.category)
    ensure_writable_dir(args.save_path)
    rows = [train_category(config, args.data_path, category, args.save_path, args.batch_size,
                           args.eval, args.eval_PRO, progress=not args.no_progress)
            for category in categories]
    columns = ("category",) + (METRIC_COLUMNS if args.eval else ()) + ("fit_seconds", SIZE_COLUMNS[config.model.method])
    report(rows, columns, os.path.join(args.save_path, "train_results.csv"))
    return 0


if __name__ == "__main__":
    run_cli(main)
