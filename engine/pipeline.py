"""The fit / score pipeline shared by every method: data -> extractor -> method -> scores.

A method plugs in one fit function (embedding batches -> arrays) and one scorer, both named by its
record in models.registry; data, extractor, batching and scoring loops are common.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Iterator, NamedTuple

import numpy as np
from tqdm import tqdm

from engine.distributed import make_shard
from engine.runtime_extraction import dynamic_graph, training_embedder
from engine.settings import RunSettings
from models.feature_extractor import PatchFeatureExtractor, build_extractor, extract
from models.memory_estimate import check_fit_memory
from models.model_file import AnomalyModel, EmbeddingStream, model_path
from models.registry import METHODS
from models.sharding import Shard, shard_bounds
from models.scoring import Scores
from utils.config import Config
from utils.errors import UserError
from utils.runtime import peak_memory_mb


def iterate_batches(dataset: Any, batch_size: int, desc: str,
                    progress: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(images, masks, labels) numpy batches in dataset order, with a progress bar."""
    indices = range(0, len(dataset), batch_size)
    for start in tqdm(indices, desc=desc, unit="batch", disable=not progress, leave=False):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        yield (np.stack([it[0] for it in items]), np.stack([it[1] for it in items]),
               np.array([it[2] for it in items], dtype=np.int64))


class ImageRange:
    """Items first .. last-1 of a dataset, as a dataset."""

    def __init__(self, dataset: Any, first: int, last: int):
        self.dataset, self.first, self.last = dataset, first, last

    def __len__(self) -> int:
        return self.last - self.first

    def __getitem__(self, index: int) -> Any:
        return self.dataset[self.first + index]


def shard_images(dataset: Any, shard: Shard) -> ImageRange:
    """The images of `dataset` this rank extracts (all of them in a plain run)."""
    return ImageRange(dataset, shard.first_image, shard_bounds(len(dataset), shard.world_size)[shard.rank + 1])


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
    return dynamic_graph(rebuild_extractor(model, pretrained))


def extract_batches(extractor: PatchFeatureExtractor, crop_hw: tuple[int, int], images: Any, batch_size: int,
                    desc: str, progress: bool) -> Iterator[np.ndarray]:
    """Embeddings of `images`, batch by batch, in order: the extraction step of a fit or an update.

    Both go through the same engine (engine.runtime_extraction), so an update's new features are the
    features a fit on all images would have had.
    """
    embed = training_embedder(extractor, crop_hw)
    return (embed(batch) for batch, _, _ in iterate_batches(images, batch_size, desc, progress))


class Fitted(NamedTuple):
    """A fit's model, the replay of its training embeddings where the fit kept them (see FitResult),
    and the training image each memory-bank entry came from (PatchCore)."""
    model: AnomalyModel
    replay: Callable[[int], Iterator[np.ndarray]] | None
    entry_images: np.ndarray | None


def fit(extractor: PatchFeatureExtractor, train_set: Any, config: Config, category: str,
        run: RunSettings | None = None, shard: Shard | None = None) -> Fitted:
    """Fit the configured method on the training images; embeddings are streamed batch by batch.

    `run`: batch size, progress bars and array_lib (see utils.runtime.select_device: "paddle" runs the
    method's array work on the device); default RunSettings'.
    `shard`: this process's part of a distributed fit (default: from the launcher's environment).

    Returns the model, the replay of the training embeddings where the fit kept them, and the bank
    entries' training images (Fitted).
    """
    run = run or RunSettings(data_path="", save_path="")
    start = time.perf_counter()
    # Under paddle.distributed.launch this process extracts only its shard of the images.
    shard = shard or make_shard(len(train_set))
    images = shard_images(train_set, shard)
    check_fit_memory(config, len(images), run.batch_size)      # before the first batch is decoded
    progress = run.progress and shard.is_main
    embeddings = extract_batches(extractor, config.data.crop_hw, images, run.batch_size, f"{category}: features",
                                 progress)
    fit_method = METHODS[config.model.method].fit_function()
    result = fit_method(EmbeddingStream(embeddings, len(images)), config.model, progress, run.array_lib, shard)
    arrays, grid, stats = result.arrays, result.feature_grid, result.fit_stats
    stats["fit_seconds"] = time.perf_counter() - start
    peaks = shard.all_gather(np.array([peak_memory_mb()]))[:, 0]
    stats.update({"peak_memory_mb": float(peaks.max())} if shard.world_size == 1 else
                 {f"rank{r}_peak_memory_mb": float(p) for r, p in enumerate(peaks)})
    model = AnomalyModel(config, category, arrays, extractor.fingerprint(), grid, fit_stats=stats)
    return Fitted(model, result.training_embeddings, result.entry_images)


def score_batches(model: AnomalyModel, extractor: PatchFeatureExtractor, dataset: Any,
                  run: RunSettings) -> tuple[Scores, np.ndarray, np.ndarray]:
    """Score a whole dataset: (Scores, masks [N,H,W], labels [N])."""
    scorer = model.scorer(run.array_lib)
    parts, masks, labels = [], [], []
    for images, batch_masks, batch_labels in iterate_batches(dataset, run.batch_size, f"{model.category}: scoring",
                                                             run.progress):
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
