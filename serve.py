"""Serve exported models over HTTP, with the operator page at / (see docs/deployment.md, Serving).

Example: python serve.py --models output --feedback_dir output/feedback
         (output/ holds train.py's <category>.pdparams and export_model.py's export folders)
Then open http://127.0.0.1:8000/ or POST an image to /api/v1/models/<name>/predict. Loads no training code.
"""
from __future__ import annotations

import argparse

from utils.runtime import prepare_process

# First, before NumPy and Paddle load (no import does it): thread settings, quiet glog, one-line Ctrl-C.
prepare_process()

from deploy.cli import run_cli, script_parser
from deploy.service.cli import add_service_args, settings_from_args


def parse_args() -> argparse.Namespace:
    parser = script_parser(__doc__)
    add_service_args(parser)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    from deploy.service.server import serve

    serve(settings_from_args(args), args.models, args.model)
    return 0


if __name__ == "__main__":
    run_cli(main)
