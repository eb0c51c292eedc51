"""Evaluate saved models (PatchCore or PaDiM, as trained) on the test split of each category.

Example: python eval.py --data_path ROOT --category bottle --save_path output --eval_PRO --save_pic
"""
from __future__ import annotations

import argparse

from utils.runtime import prepare_process

# First, before NumPy and Paddle load (no import does it): thread settings, quiet glog, one-line Ctrl-C.
prepare_process()

from engine.cli import ARCH_NAMES, add_data_args, add_eval_args, run_cli, run_settings, script_parser


def parse_args() -> argparse.Namespace:
    parser = script_parser(__doc__)
    add_data_args(parser, preprocessing=False)
    add_eval_args(parser)
    parser.add_argument("--model_dir", default=None, help="folder of <category>.pdparams (default: --save_path)")
    parser.add_argument("--arch", default=None, choices=ARCH_NAMES, help="refuse models trained with another arch")
    parser.add_argument("--pretrained", default=None, help="override where the backbone weights come from")
    parser.add_argument("--save_pic", action="store_true",
                        help="save a figure per test image into <save_path>/pics/<category> (replacing that "
                             "folder); the one figures setting: off here unless given, on in predict.py / "
                             "infer.py unless --no_pictures")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    from engine.trainer import evaluate_saved   # Paddle loads after parsing: -h answers at once

    evaluate_saved(run_settings(args, figures=args.save_pic, model_dir=args.model_dir, arch=args.arch))
    return 0


if __name__ == "__main__":
    run_cli(main)
