"""PatchCore's two local aggregations on one category: accuracy, fit time, bank size, deployed latency.

  python benchmarks/aggregation.py --data_path ../shared/data/mvtec --category bottle \
      --arch mobilenet_v2 --pretrained /tmp/bottle/mnv2.pdparams --k 10

For each of --aggregation avgpool and unfold, every number comes from the entry scripts a user runs,
each in its own process: train.py --eval --eval_PRO (metrics, fit seconds), export_model.py, infer.py
--enable_benchmark True --save_maps on the test split (ms per image, batch size 1, after a warm-up
batch), and predict.py --save_maps on the same images: the last column is the largest relative
difference between infer.py's and predict.py's image scores and anomaly maps. The bank size is that
of the memory bank in the exported stats.npz. Prints one table and saves SAVE_PATH/aggregation.csv.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils.runtime import configure_environment  # noqa: E402
configure_environment()   # the BLAS / OpenMP threading environment, before NumPy and Paddle load

from compare_methods import benchmark_numbers, report, run, train_export_infer  # noqa: E402
from models.registry import ARCHS  # noqa: E402
from tools.compare_outputs import load_outputs, relative_differences  # noqa: E402
from utils.config import AGGREGATIONS, DEFAULT_CPU_THREADS, ModelConfig  # noqa: E402

COLUMNS = ("aggregation", "embed_dim", "bank_patches", "bank_MB", "Image_AUROC", "Pixel_AUROC", "PRO_score",
           "fit_seconds", "infer_ms_per_img", "extract_ms_per_img", "score_ms_per_img", "infer_vs_predict")


def parse_args() -> argparse.Namespace:
    m = ModelConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_path", required=True)
    parser.add_argument("--category", default="bottle")
    parser.add_argument("--arch", default="mobilenet_v2", choices=ARCHS)
    parser.add_argument("--pretrained", default="imagenet")
    parser.add_argument("--k", default="10", help="percentage of patches kept by the coreset")
    parser.add_argument("--aggregations", default=",".join(AGGREGATIONS), help="comma-separated, run in this order")
    parser.add_argument("--pretrain_embed_dim", default=str(m.pretrain_embed_dim))
    parser.add_argument("--target_embed_dim", default=str(m.target_embed_dim))
    parser.add_argument("--cpu_threads", type=int, default=DEFAULT_CPU_THREADS)
    parser.add_argument("--save_path", default="output/aggregation")
    return parser.parse_args()


def measure(args: argparse.Namespace, aggregation: str) -> dict[str, object]:
    """Train, evaluate, export, benchmark and cross-check one aggregation; one table row."""
    dims = ("--pretrain_embed_dim", args.pretrain_embed_dim, "--target_embed_dim", args.target_embed_dim)
    trained, model_file, deployed, results_dir = train_export_infer(
        args, aggregation, ("--k", args.k, "--aggregation", aggregation, *(dims if aggregation == "unfold" else ())),
        save_maps=True)
    predicted = os.path.join(os.path.dirname(results_dir), "predict_results")
    run("predict.py", os.path.join(args.data_path, args.category, "test"), "--model_path", model_file,
        "--save_path", predicted, "--no_pictures", "--save_maps")
    diffs = relative_differences(load_outputs(os.path.join(predicted, "anomaly_maps.npz")),
                                 load_outputs(os.path.join(results_dir, "anomaly_maps.npz")))
    with np.load(deployed[2], allow_pickle=False) as stats:
        bank = stats["memory_bank"]
    row: dict[str, object] = {"aggregation": aggregation, "embed_dim": bank.shape[1], "bank_patches": bank.shape[0],
                              "bank_MB": bank.nbytes / 2**20}
    row.update({name: float(trained[name]) for name in ("Image_AUROC", "Pixel_AUROC", "PRO_score", "fit_seconds")})
    row.update(benchmark_numbers(results_dir), infer_vs_predict=f"{max(diffs.values()):.1e}")
    return row


def main() -> int:
    args = parse_args()
    rows = [measure(args, aggregation) for aggregation in args.aggregations.split(",")]
    report(f"{args.category}, {args.arch}, --k {args.k}, {args.cpu_threads} CPU threads", rows, COLUMNS,
           os.path.join(args.save_path, "aggregation.csv"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
