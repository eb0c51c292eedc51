"""Coreset selection against its strongest simple baseline, over data, sizes and keep ratios.

The baseline is the plain greedy of the same rule with squared distances from
||x||^2 - 2 x.c + ||c||^2: ||x||^2 precomputed, one float32 BLAS matrix-vector product per pick.
(It rounds differently from the rule's sum((x - c)^2), so on near-ties it may pick other points:
the `same` column says whether its indices happen to match.)

    python benchmarks/coreset.py --data gaussian,lowdim,texture,bottle --sizes 50000,200000,650000 \\
        --keep 0.1,1,10,25 --mvtec_root MVTEC_ROOT --weights mnv2.pdparams --save_path output/bench_coreset

Data (128-d after the seeded random projection the fit uses):
  gaussian  isotropic N(0, 1), 128-d;
  lowdim    an 8-d Gaussian mapped linearly to 128-d plus N(0, 0.05^2) noise;
  texture   MobileNetV2 patch features of generated uniform textures (datasets.synthetic), as many
            images as the size needs (random-init weights unless --weights);
  bottle    MobileNetV2 patch features of MVTec bottle train/good (163,856), plus horizontally,
            vertically and doubly flipped views for more (needs --mvtec_root and --weights).
Cells whose baseline would take more than --max_seconds (estimated from 20 of its steps) are listed
but not run. Cells whose baseline takes under --repeat_under seconds are run up to --repeats times, the two
selectors alternating, and each keeps its fastest run (timing noise of a shared machine is one-sided).
Every cell prints a row as soon as it is measured; the table is saved as CSV at the end (and after
every row, so an interrupted run keeps what it measured).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from utils.runtime import configure_environment  # noqa: E402
configure_environment()   # the BLAS / OpenMP threading environment, before NumPy and Paddle load

import numpy as np  # noqa: E402

from engine.pipeline import iterate_batches  # noqa: E402
from models.feature_extractor import build_extractor, extract  # noqa: E402
from models.patchcore.sampling import _start_index, coreset_size, greedy_coreset, projection_matrix  # noqa: E402
from utils.config import DataConfig, ModelConfig  # noqa: E402
from utils.table import format_table, write_csv  # noqa: E402

COLUMNS = ("data", "points", "keep_%", "picks", "project_s", "matvec_s", "ratio", "project_peak_MB",
           "matvec_peak_MB", "same", "note")
PATCHES_PER_IMAGE = 28 * 28                   # MobileNetV2 stride 8 on a 224 crop


def plain_matvec_greedy(points: np.ndarray, n_select: int, seed: int = 0) -> np.ndarray:
    """The baseline: the same farthest-point rule, one BLAS mat-vec per pick."""
    sq_norms = np.einsum("ij,ij->i", points, points)
    selected = np.empty(n_select, dtype=np.int64)
    selected[0] = _start_index(len(points), seed)
    centre = points[selected[0]]
    min_dist = sq_norms - 2 * (points @ centre) + np.float32(centre @ centre)
    for step in range(1, n_select):
        index = int(np.argmax(min_dist))
        selected[step] = index
        centre = points[index]
        dist = points @ centre
        dist *= np.float32(-2)
        dist += sq_norms
        dist += np.float32(centre @ centre)
        np.minimum(min_dist, dist, out=min_dist)
    return selected


def cnn_features(images: np.ndarray, weights: str | None) -> np.ndarray:
    """MobileNetV2 PatchCore patch features [N * 784, 128] of normalised images [N, 3, 224, 224]."""
    extractor = build_extractor(ModelConfig(arch="mobilenet_v2", pretrained=weights or "none"))
    parts = [extract(extractor, images[i:i + 8]) for i in range(0, len(images), 8)]
    embedding = np.concatenate(parts)
    return embedding.transpose(0, 2, 3, 1).reshape(-1, embedding.shape[1])


def texture_features(n_points: int, weights: str | None) -> np.ndarray:
    from datasets.synthetic import render_sample

    data = DataConfig()
    n_images = -(-n_points // PATCHES_PER_IMAGE)
    mean, std = np.asarray(data.mean, np.float32), np.asarray(data.std, np.float32)
    images = np.stack([((render_sample("texture", None, image_size=224, index=i)[0] / 255.0 - mean) / std)
                       .transpose(2, 0, 1).astype(np.float32) for i in range(n_images)])
    return cnn_features(images, weights)


def bottle_features(mvtec_root: str, weights: str) -> np.ndarray:
    from datasets.mvtec import MVTecDataset

    train = MVTecDataset(mvtec_root, "bottle", "train", DataConfig())
    embedding = np.concatenate([extract(build_extractor(ModelConfig(arch="mobilenet_v2", pretrained=weights)), images)
                                for images, _, _ in iterate_batches(train, 8, "bottle features", True)])
    views = [embedding, embedding[..., ::-1], embedding[..., ::-1, :], embedding[..., ::-1, ::-1]]
    return np.concatenate([v.transpose(0, 2, 3, 1).reshape(-1, v.shape[1]) for v in views])


def points_for(kind: str, n_points: int, args: argparse.Namespace, cache: dict) -> np.ndarray:
    """`n_points` projected 128-d points of a kind (features cached per run)."""
    rng = np.random.default_rng(0)
    if kind == "gaussian":
        return rng.standard_normal((n_points, 128)).astype(np.float32)
    if kind == "lowdim":
        basis = rng.standard_normal((8, 128)).astype(np.float32)
        return (rng.standard_normal((n_points, 8)).astype(np.float32) @ basis
                + np.float32(0.05) * rng.standard_normal((n_points, 128)).astype(np.float32))
    if kind == "texture":
        if len(cache.get(kind, ())) < n_points:
            cache[kind] = texture_features(n_points, args.weights)
        features = cache[kind][:n_points]
    elif kind == "bottle":
        if not (args.mvtec_root and args.weights):
            raise SystemExit("bottle data needs --mvtec_root and --weights")
        if kind not in cache:
            cache[kind] = bottle_features(args.mvtec_root, args.weights)
        features = cache[kind]
        # The original patches first; flipped views only where more are asked for.
        features = features[:n_points] if n_points <= len(features) else features
    else:
        raise SystemExit(f"unknown data kind {kind!r}")
    return np.ascontiguousarray(features @ projection_matrix(features.shape[1], 128, 0))


def timed(select, points: np.ndarray, n_select: int) -> tuple[np.ndarray, float]:
    """(indices, seconds); never under tracemalloc, which slows every allocation."""
    start = time.perf_counter()
    indices = select(points, n_select)
    return indices, time.perf_counter() - start


def peak_mb(select, points: np.ndarray, n_select: int) -> float:
    """Peak MB of what the selector allocates (a separate traced run)."""
    tracemalloc.start()
    select(points, n_select)
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return peak


def matvec_step_seconds(points: np.ndarray, steps: int = 20) -> float:
    """Seconds per pick of the baseline on these points (fastest of a few short runs)."""
    plain_matvec_greedy(points, 3, 0)
    runs = [timed(lambda p, n: plain_matvec_greedy(p, n, 0), points, steps + 1)[1] for _ in range(3)]
    return min(runs) / steps


def measure_cell(points: np.ndarray, n_select: int, repeats: int, repeat_under: float, peak_under: float) -> dict:
    """Both selectors on one cell: fastest times over the alternating runs; peaks from one traced
    run each where the baseline takes under `peak_under` seconds (NaN otherwise)."""
    project = lambda p, n: greedy_coreset(p, n, 0)  # noqa: E731
    baseline = lambda p, n: plain_matvec_greedy(p, n, 0)  # noqa: E731
    fast, fast_s = timed(project, points, n_select)
    plain, plain_s = timed(baseline, points, n_select)
    for _ in range(repeats - 1 if plain_s < repeat_under else 0):
        fast_s = min(fast_s, timed(project, points, n_select)[1])
        plain_s = min(plain_s, timed(baseline, points, n_select)[1])
    small = plain_s < peak_under
    return {"picks": n_select, "note": "", "project_s": fast_s, "matvec_s": plain_s, "ratio": fast_s / plain_s,
            "project_peak_MB": peak_mb(project, points, n_select) if small else float("nan"),
            "matvec_peak_MB": peak_mb(baseline, points, n_select) if small else float("nan"),
            "same": "yes" if np.array_equal(fast, plain) else "no"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="gaussian,lowdim,texture")
    parser.add_argument("--sizes", default="50000,200000")
    parser.add_argument("--keep", default="0.1,1,10")
    parser.add_argument("--mvtec_root", default=None)
    parser.add_argument("--weights", default=None, help="MobileNetV2 .pdparams (tools/convert_weights.py)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--repeat_under", type=float, default=5.0, help="seconds")
    parser.add_argument("--peak_under", type=float, default=30.0, help="seconds")
    parser.add_argument("--max_seconds", type=float, default=float("inf"),
                        help="skip cells whose baseline would take longer (estimated from 20 of its steps)")
    parser.add_argument("--save_path", default="output/bench_coreset")
    args = parser.parse_args()
    os.makedirs(args.save_path, exist_ok=True)
    csv_path = os.path.join(args.save_path, "coreset.csv")
    cache: dict = {}
    rows = []
    for kind in args.data.split(","):
        for n_points in (int(n) for n in args.sizes.split(",")):
            points = points_for(kind, n_points, args, cache)
            step_seconds = matvec_step_seconds(points) if args.max_seconds < float("inf") else 0.0
            for keep in (float(k) for k in args.keep.split(",")):
                n_select = coreset_size(len(points), keep)
                estimate = step_seconds * n_select
                if estimate > args.max_seconds:
                    cell = {"picks": n_select, "note": f"not run: baseline ~{estimate:.0f} s"}
                else:
                    cell = measure_cell(points, n_select, args.repeats, args.repeat_under, args.peak_under)
                rows.append({"data": kind, "points": len(points), "keep_%": keep, **cell})
                print(format_table(rows[-1:], COLUMNS).splitlines()[-2], flush=True)
                write_csv(csv_path, rows, COLUMNS)
    print(format_table(rows, COLUMNS))
    print(f"saved {csv_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
