"""Score images with a trained model on the dynamic graph: score, decision and a figure per image.

Example: python predict.py path/to/image.png --category bottle --save_path output/predict
"""
from __future__ import annotations

import utils  # noqa: F401  (first: sets the BLAS threading environment before NumPy loads)

import argparse
import os

import paddle

from models.model_file import PatchCoreModel
from models.patchcore import rebuild_extractor
from utils.cli import add_decision_args
from utils.engine import model_path
from utils.errors import PatchCoreError, run_cli
from utils.inference import Thresholds, collect_images, decisions, print_results, save_outputs, score_images


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="an image file or a folder of images")
    parser.add_argument("--category", default=None, help="use <--model_dir>/<category>.pdparams")
    parser.add_argument("--model_dir", default="output")
    parser.add_argument("--model_path", default=None, help="a <category>.pdparams written by train.py")
    parser.add_argument("--pretrained", default=None, help="override where the backbone weights come from")
    parser.add_argument("--save_path", default="output/predict")
    parser.add_argument("--batch_size", type=int, default=1)
    add_decision_args(parser)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if not args.model_path and not args.category:
        raise PatchCoreError("give --model_path or --category")
    path = args.model_path or model_path(args.model_dir, args.category)
    model = PatchCoreModel.load(path)
    if args.category and args.category != model.category:
        raise PatchCoreError(f"{path} is the model of category '{model.category}', not '{args.category}'")
    images = collect_images(args.input)
    thresholds = Thresholds.from_calibration(model.calibration, args.image_threshold, args.pixel_threshold)
    extractor = rebuild_extractor(model, args.pretrained)

    def embed(batch):
        with paddle.no_grad():
            return extractor(paddle.to_tensor(batch)).numpy()

    scores = score_images(images, model.config.data, embed, model.scorer(), args.batch_size)
    rows = decisions(images, scores, thresholds)
    save_outputs(rows, scores, model.config.data, thresholds, model.calibration, args.save_path,
                 save_pictures=not args.no_pictures, save_maps=args.save_maps)
    print_results(rows)
    print(f"saved results and figures in {os.path.abspath(args.save_path)}")
    return 0


if __name__ == "__main__":
    run_cli(main)
