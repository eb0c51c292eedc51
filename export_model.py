"""Export a trained category for deployment: static-graph extractor + the method's stats.

Writes SAVE_DIR/model.pdmodel, SAVE_DIR/model.pdiparams (backbone, local aggregation and PaDiM's
channel selection, dynamic batch size) and SAVE_DIR/stats.npz (PatchCore's memory bank or PaDiM's
Gaussians, settings, thresholds), which infer.py reads.

Example: python export_model.py --model_path output/bottle.pdparams --save_dir output/bottle_infer
"""
from __future__ import annotations

import argparse
import os
import sys

# engine.cli loads no Paddle: the program format below is still ours to choose.
from engine.cli import run_cli, script_parser

# Paddle 3 writes the new PIR program (.json) unless this is set before paddle is imported.
PROGRAM_FORMATS = {"pdmodel": "0", "json": "1"}


def parse_args() -> argparse.Namespace:
    parser = script_parser(__doc__)
    parser.add_argument("--model_path", required=True, help="a <category>.pdparams written by train.py")
    parser.add_argument("--save_dir", required=True)
    parser.add_argument("--pretrained", default=None, help="override where the backbone weights come from")
    parser.add_argument("--program", default="pdmodel", choices=sorted(PROGRAM_FORMATS),
                        help="pdmodel (classic program, the default) or json (Paddle 3 PIR program)")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    os.environ["FLAGS_enable_pir_api"] = PROGRAM_FORMATS[args.program]
    os.environ.setdefault("GLOG_minloglevel", "2")   # no executor chatter from glog
    if "paddle" in sys.modules:
        raise RuntimeError("paddle was imported before FLAGS_enable_pir_api was set")
    from engine.export import export

    written = export(args.model_path, args.save_dir, args.pretrained)
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    run_cli(main)
