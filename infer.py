"""Score images with the exported model through the Paddle Inference predictor (CPU or GPU).

Example: python infer.py --model_file output/bottle_infer/model.pdmodel
             --params_file output/bottle_infer/model.pdiparams --stats output/bottle_infer/stats.npz
             --input_file path/to/images --save_path output/infer
Flag names follow the TIPC inference conventions.
"""
from __future__ import annotations

import argparse
import os

from utils.cli import add_decision_args, str2bool


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_file", required=True)
    parser.add_argument("--params_file", required=True)
    parser.add_argument("--stats", required=True, help="stats.npz written by export_model.py")
    parser.add_argument("--input_file", required=True, help="an image file or a folder of images")
    parser.add_argument("--use_gpu", type=str2bool, default=False)
    parser.add_argument("--enable_mkldnn", type=str2bool, default=False)
    parser.add_argument("--cpu_threads", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "int8"))
    parser.add_argument("--use_tensorrt", type=str2bool, default=False)
    parser.add_argument("--save_path", default="output/infer")
    parser.add_argument("--enable_benchmark", type=str2bool, default=False)
    parser.add_argument("--warmup", type=int, default=1, help="batches left out of the benchmark timing")
    add_decision_args(parser)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    # Paddle Inference logs through glog; a production line wants only the results.
    os.environ.setdefault("GLOG_minloglevel", "2")
    from models.model_file import PatchCoreModel
    from utils.benchmark import make_timer, report_benchmark
    from utils.config import METHOD_TITLES
    from utils.errors import PatchCoreError
    from utils.inference import Thresholds, collect_images, decisions, print_results, save_outputs, score_images
    from utils.predictor import FeaturePredictor, file_sha256

    model, params_sha256 = PatchCoreModel.load_stats(args.stats)
    if not os.path.isfile(args.params_file):
        raise PatchCoreError(f"file not found: {args.params_file}")
    if params_sha256 != file_sha256(args.params_file):
        raise PatchCoreError(f"stats file {args.stats} was not exported with {args.params_file}: "
                             f"use the stats.npz from the same export_model.py run")
    images = collect_images(args.input_file)
    thresholds = Thresholds.from_calibration(model.calibration, args.image_threshold, args.pixel_threshold)
    predictor = FeaturePredictor(args.model_file, args.params_file, args.use_gpu, args.enable_mkldnn,
                                 args.cpu_threads, args.precision, args.use_tensorrt)
    model_name = f"{METHOD_TITLES[model.method]}-{model.config.model.arch}"
    # Warm-up batches are left out of the timing, but at least one batch is always timed.
    n_batches = -(-len(images) // args.batch_size)
    warmup = min(args.warmup, n_batches - 1) if args.enable_benchmark else 0
    timer = make_timer(args.enable_benchmark, warmup, model_name,
                       args.batch_size, args.precision, args.use_gpu)
    scores = score_images(images, model.config.data, predictor, model.scorer(), args.batch_size, timer)
    rows = decisions(images, scores, thresholds)
    save_outputs(rows, scores, model.config.data, thresholds, model.calibration, args.save_path,
                 save_pictures=not args.no_pictures, save_maps=args.save_maps)
    print_results(rows)
    print(f"saved results and figures in {os.path.abspath(args.save_path)}")
    if args.enable_benchmark:
        report_benchmark(timer, model_name, args.batch_size, args.precision, "gpu" if args.use_gpu else "cpu",
                         args.cpu_threads, args.enable_mkldnn)
    return 0


if __name__ == "__main__":
    from utils.errors import run_cli

    run_cli(main)
