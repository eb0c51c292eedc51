"""Export a trained category for deployment: static-graph extractor + the method's stats.

Writes SAVE_DIR/model.pdmodel, SAVE_DIR/model.pdiparams (backbone, local aggregation and PaDiM's
channel selection, dynamic batch size), with --format onnx also SAVE_DIR/model.onnx (onnx_full: and SAVE_DIR/model_full.onnx, the whole
scoring in one graph), and
SAVE_DIR/stats.npz (PatchCore's memory bank or PaDiM's Gaussians, settings, thresholds, the hashes
of the program files), which infer.py reads. Before anything is written, every program runs in every
installed runtime (Paddle Inference, OpenVINO, ONNX Runtime) and must match the dynamic graph to 1e-4.

Example: python export_model.py --model_path output/bottle.pdparams --save_dir output/bottle_infer
"""
from __future__ import annotations

import argparse
import os
import sys

from utils.runtime import prepare_process

# First, before NumPy and Paddle load (no import does it): thread settings, quiet glog, one-line Ctrl-C.
prepare_process()

# engine.cli loads no Paddle: the program format below is still ours to choose.
from engine.cli import refuse_source_package, run_cli, script_parser

# Paddle 3 writes the new PIR program (.json) unless this is set before paddle is imported.
PROGRAM_FORMATS = {"pdmodel": "0", "json": "1"}


def parse_args() -> argparse.Namespace:
    parser = script_parser(__doc__)
    parser.add_argument("--model_path", required=True, help="a <category>.pdparams written by train.py")
    parser.add_argument("--save_dir", required=True)
    parser.add_argument("--pretrained", default=None, help="override where the backbone weights come from")
    parser.add_argument("--program", default="pdmodel", choices=sorted(PROGRAM_FORMATS),
                        help="pdmodel (classic program, the default) or json (Paddle 3 PIR program)")
    parser.add_argument("--format", default="paddle", choices=("paddle", "onnx", "onnx_full"),
                        help="paddle: the Paddle program only; onnx: also model.onnx (paddle2onnx), for "
                             "ONNX Runtime and other ONNX runtimes; onnx_full: also model_full.onnx, extractor "
                             "and scoring in one graph (image -> score, normalised score, map, mask)")
    parser.add_argument("--check_image", default=None,
                        help="a real image, or a folder of them (e.g. train/good or test), the export is also "
                             "verified on besides a seeded input: scores and verdicts must match the dynamic graph")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    refuse_source_package(args.save_dir, "--save_dir")
    os.environ["FLAGS_enable_pir_api"] = PROGRAM_FORMATS[args.program]
    if "paddle" in sys.modules:
        raise RuntimeError("paddle was imported before FLAGS_enable_pir_api was set")
    from engine.export import export

    result = export(args.model_path, args.save_dir, args.pretrained, args.format, args.check_image)
    print(f"{'verified runtime':<16} {'max rel. diff':>13} {'same verdicts':>13} {'nearest to thr.':>15}  "
          f"file (against the dynamic graph)")
    for check in result.checks:
        print(f"{check.runtime:<16} {check.max_rel_diff:>13.2e} {check.decisions:>13d} {check.threshold_distance:>15.4g}  "
              f"{os.path.basename(check.source)}")
    for path in result.written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    run_cli(main)
