"""The greedy coreset on one category's training patches under each local aggregation.

  python benchmarks/coreset_aggregation.py --data_path ../shared/data/mvtec --category bottle \
      --pretrained /tmp/bottle/mnv2.pdparams --aggregation unfold

Extracts the training patches as train.py does (MobileNetV2, 256 -> 224), projects them image by
image with the fit's seeded 128-d projection, then times the project's greedy_coreset and the plain
mat-vec greedy of benchmarks/coreset.py on the same points (--k percent kept) and checks that both
select the same indices.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils.runtime import configure_environment  # noqa: E402
configure_environment()   # the BLAS / OpenMP threading environment, before NumPy and Paddle load

from coreset import plain_matvec_greedy  # noqa: E402
from datasets.mvtec import MVTecDataset  # noqa: E402
from engine.pipeline import iterate_batches  # noqa: E402
from models.feature_extractor import build_extractor, extract  # noqa: E402
from models.patchcore.sampling import coreset_size, greedy_coreset, projection_matrix  # noqa: E402
from utils.config import AGGREGATIONS, DataConfig, ModelConfig  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_path", required=True)
    parser.add_argument("--category", default="bottle")
    parser.add_argument("--pretrained", default="imagenet")
    parser.add_argument("--aggregation", default="avgpool", choices=AGGREGATIONS)
    parser.add_argument("--k", type=float, default=10.0)
    args = parser.parse_args()
    cfg = ModelConfig(arch="mobilenet_v2", pretrained=args.pretrained, aggregation=args.aggregation, k=args.k)
    extractor = build_extractor(cfg)
    train = MVTecDataset(args.data_path, args.category, "train", DataConfig())
    projected = []
    for images, _, _ in iterate_batches(train, 8, "features", False):
        for embedding in extract(extractor, images):
            patches = embedding.reshape(embedding.shape[0], -1).T
            projected.append(patches @ projection_matrix(len(embedding), cfg.projection_dim, cfg.seed))
    points = np.concatenate(projected)
    n_keep = coreset_size(len(points), cfg.k)
    start = time.perf_counter()
    ours = greedy_coreset(points, n_keep, cfg.seed)
    middle = time.perf_counter()
    plain = plain_matvec_greedy(points, n_keep, cfg.seed)
    end = time.perf_counter()
    print(f"{args.category} {args.aggregation}: {len(points)} points -> {n_keep}: greedy_coreset "
          f"{middle - start:.1f} s, plain mat-vec greedy {end - middle:.1f} s, "
          f"same indices: {np.array_equal(np.sort(ours), np.sort(plain))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
