"""PatchCore fit: every training patch, then a greedy coreset of k percent of them as the memory bank."""
from __future__ import annotations

import time
from typing import Iterable

import numpy as np

from models.model_file import FitResult
from models.patchcore.sampling import coreset_size, greedy_coreset, random_projection
from utils.config import ModelConfig


def fit_memory_bank(embeddings: Iterable[np.ndarray], cfg: ModelConfig, progress: bool = True) -> FitResult:
    """Memory bank from a stream of training embeddings [B, C, h, w] (registered in models.registry)."""
    start = time.perf_counter()
    embedding = np.concatenate(list(embeddings))
    n_img, channels, height, width = embedding.shape
    patches = np.ascontiguousarray(embedding.transpose(0, 2, 3, 1).reshape(-1, channels))
    del embedding
    extracted = time.perf_counter()
    n_keep = coreset_size(len(patches), cfg.k)
    if n_keep < len(patches):
        projected = random_projection(patches, cfg.projection_dim, cfg.seed)
        selected = greedy_coreset(projected, n_keep, cfg.seed, progress=progress)
        bank = patches[np.sort(selected)]
    else:
        bank = patches
    done = time.perf_counter()
    stats = {"train_images": float(n_img), "train_patches": float(len(patches)), "bank_size": float(len(bank)),
             "feature_seconds": extracted - start, "coreset_seconds": done - extracted}
    return FitResult({"memory_bank": bank}, (height, width), stats)
