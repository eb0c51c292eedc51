"""Speed benchmark: fit time (features / coreset), per-image latency, coreset growth.

  python benchmarks/speed.py --data_path ../shared/data/mvtec --category bottle \
      --arch mobilenet_v2 --pretrained /tmp/mnv2.pdparams --k 10 --threads 2 [--baseline]

Each measurement runs in its own process so its peak memory is its own. Prints tables and saves
them as CSV under --save_path. --baseline also times the plain mat-vec greedy of the same rule
(benchmarks/coreset.py, one BLAS mat-vec per pick) on the full set of patches.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from utils.runtime import configure_environment  # noqa: E402
configure_environment()   # the BLAS / OpenMP threading environment, before NumPy and Paddle load


def _child(args: argparse.Namespace) -> dict:
    """One measurement in this process; returns numbers as a dict."""
    import numpy as np

    from datasets.mvtec import MVTecDataset
    from engine.pipeline import fit, iterate_batches
    from engine.settings import RunSettings
    from models.feature_extractor import build_extractor, extract
    from models.patchcore.sampling import coreset_size, greedy_coreset, random_projection
    from utils.runtime import peak_memory_mb
    from utils.config import Config, ModelConfig

    config = Config(model=ModelConfig(arch=args.arch, pretrained=args.pretrained, k=args.k, seed=args.seed))
    extractor = build_extractor(config.model)
    train_set = MVTecDataset(args.data_path, args.category, "train", config.data)
    out: dict = {}
    if args.part == "fit":
        start = time.perf_counter()
        model = fit(extractor, train_set, config, args.category, RunSettings("", "", progress=False)).model
        out = dict(model.fit_stats, total_seconds=time.perf_counter() - start)
        model.save(os.path.join(args.save_path, f"{args.category}.pdparams"))
    elif args.part.startswith("coreset"):
        chunks = [extract(extractor, images) for images, _, _ in iterate_batches(train_set, 8, "", False)]
        embedding = np.concatenate(chunks)
        # More patches than the training set has: add flipped views (realistic patch statistics).
        views = [embedding, embedding[..., ::-1], embedding[..., ::-1, :], embedding[..., ::-1, ::-1]]
        patches = np.concatenate([v.transpose(0, 2, 3, 1).reshape(-1, v.shape[1]) for v in views])
        n_points = args.n_points or len(embedding) * embedding.shape[2] * embedding.shape[3]
        patches = np.ascontiguousarray(patches[np.random.default_rng(0).permutation(len(patches))[:n_points]]
                                       if n_points != len(patches) // 4 else patches[: n_points])
        projected = random_projection(patches, 128, args.seed)
        n_select = coreset_size(len(projected), args.k)
        start = time.perf_counter()
        fast = greedy_coreset(projected, n_select, args.seed)
        out = {"n_points": len(projected), "n_select": n_select, "fast_seconds": time.perf_counter() - start}
        if args.part == "coreset_baseline":
            from benchmarks.coreset import plain_matvec_greedy

            start = time.perf_counter()
            plain = plain_matvec_greedy(projected, n_select, args.seed)
            out.update(baseline_seconds=time.perf_counter() - start, identical=bool(np.array_equal(plain, fast)))
    out["peak_memory_mb"] = peak_memory_mb()
    return out


def _run_child(args: argparse.Namespace, part: str, **extra: object) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", part, "--data_path", args.data_path,
           "--category", args.category, "--arch", args.arch, "--pretrained", args.pretrained,
           "--k", str(args.k), "--seed", str(args.seed), "--threads", str(args.threads), "--save_path", args.save_path]
    for key, value in extra.items():
        cmd += [f"--{key}", str(value)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"benchmark step {part} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _latency(args: argparse.Namespace, model_path: str, infer_dir: str) -> list[dict]:
    """Median per-image end-to-end latency (read, preprocess, extract, score, map), batch size 1."""
    rows = []
    images = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(os.path.join(args.data_path, args.category, "test"))
                    for f in fs if f.endswith(".png"))[: args.n_images]
    for name, extra in (("predict.py (dynamic graph)", None), ("infer.py oneDNN off", "False"),
                        ("infer.py oneDNN on", "True")):
        out = _run_child(args, "latency", model_path=model_path, infer_dir=infer_dir, mkldnn=extra or "dynamic",
                         images=",".join(images))
        rows.append({"step": name, "median_ms_per_image": out["median_ms"], "p90_ms": out["p90_ms"],
                     "peak_memory_mb": out["peak_memory_mb"]})
    return rows


def _latency_child(args: argparse.Namespace) -> dict:
    import numpy as np
    import paddle

    from deploy.batch_scoring import score_images
    from models.runtimes.paddle_inference import FeaturePredictor
    from engine.pipeline import dynamic_embedder
    from models.model_file import AnomalyModel
    from utils.runtime import peak_memory_mb

    paths = args.images.split(",")
    if args.mkldnn == "dynamic":
        paddle.set_device("cpu")
        model = AnomalyModel.load(args.model_path)
        embed = dynamic_embedder(model, args.pretrained)
    else:
        model, _ = AnomalyModel.load_stats(os.path.join(args.infer_dir, "stats.npz"))
        embed = FeaturePredictor(os.path.join(args.infer_dir, "model.pdmodel"),
                                 os.path.join(args.infer_dir, "model.pdiparams"),
                                 enable_mkldnn=args.mkldnn == "True", cpu_threads=args.threads)
    scorer = model.scorer()
    score_images(paths[:2], model.config.data, embed, scorer, 1)   # warm-up
    times = []
    for _ in range(args.repeats):
        for path in paths:
            start = time.perf_counter()
            score_images([path], model.config.data, embed, scorer, 1)
            times.append(1000 * (time.perf_counter() - start))
    return {"median_ms": statistics.median(times), "p90_ms": float(np.percentile(times, 90)),
            "peak_memory_mb": peak_memory_mb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_path", required=True)
    parser.add_argument("--category", default="bottle")
    parser.add_argument("--arch", default="mobilenet_v2")
    parser.add_argument("--pretrained", default="none")
    parser.add_argument("--k", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--save_path", default="output/benchmark")
    parser.add_argument("--sizes", default="50000,100000,200000,400000", help="patch counts for the coreset growth")
    parser.add_argument("--n_images", type=int, default=20, help="test images timed per latency step")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", action="store_true", help="also time the plain mat-vec greedy coreset")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--n_points", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--model_path", default="", help=argparse.SUPPRESS)
    parser.add_argument("--infer_dir", default="", help=argparse.SUPPRESS)
    parser.add_argument("--mkldnn", default="", help=argparse.SUPPRESS)
    parser.add_argument("--images", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.part = args.child
        print(json.dumps(_latency_child(args) if args.child == "latency" else _child(args)))
        return

    from utils.table import format_table, write_csv

    os.makedirs(args.save_path, exist_ok=True)
    fit_stats = _run_child(args, "fit")
    fit_rows = [{"step": "feature extraction", "seconds": fit_stats["feature_seconds"]},
                {"step": "coreset selection", "seconds": fit_stats["coreset_seconds"]},
                {"step": "fit total", "seconds": fit_stats["total_seconds"]},
                {"step": "peak memory (MB)", "seconds": fit_stats["peak_memory_mb"]}]
    print(f"fit: {args.category}, {args.arch}, k={args.k}%, {int(fit_stats['train_patches'])} patches -> "
          f"{int(fit_stats['bank_size'])}, {args.threads} threads")
    print(format_table(fit_rows, ("step", "seconds")))
    write_csv(os.path.join(args.save_path, "fit.csv"), fit_rows, ("step", "seconds"))

    model_path = os.path.join(args.save_path, f"{args.category}.pdparams")
    infer_dir = os.path.join(args.save_path, f"{args.category}_infer")
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    subprocess.run([sys.executable, os.path.join(ROOT, "export_model.py"), "--model_path", model_path,
                    "--save_dir", infer_dir, "--pretrained", args.pretrained], check=True, capture_output=True, env=env)
    latency_rows = _latency(args, model_path, infer_dir)
    print(format_table(latency_rows, ("step", "median_ms_per_image", "p90_ms", "peak_memory_mb")))
    write_csv(os.path.join(args.save_path, "latency.csv"), latency_rows,
              ("step", "median_ms_per_image", "p90_ms", "peak_memory_mb"))

    growth = []
    for n_points in [int(s) for s in args.sizes.split(",") if s]:
        out = _run_child(args, "coreset", n_points=n_points)
        growth.append({"patches": out["n_points"], "selected": out["n_select"], "fast_seconds": out["fast_seconds"],
                       "peak_memory_mb": out["peak_memory_mb"]})
    if args.baseline:
        out = _run_child(args, "coreset_baseline")
        growth.append({"patches": out["n_points"], "selected": out["n_select"], "fast_seconds": out["fast_seconds"],
                       "baseline_seconds": out["baseline_seconds"], "identical_indices": out["identical"],
                       "peak_memory_mb": out["peak_memory_mb"]})
    columns = ("patches", "selected", "fast_seconds", "baseline_seconds", "identical_indices", "peak_memory_mb")
    print(format_table(growth, columns))
    write_csv(os.path.join(args.save_path, "coreset_growth.csv"), growth, columns)


if __name__ == "__main__":
    main()
