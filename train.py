"""Fit a model per category (and optionally evaluate it on the test split).

--method patchcore (the default; "coreset" is the same method) keeps a memory bank of --k percent
of the training patches; --method padim fits a Gaussian per patch position on --k randomly chosen channels.

Example: python train.py --data_path ROOT --category bottle --arch mobilenet_v2 --k 10 --eval --eval_PRO
         python train.py --data_path ROOT --category bottle --method padim --arch resnet18 --k 100 --eval
"""
from __future__ import annotations

import argparse

from utils.runtime import prepare_process

# First, before NumPy and Paddle load (no import does it): thread settings, quiet glog, one-line Ctrl-C.
prepare_process()

from engine.cli import (add_data_args, auto_geometry, add_eval_args, add_model_args, config_from_args, fixed_options,
                        refuse_source_package, run_cli, run_settings, script_parser)


def build_parser() -> argparse.ArgumentParser:
    parser = script_parser(__doc__)
    add_data_args(parser)
    add_model_args(parser)
    add_eval_args(parser)
    parser.add_argument("--eval", action="store_true", help="evaluate each category after fitting it")
    parser.add_argument("--update", metavar="MODEL", default=None,
                        help="add the good images of --data_path (an MVTec tree with --category, or a plain folder) "
                             "to this trained model with its own settings (options that differ from them are "
                             "refused); writes <save_path>/<category>.pdparams (it may replace MODEL)")
    return parser


def main() -> int:
    parser = build_parser()
    args = parser.parse_args()
    refuse_source_package(args.save_path, "--save_path")
    # Paddle loads here, after parsing: -h and usage errors answer at once.
    from engine.distributed import quiet_launched_worker
    from engine.trainer import train
    from engine.updater import update

    quiet_launched_worker()   # a launched worker stopped by the launcher prints its one line, no C++ stack

    if args.update:
        # The model's own weights unless --pretrained names others (e.g. the same file elsewhere).
        update(args.update, run_settings(args, category=None if args.category == "all" else args.category,
                                         run_eval=args.eval, fixed_options=fixed_options(parser, args)))
        return 0
    train(config_from_args(args), run_settings(args, run_eval=args.eval, auto_geometry=auto_geometry(args)))
    return 0


if __name__ == "__main__":
    run_cli(main)
