"""The fit / score pipeline shared by every method, and PatchCore's own fit (a coreset memory bank).

A method plugs in one fit function (embedding batches -> arrays) and one scorer (models.model_file
builds it from the arrays); data, extractor, batching and scoring loops are common.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import paddle
from tqdm import tqdm

from models.feature_extractor import PatchFeatureExtractor, build_extractor
from models.model_file import FitResult, PatchCoreModel
from models.padim_fit import fit_gaussians
from models.sampling import coreset_size, greedy_coreset, random_projection
from models.scorer import Scores
from utils.config import Config, ModelConfig
from utils.errors import PatchCoreError


def iterate_batches(dataset: Any, batch_size: int, desc: str, progress: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(images, masks, labels) numpy batches in dataset order, with a progress bar."""
    indices = range(0, len(dataset), batch_size)
    for start in tqdm(indices, desc=desc, unit="batch", disable=not progress, leave=False):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        yield (np.stack([it[0] for it in items]), np.stack([it[1] for it in items]),
               np.array([it[2] for it in items], dtype=np.int64))


def extract(extractor: PatchFeatureExtractor, images: np.ndarray) -> np.ndarray:
    with paddle.no_grad():
        return extractor(paddle.to_tensor(images)).numpy()


def rebuild_extractor(model: PatchCoreModel, pretrained: str | None = None) -> PatchFeatureExtractor:
    """Rebuild the extractor the bank was made with, and prove it is the same one."""
    extractor = build_extractor(model.config.model, pretrained)
    if extractor.fingerprint() != model.extractor_fingerprint:
        raise PatchCoreError(
            f"backbone weights ({pretrained or model.config.model.pretrained}) differ from the ones "
            f"this model was trained with; pass the same --pretrained as for training")
    return extractor


def fit_memory_bank(embeddings: Iterable[np.ndarray], cfg: ModelConfig, progress: bool = True) -> FitResult:
    """PatchCore: every training patch, then a greedy coreset of k percent of them."""
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


FITTERS: dict[str, Callable[[Iterable[np.ndarray], ModelConfig, bool], FitResult]] = {
    "patchcore": fit_memory_bank,
    "padim": fit_gaussians,
}


def fit(extractor: PatchFeatureExtractor, train_set: Any, config: Config, category: str,
        batch_size: int = 8, progress: bool = True) -> PatchCoreModel:
    """Fit the configured method on the training images; embeddings are streamed batch by batch."""
    start = time.perf_counter()
    embeddings = (extract(extractor, images) for images, _, _ in
                  iterate_batches(train_set, batch_size, f"{category}: features", progress))
    arrays, grid, stats = FITTERS[config.model.method](embeddings, config.model, progress)
    stats["fit_seconds"] = time.perf_counter() - start
    return PatchCoreModel(config, category, arrays, extractor.fingerprint(), grid, fit_stats=stats)


def score_batches(model: PatchCoreModel, extractor: PatchFeatureExtractor, dataset: Any, batch_size: int = 8,
                  progress: bool = True) -> tuple[Scores, np.ndarray, np.ndarray]:
    """Score a whole dataset: (Scores, masks [N,H,W], labels [N])."""
    scorer = model.scorer()
    parts, masks, labels = [], [], []
    for images, batch_masks, batch_labels in iterate_batches(dataset, batch_size, f"{model.category}: scoring", progress):
        parts.append(scorer(extract(extractor, images)))
        masks.append(batch_masks)
        labels.append(batch_labels)
    scores = Scores.concatenate(parts)
    return scores, np.concatenate(masks), np.concatenate(labels)


def score_training_set(model: PatchCoreModel, extractor: PatchFeatureExtractor, train_set: Any,
                       batch_size: int = 8, progress: bool = True) -> Scores:
    """Scores of the good training images themselves: the reference when no labelled test split is used."""
    return score_batches(model, extractor, train_set, batch_size, progress)[0]
