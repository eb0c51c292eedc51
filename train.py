"""Fit a model per category (and optionally evaluate it on the test split).

--method coreset (PatchCore, the default) keeps a memory bank of --k percent of the training patches;
--method padim fits a Gaussian per patch position on --k randomly chosen channels.

Example: python train.py --data_path ROOT --category bottle --arch mobilenet_v2 --k 10 --eval --eval_PRO
         python train.py --data_path ROOT --category bottle --method padim --arch resnet18 --k 100 --eval
"""
from __future__ import annotations

import argparse

from engine.cli import add_data_args, add_eval_args, add_model_args, config_from_args, run_cli, script_parser, select_device
from engine.trainer import train, update


def parse_args() -> argparse.Namespace:
    parser = script_parser(__doc__)
    add_data_args(parser)
    add_model_args(parser)
    add_eval_args(parser)
    parser.add_argument("--eval", action="store_true", help="evaluate each category after fitting it")
    parser.add_argument("--update", metavar="MODEL", default=None,
                        help="add the good images of --data_path (an MVTec tree with --category, or a plain folder) "
                             "to this trained PatchCore model with its own settings; writes "
                             "<save_path>/<category>.pdparams (it may replace MODEL)")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    backend = select_device(args.device)
    if args.update:
        # The model's own weights unless --pretrained names others (e.g. the same file elsewhere).
        update(args.update, args.data_path, None if args.category == "all" else args.category, args.save_path,
               args.batch_size, args.eval, args.eval_PRO, args.pretrained, progress=not args.no_progress, backend=backend)
        return 0
    train(config_from_args(args), args.data_path, args.category, args.save_path, args.batch_size, args.eval,
          args.eval_PRO, progress=not args.no_progress, backend=backend)
    return 0


if __name__ == "__main__":
    run_cli(main)
