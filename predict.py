"""Score images with a trained model on the dynamic graph: score, decision and a figure per image.

Example: python predict.py path/to/image.png --category bottle --save_path output/predict
"""
from __future__ import annotations

import argparse

from deploy.cli import add_decision_args, run_cli
from deploy.inference import collect_images, run_inference
from engine.cli import add_device_arg, select_device
from engine.pipeline import dynamic_embedder, load_model


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
    add_device_arg(parser)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    backend = select_device(args.device)
    model = load_model(args.model_path, args.model_dir, args.category)
    run_inference(collect_images(args.input), model, lambda: dynamic_embedder(model, args.pretrained),
                  args.batch_size, args.save_path, args.image_threshold, args.pixel_threshold,
                  figures=not args.no_pictures, save_maps=args.save_maps, backend=backend)
    return 0


if __name__ == "__main__":
    run_cli(main)
