"""Score images with the exported model through an inference runtime: Paddle Inference (CPU or
GPU), OpenVINO or ONNX Runtime (--runtime; auto picks the fastest installed, and the first line
printed names the one that runs).

Example: python infer.py --model_file output/bottle_infer/model.pdmodel
             --params_file output/bottle_infer/model.pdiparams --stats output/bottle_infer/stats.npz
             --input_file path/to/images --save_path output/infer
Flag names follow the TIPC inference conventions. Loads no training code.
"""
from __future__ import annotations

import argparse

from utils.runtime import prepare_process

# First, before NumPy and Paddle load (no import does it): thread settings, quiet glog, one-line Ctrl-C.
prepare_process()

from deploy.cli import (add_batch_size_arg, add_decision_args, add_predictor_args, run_cli, scoring_run,
                        script_parser)


def parse_args() -> argparse.Namespace:
    parser = script_parser(__doc__)
    add_predictor_args(parser)
    parser.add_argument("--input_file", required=True, help="an image file or a folder of images")
    add_batch_size_arg(parser)
    parser.add_argument("--save_path", default="output/infer")
    add_decision_args(parser)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    from deploy.benchmark import make_timer, report_benchmark
    from deploy.batch_scoring import collect_images, run_inference
    from deploy.exported_model import load_exported_model, scoring_options
    from models.runtimes import ExportFiles, RuntimeOptions, open_runtime, resolve_runtime

    files = ExportFiles.of_program(args.model_file, args.params_file, args.stats)
    model = load_exported_model(args.stats, args.params_file, args.model_file, files.onnx)
    options = RuntimeOptions(args.runtime, args.use_gpu, args.cpu_threads, args.enable_mkldnn, args.precision,
                             args.use_tensorrt)
    scoring = scoring_options(options, resolve_runtime(files, options))
    runtimes = []   # the one run_inference opens, for the benchmark block

    def open_embedder():
        runtimes.append(open_runtime(files, options))
        # Which runtime runs is the machine's choice under --runtime auto: said before the first row.
        print(f"runtime: {runtimes[-1].description()} (--runtime {args.runtime})", flush=True)
        return runtimes[-1]

    images = collect_images(args.input_file)
    model_name = f"{model.title}-{model.config.model.arch}"
    # Warm-up batches are left out of the timing, but at least one batch is always timed.
    n_batches = -(-len(images) // args.batch_size)
    warmup = min(args.warmup, n_batches - 1) if args.enable_benchmark else 0
    timer = make_timer(args.enable_benchmark, warmup, model_name, args.batch_size, args.precision, args.use_gpu)
    failed = run_inference(images, model, open_embedder, scoring_run(args, scoring, timer))
    if args.enable_benchmark:
        report_benchmark(timer, args.save_path, model_name=model_name, batch_size=args.batch_size,
                         precision=args.precision, device="gpu" if args.use_gpu else "cpu",
                         cpu_threads=args.cpu_threads, runtime=runtimes[0].name,
                         enable_mkldnn=getattr(runtimes[0], "enable_mkldnn", False))
    # Some images could not be scored: their rows say why, and the exit code tells scripts.
    return 2 if failed else 0


if __name__ == "__main__":
    run_cli(main)
