"""PatchCore against PaDiM on one category: accuracy, fit time, model size, deployed latency.

  python benchmarks/compare_methods.py --data_path ../shared/data/mvtec --category bottle \
      --arch mobilenet_v2 --pretrained /tmp/mnv2.pdparams --coreset_k 10 --padim_k 152

Every number comes from the entry scripts a user runs, each in its own process: train.py --eval
--eval_PRO (metrics, fit seconds), the size of the model file it writes, export_model.py, then
infer.py --enable_benchmark True on the category's test images (ms per image, batch size 1, after a
warm-up batch). Prints one table and saves it as SAVE_PATH/compare_methods.csv.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from utils.runtime import configure_environment  # noqa: E402
configure_environment()   # the BLAS / OpenMP threading environment, before NumPy and Paddle load

from models.registry import ARCHS  # noqa: E402
from utils.config import DEFAULT_CPU_THREADS  # noqa: E402
from utils.table import format_table, write_csv  # noqa: E402

COLUMNS = ("method", "k", "fitted", "Image_AUROC", "Pixel_AUROC", "PRO_score", "fit_seconds", "model_MB", "deploy_MB",
           "infer_ms_per_img", "extract_ms_per_img", "score_ms_per_img")
# infer.py's benchmark.json keys -> our column names.
BENCHMARK_KEYS = {"total_time(ms/img)": "infer_ms_per_img", "inference_time(ms/img)": "extract_ms_per_img",
                  "postprocess_time(ms/img)": "score_ms_per_img"}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_path", required=True)
    parser.add_argument("--category", default="bottle")
    parser.add_argument("--arch", default="mobilenet_v2", choices=ARCHS)
    parser.add_argument("--pretrained", default="imagenet")
    parser.add_argument("--coreset_k", default=None, help="PatchCore's --k: percentage of patches kept "
                                                          "(default: train.py's)")
    parser.add_argument("--padim_k", default=None, help="PaDiM's --k: channels kept, 0 = all (default: train.py's "
                                                        "for the arch)")
    parser.add_argument("--cpu_threads", type=int, default=DEFAULT_CPU_THREADS)
    parser.add_argument("--save_path", default="output/compare_methods")
    return parser.parse_args()


def run(*args: str) -> str:
    """Run an entry script from the repository root; its stdout, or exit with its error."""
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONWARNINGS="ignore"))
    if done.returncode != 0:
        raise SystemExit(f"{args[0]} failed:\n{done.stderr.strip()[-2000:]}")
    return done.stdout


def megabytes(*paths: str) -> float:
    return sum(os.path.getsize(p) for p in paths) / 2**20


def benchmark_numbers(results_dir: str) -> dict[str, float]:
    """The per-image times infer.py --enable_benchmark saved in benchmark.json."""
    with open(os.path.join(results_dir, "benchmark.json")) as f:
        numbers = json.load(f)
    return {column: float(numbers[key]) for key, column in BENCHMARK_KEYS.items()}


def train_export_infer(args: argparse.Namespace, name: str, train_args: tuple[str, ...],
                       save_maps: bool = False) -> tuple[dict[str, str], str, list[str], str]:
    """train.py --eval --eval_PRO, export_model.py, infer.py --enable_benchmark on the test split.

    Returns train.py's result row, the model file, the exported files and infer.py's output folder.
    """
    out = os.path.join(os.path.abspath(args.save_path), name)
    run("train.py", "--data_path", args.data_path, "--category", args.category, "--arch", args.arch,
        "--pretrained", args.pretrained, *train_args, "--eval", "--eval_PRO", "--save_path", out, "--no_progress")
    with open(os.path.join(out, "train_results.csv")) as f:
        trained = next(r for r in csv.DictReader(f) if r["category"] == args.category)
    model_file = os.path.join(out, f"{args.category}.pdparams")
    infer_dir = os.path.join(out, "infer_model")
    run("export_model.py", "--model_path", model_file, "--save_dir", infer_dir)
    deployed = [os.path.join(infer_dir, name) for name in ("model.pdmodel", "model.pdiparams", "stats.npz")]
    results_dir = os.path.join(out, "infer_results")
    run("infer.py", "--model_file", deployed[0], "--params_file", deployed[1], "--stats", deployed[2],
        "--input_file", os.path.join(args.data_path, args.category, "test"), "--batch_size", "1",
        "--cpu_threads", str(args.cpu_threads), "--enable_benchmark", "True", "--no_pictures", "--save_path", results_dir,
        *(("--save_maps",) if save_maps else ()))
    return trained, model_file, deployed, results_dir


def measure(args: argparse.Namespace, method: str, k: str | None) -> dict[str, object]:
    """Train, evaluate, export and benchmark one method; one table row."""
    trained, model_file, deployed, results_dir = train_export_infer(
        args, method, ("--method", method, *(("--k", k) if k is not None else ())))
    fitted = f"{trained['bank_size']} patches" if "bank_size" in trained else f"{trained['channels']} channels"
    row: dict[str, object] = {"method": method, "k": k or "default", "fitted": fitted}
    row.update({name: float(trained[name]) for name in ("Image_AUROC", "Pixel_AUROC", "PRO_score", "fit_seconds")})
    row.update(model_MB=megabytes(model_file), deploy_MB=megabytes(*deployed), **benchmark_numbers(results_dir))
    return row


def report(title: str, rows: list[dict[str, object]], columns: tuple[str, ...], path: str) -> None:
    """Print the title and the table, save the table as CSV at `path`."""
    print(title)
    print(format_table(rows, columns))
    write_csv(path, rows, columns)
    print(f"saved {path}")


def main() -> int:
    args = parse_args()
    rows = [measure(args, "coreset", args.coreset_k), measure(args, "padim", args.padim_k)]
    report(f"{args.category}, {args.arch}, {args.cpu_threads} CPU threads", rows, COLUMNS,
           os.path.join(args.save_path, "compare_methods.csv"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
