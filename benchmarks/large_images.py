"""Fit and score a category of large images whole, with the memory estimated before the run.

    python benchmarks/large_images.py --data_path ROOT --category large_2048 --size 2048 \\
        --pretrained mnv2.pdparams --bank_size 1639 --batch_size 1 --save_path output/bench_large

Prints the fit-memory estimate of models/memory_estimate.py for these settings (what train.py checks
before decoding the first image) next to a plain Python + Paddle process's RSS, then runs
train.py (fit + --eval) and predict.py on the test images in child processes and reports each
one's peak RSS (the children's ru_maxrss), time and the metrics, as a table and CSV. Generate
such a category with datasets.synthetic.generate_category(..., image_size=2048, defect_scale=0.1).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from utils.runtime import configure_environment  # noqa: E402
configure_environment()   # the BLAS / OpenMP threading environment, before NumPy and Paddle load

from utils.table import format_table, print_and_save  # noqa: E402

COLUMNS = ("step", "input", "images", "estimate_mb", "baseline_rss_mb", "bound_mb", "peak_rss_mb", "within_bound",
           "seconds", "result", "load_1min")


def run_child(command: list[str]) -> tuple[float, float, str]:
    """(peak RSS MB of this child alone (os.wait4), seconds, its stdout) for one command run to completion."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        child = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        out.seek(0), err.seek(0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"error: {' '.join(command[:2])} failed: {err.read().strip().splitlines()[-1:]}")
        return usage.ru_maxrss / 1024, seconds, out.read()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_path", required=True)
    parser.add_argument("--category", required=True)
    parser.add_argument("--size", type=int, default=2048, help="--resize and --crop_size (whole image, no crop)")
    parser.add_argument("--pretrained", required=True)
    parser.add_argument("--bank_size", type=int, default=1639)
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--save_path", default="output/bench_large")
    args = parser.parse_args()
    from datasets.preprocess import list_images
    from models.memory_estimate import fit_memory_estimate
    from utils.config import Config, DataConfig, ModelConfig

    category = os.path.join(args.data_path, args.category)
    n_train = len(list_images(os.path.join(category, "train", "good")))
    config = Config(DataConfig(resize=args.size, crop_size=args.size),
                    ModelConfig(arch="mobilenet_v2", k=1, bank_size=args.bank_size))
    estimate = fit_memory_estimate(config, n_train, args.batch_size) / 2**20
    baseline, _, _ = run_child([sys.executable, "-c", "import paddle, numpy; paddle.to_tensor([1.0]) + 1"])
    common = ["--arch", "mobilenet_v2", "--pretrained", args.pretrained]
    fit_dir = os.path.join(args.save_path, "model")
    rows = []
    peak, seconds, out = run_child([sys.executable, "train.py", "--data_path", args.data_path, "--category",
                                    args.category, "--resize", str(args.size), "--crop_size", str(args.size),
                                    "--bank_size", str(args.bank_size), "--batch_size", str(args.batch_size),
                                    "--val_ratio", "0", "--eval", "--eval_PRO", "--no_progress", "--save_path",
                                    fit_dir, *common])
    table = [line for line in out.splitlines() if line.startswith(f"| {args.category} ")]
    rows.append({"step": "train.py (fit + eval)", "input": f"{args.size}x{args.size}", "images": n_train,
                 "estimate_mb": estimate, "baseline_rss_mb": baseline, "bound_mb": baseline + estimate,
                 "peak_rss_mb": peak, "within_bound": peak <= baseline + estimate, "seconds": seconds,
                 "result": " ".join(table[-1].split("|")[2:5]).strip() if table else "", "load_1min": os.getloadavg()[0]})
    print(format_table(rows, COLUMNS), flush=True)
    test_dir = os.path.join(category, "test")
    n_test = sum(len(list_images(os.path.join(test_dir, d))) for d in os.listdir(test_dir))
    peak, seconds, _ = run_child([sys.executable, "predict.py", test_dir, "--category", args.category,
                                  "--model_dir", fit_dir, "--save_path", os.path.join(args.save_path, "predict"),
                                  "--no_pictures", *common[2:]])
    rows.append({"step": "predict.py (score)", "input": f"{args.size}x{args.size}", "images": n_test,
                 "estimate_mb": "", "baseline_rss_mb": baseline, "bound_mb": "", "peak_rss_mb": peak,
                 "within_bound": "", "seconds": seconds, "result": f"{1000 * seconds / n_test:.0f} ms/img incl. start",
                 "load_1min": os.getloadavg()[0]})
    os.makedirs(args.save_path, exist_ok=True)
    print_and_save(rows, COLUMNS, os.path.join(args.save_path, "large_images.csv"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
