"""Score images with a trained model on the dynamic graph: score, decision and a figure per image.

Example: python predict.py path/to/image.png --category bottle --save_path output/predict
"""
from __future__ import annotations

import argparse

from utils.runtime import prepare_process

# First, before NumPy and Paddle load (no import does it): thread settings, quiet glog, one-line Ctrl-C.
prepare_process()

from deploy.cli import add_batch_size_arg, add_decision_args, run_cli, scoring_run, script_parser
from engine.cli import add_device_arg, select_device


def parse_args() -> argparse.Namespace:
    parser = script_parser(__doc__)
    parser.add_argument("input", help="an image file or a folder of images")
    parser.add_argument("--category", default=None, help="use <--model_dir>/<category>.pdparams")
    parser.add_argument("--model_dir", default="output")
    parser.add_argument("--model_path", default=None, help="a <category>.pdparams written by train.py")
    parser.add_argument("--pretrained", default=None, help="override where the backbone weights come from")
    parser.add_argument("--save_path", default="output/predict")
    add_batch_size_arg(parser)
    add_decision_args(parser)
    add_device_arg(parser)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    # Paddle loads here, after parsing: -h and usage errors answer at once.
    from deploy.batch_scoring import ScoringOptions, collect_images, run_inference
    from engine.pipeline import dynamic_embedder, load_model

    # One BLAS thread for the scorer (ScoringOptions' default): the network is Paddle's dynamic graph.
    scoring = ScoringOptions(select_device(args.device))
    model = load_model(args.model_path, args.model_dir, args.category)
    failed = run_inference(collect_images(args.input), model, lambda: dynamic_embedder(model, args.pretrained),
                           scoring_run(args, scoring))
    # Some images could not be scored: their rows say why, and the exit code tells scripts.
    return 2 if failed else 0


if __name__ == "__main__":
    run_cli(main)
