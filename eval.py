"""Evaluate saved models (PatchCore or PaDiM, as trained) on the test split of each category.

Example: python eval.py --data_path ROOT --category bottle --save_path output --eval_PRO --save_pic
"""
from __future__ import annotations

import utils  # noqa: F401  (first: sets the BLAS threading environment before NumPy loads)

import argparse
import os

from datasets.mvtec import resolve_categories
from models.model_file import PatchCoreModel
from models.patchcore import rebuild_extractor
from utils.cli import add_data_args, add_eval_args
from utils.config import ARCHS
from utils.engine import METRIC_COLUMNS, evaluate, model_path, report
from utils.errors import PatchCoreError, run_cli
from utils.io import ensure_writable_dir


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(parser, preprocessing=False)
    add_eval_args(parser)
    parser.add_argument("--model_dir", default=None, help="folder of <category>.pdparams (default: --save_path)")
    parser.add_argument("--arch", default=None, choices=ARCHS, help="refuse models trained with another arch")
    parser.add_argument("--pretrained", default=None, help="override where the backbone weights come from")
    parser.add_argument("--save_pic", action="store_true", help="save a figure per test image")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    categories = resolve_categories(args.data_path, args.category)
    model_dir = args.model_dir or args.save_path
    paths = {c: model_path(model_dir, c) for c in categories}
    missing = [p for p in paths.values() if not os.path.isfile(p)]
    if missing:
        raise PatchCoreError(f"no trained model {missing[0]}: run train.py for that category first")
    ensure_writable_dir(args.save_path)
    rows = []
    for category, path in paths.items():
        model = PatchCoreModel.load(path)
        model.check_arch(args.arch)
        extractor = rebuild_extractor(model, args.pretrained)
        row, _ = evaluate(model, extractor, args.data_path, args.batch_size, args.eval_PRO, args.save_path,
                          args.save_pic, progress=not args.no_progress)
        rows.append(row)
    report(rows, ("category",) + METRIC_COLUMNS, os.path.join(args.save_path, "eval_results.csv"))
    return 0


if __name__ == "__main__":
    run_cli(main)
