"""Command-line options of the scoring scripts (predict.py and infer.py)."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from deploy.batch_scoring import ScoringRun
    from models.scoring import ScoringOptions

from models.runtimes import RUNTIME_CHOICES
from utils.config import DEFAULT_CPU_THREADS, finite_float, non_negative_int, positive_int, str2bool
from utils.errors import run_cli, script_parser

__all__ = ["add_batch_size_arg", "add_decision_args", "add_predictor_args", "run_cli", "scoring_run", "script_parser"]


def add_decision_args(parser: argparse.ArgumentParser) -> None:
    """Overrides of the calibrated thresholds (raw score units) and what to write."""
    parser.add_argument("--image_threshold", type=finite_float, default=None,
                        help="raw image score at which a part is anomalous (default: the model's calibrated one)")
    parser.add_argument("--pixel_threshold", type=finite_float, default=None,
                        help="raw anomaly-map value outlined as defect (default: the model's calibrated one)")
    parser.add_argument("--no_pictures", action="store_true", help="write only the CSV/JSON results")
    parser.add_argument("--save_maps", action="store_true", help="also write the raw anomaly maps (anomaly_maps.npz)")


def scoring_run(args: argparse.Namespace, scoring: "ScoringOptions", timer: Any = None) -> "ScoringRun":
    """The scoring run's settings from add_decision_args' and add_batch_size_arg's options (and
    --save_path); `scoring` how the scorer runs, `timer` infer.py's benchmark timer."""
    from deploy.batch_scoring import ScoringRun   # NumPy, Pillow, matplotlib: after parsing

    return ScoringRun(save_path=args.save_path, batch_size=args.batch_size, image_threshold=args.image_threshold,
                      pixel_threshold=args.pixel_threshold, figures=not args.no_pictures, save_maps=args.save_maps,
                      scoring=scoring, timer=timer)


def add_batch_size_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch_size", type=positive_int, default=1)


def add_predictor_args(parser: argparse.ArgumentParser) -> None:
    """The exported model, the inference runtime and its settings; names follow the TIPC conventions."""
    parser.add_argument("--model_file", required=True)
    parser.add_argument("--params_file", required=True)
    parser.add_argument("--stats", required=True, help="stats.npz written by export_model.py")
    # --backend: the option's name before the glossary (docs/guide.md), still accepted.
    parser.add_argument("--runtime", "--backend", dest="runtime", default="auto", choices=RUNTIME_CHOICES,
                        help="inference runtime (--backend is its old name); auto: Paddle Inference on a GPU "
                             "or when --enable_mkldnn is given, else the fastest installed (OpenVINO, then "
                             "Paddle Inference with oneDNN)")
    parser.add_argument("--use_gpu", type=str2bool, default=False)
    parser.add_argument("--enable_mkldnn", type=str2bool, default=None,
                        help="Paddle Inference's oneDNN on the CPU (default: on for a .pdmodel, off for .json)")
    parser.add_argument("--cpu_threads", type=positive_int, default=DEFAULT_CPU_THREADS)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "int8"))
    parser.add_argument("--use_tensorrt", type=str2bool, default=False)
    parser.add_argument("--enable_benchmark", type=str2bool, default=False)
    parser.add_argument("--warmup", type=non_negative_int, default=1, help="batches left out of the benchmark timing")
