"""Memory-bank search: the grouped (pruned) search against the full product, over data and bank sizes.

For each kind of data a bank is selected from training points by the project's coreset at the
given keep ratio and queried with held-out points, one image (784 patches) per search, as infer.py
does. Both searches return the same nearest entries; the table gives their time per image (wall
and process CPU), how many chunks the grouped search answered by pruning, and the speed-up.

    python benchmarks/knn.py --data gaussian,lowdim,texture,bottle --train_images 200 --keep 1,10 \\
        --mvtec_root MVTEC_ROOT --weights mnv2.pdparams --save_path output/bench_knn

Data: as benchmarks/coreset.py (128-d). For bottle the queries are the test images' patches.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from utils.runtime import configure_environment  # noqa: E402
configure_environment()   # the BLAS / OpenMP threading environment, before NumPy and Paddle load

import numpy as np  # noqa: E402

from benchmarks.coreset import PATCHES_PER_IMAGE, points_for  # noqa: E402
from models.knn import MemoryBank  # noqa: E402
from models.patchcore.sampling import coreset_size, greedy_coreset  # noqa: E402
from utils.table import format_table, print_and_save, write_csv  # noqa: E402

COLUMNS = ("data", "bank", "keep_%", "query_images", "full_ms", "grouped_ms", "full_cpu_ms", "grouped_cpu_ms",
           "pruned_chunks", "speedup", "same")


def bottle_test_queries(args: argparse.Namespace) -> np.ndarray:
    """Projected patch features of the bottle test images (the same projection as points_for)."""
    from datasets.mvtec import MVTecDataset
    from engine.pipeline import iterate_batches
    from models.feature_extractor import build_extractor, extract
    from models.patchcore.sampling import projection_matrix
    from utils.config import DataConfig, ModelConfig

    test = MVTecDataset(args.mvtec_root, "bottle", "test", DataConfig())
    extractor = build_extractor(ModelConfig(arch="mobilenet_v2", pretrained=args.weights))
    embedding = np.concatenate([extract(extractor, images) for images, _, _ in iterate_batches(test, 8, "test", True)])
    features = embedding.transpose(0, 2, 3, 1).reshape(-1, embedding.shape[1])
    return np.ascontiguousarray(features @ projection_matrix(features.shape[1], 128, 0))


def train_and_queries(kind: str, args: argparse.Namespace, cache: dict) -> tuple[np.ndarray, np.ndarray]:
    n_train = args.train_images * PATCHES_PER_IMAGE
    n_query = args.query_images * PATCHES_PER_IMAGE
    if kind == "bottle":
        return points_for(kind, n_train, args, cache), bottle_test_queries(args)[:n_query]
    points = points_for(kind, n_train + n_query, args, cache)
    return points[:n_train], points[n_train:]


def time_search(bank: MemoryBank, queries: np.ndarray) -> tuple[float, float, np.ndarray]:
    """(wall ms per image, CPU ms per image, nearest indices), one image per search."""
    wall = cpu = 0.0
    found = []
    for start in range(0, len(queries), PATCHES_PER_IMAGE):
        w, c = time.perf_counter(), time.process_time()
        found.append(bank.search(queries[start:start + PATCHES_PER_IMAGE], k=1)[1])
        wall += time.perf_counter() - w
        cpu += time.process_time() - c
    images = len(queries) / PATCHES_PER_IMAGE
    return 1000 * wall / images, 1000 * cpu / images, np.concatenate(found)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="gaussian,lowdim,texture")
    parser.add_argument("--train_images", type=int, default=200, help="images' worth of points the bank is picked from")
    parser.add_argument("--query_images", type=int, default=40)
    parser.add_argument("--keep", default="1,10", help="coreset percentages")
    parser.add_argument("--mvtec_root", default=None)
    parser.add_argument("--weights", default=None, help="MobileNetV2 .pdparams for texture/bottle features")
    parser.add_argument("--save_path", default="output/bench_knn")
    args = parser.parse_args()
    os.makedirs(args.save_path, exist_ok=True)
    rows, cache = [], {}
    for kind in args.data.split(","):
        train, queries = train_and_queries(kind, args, cache)
        for keep in (float(k) for k in args.keep.split(",")):
            bank_points = train[np.sort(greedy_coreset(train, coreset_size(len(train), keep)))]
            full, grouped = MemoryBank(bank_points, grouped=False), MemoryBank(bank_points)
            time_search(grouped, queries[:PATCHES_PER_IMAGE])        # warm-up (and first probe)
            grouped.chunk_counts = {"grouped": 0, "full": 0}
            full_ms, full_cpu, full_index = time_search(full, queries)
            grouped_ms, grouped_cpu, grouped_index = time_search(grouped, queries)
            rows.append({"data": kind, "bank": len(bank_points), "keep_%": keep,
                         "query_images": len(queries) // PATCHES_PER_IMAGE, "full_ms": full_ms,
                         "grouped_ms": grouped_ms, "full_cpu_ms": full_cpu, "grouped_cpu_ms": grouped_cpu,
                         "pruned_chunks": f"{grouped.chunk_counts['grouped']}/{sum(grouped.chunk_counts.values())}",
                         "speedup": full_ms / grouped_ms, "same": bool(np.array_equal(full_index, grouped_index))})
            print(format_table(rows[-1:], COLUMNS), flush=True)
            write_csv(os.path.join(args.save_path, "knn.csv"), rows, COLUMNS)
    print_and_save(rows, COLUMNS, os.path.join(args.save_path, "knn.csv"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
