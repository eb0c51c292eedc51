"""The fit / score pipeline shared by every method: data -> extractor -> method -> scores.

A method plugs in one fit function (embedding batches -> arrays) and one scorer, both named by its
record in models.registry; data, extractor, batching and scoring loops are common.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Iterator

import numpy as np
from tqdm import tqdm

from models.feature_extractor import PatchFeatureExtractor, build_extractor, extract
from models.model_file import AnomalyModel, EmbeddingStream, model_path
from models.registry import METHODS
from models.scoring import Scores
from utils.config import Config
from utils.errors import UserError


def iterate_batches(dataset: Any, batch_size: int, desc: str,
                    progress: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(images, masks, labels) numpy batches in dataset order, with a progress bar."""
    indices = range(0, len(dataset), batch_size)
    for start in tqdm(indices, desc=desc, unit="batch", disable=not progress, leave=False):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        yield (np.stack([it[0] for it in items]), np.stack([it[1] for it in items]),
               np.array([it[2] for it in items], dtype=np.int64))


def rebuild_extractor(model: AnomalyModel, pretrained: str | None = None) -> PatchFeatureExtractor:
    """Rebuild the extractor the model was fitted with, and prove it is the same one."""
    extractor = build_extractor(model.config.model, pretrained)
    if extractor.fingerprint() != model.extractor_fingerprint:
        raise UserError(
            f"backbone weights ({pretrained or model.config.model.pretrained}) differ from the ones "
            f"this model was trained with; pass the same --pretrained as for training")
    return extractor


def dynamic_embedder(model: AnomalyModel, pretrained: str | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """images [B, 3, H, W] -> embeddings with the model's own extractor on the dynamic graph."""
    extractor = rebuild_extractor(model, pretrained)
    return lambda images: extract(extractor, images)


def fit(extractor: PatchFeatureExtractor, train_set: Any, config: Config, category: str, batch_size: int = 8,
        progress: bool = True) -> tuple[AnomalyModel, Callable[[int], Iterator[np.ndarray]] | None]:
    """Fit the configured method on the training images; embeddings are streamed batch by batch.

    Returns the model and, where the fit kept them, a replay of the training embeddings (see FitResult).
    """
    start = time.perf_counter()
    embeddings = (extract(extractor, images) for images, _, _ in
                  iterate_batches(train_set, batch_size, f"{category}: features", progress))
    fit_method = METHODS[config.model.method].fit_function()
    arrays, grid, stats, training_embeddings = fit_method(EmbeddingStream(embeddings, len(train_set)), config.model,
                                                          progress)
    stats["fit_seconds"] = time.perf_counter() - start
    model = AnomalyModel(config, category, arrays, extractor.fingerprint(), grid, fit_stats=stats)
    return model, training_embeddings


def score_batches(model: AnomalyModel, extractor: PatchFeatureExtractor, dataset: Any, batch_size: int = 8,
                  progress: bool = True) -> tuple[Scores, np.ndarray, np.ndarray]:
    """Score a whole dataset: (Scores, masks [N,H,W], labels [N])."""
    scorer = model.scorer()
    parts, masks, labels = [], [], []
    for images, batch_masks, batch_labels in iterate_batches(dataset, batch_size, f"{model.category}: scoring",
                                                             progress):
        parts.append(scorer(extract(extractor, images)).check_finite())
        masks.append(batch_masks)
        labels.append(batch_labels)
    scores = Scores.concatenate(parts)
    return scores, np.concatenate(masks), np.concatenate(labels)


def load_model(path: str | None, model_dir: str, category: str | None) -> AnomalyModel:
    """The model at `path`, else <model_dir>/<category>.pdparams; refused if it is another category's."""
    if not path and not category:
        raise UserError("give --model_path or --category")
    path = path or model_path(model_dir, category)
    model = AnomalyModel.load(path)
    if category and category != model.category:
        raise UserError(f"{path} is the model of category '{model.category}', not '{category}'")
    return model
