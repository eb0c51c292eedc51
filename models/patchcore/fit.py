"""PatchCore fit: every training patch, then a greedy coreset of k percent of them as the memory bank.

Memory is bounded by what the method needs: the patch features stream batch by batch into one
preallocated [patches, C] array, and their random projection (the coreset's input) into one
[patches, projection_dim] array, image by image; nothing is concatenated or copied whole.
"""
from __future__ import annotations

import itertools
import time
from typing import Iterator

import numpy as np

from models.model_file import EmbeddingStream, FitResult
from models.patchcore.coreset import ARRAY_LIBS, coreset_size, projection_matrix, select_coreset
from models.patchcore.coreset.projection import ProjectedRows
from models.sharding import Shard
from utils.config import ModelConfig
from utils.errors import UserError
from utils.runtime import available_memory_bytes, format_bytes

# Selector state per patch: distances, filter bounds, norms, owner, cluster lists (see sampling).
SELECTION_BYTES_PER_PATCH = 48


def fit_bytes(n_patches: int, channels: int, projection_dim: int, projected: bool) -> int:
    """Memory the fit needs beyond the network: features, projection and selector state."""
    per_patch = 4 * channels + (4 * projection_dim + SELECTION_BYTES_PER_PATCH if projected else 0)
    return n_patches * per_patch


def bank_entries(n_patches: int, cfg: ModelConfig) -> int:
    """Entries the coreset keeps out of `n_patches`: --bank_size (a budget) or else --k percent."""
    return min(n_patches, cfg.bank_size) if cfg.bank_size else coreset_size(n_patches, cfg.k)


def estimate_fit_bytes(positions: int, channels: int, n_images: int, batch_size: int, cfg: ModelConfig) -> int:
    """The fit's own arrays (models.memory_estimate): the features, the projection and the selector state."""
    n_patches = n_images * positions
    return fit_bytes(n_patches, channels, cfg.projection_dim, projected=bank_entries(n_patches, cfg) < n_patches)


def check_memory(n_images: int, grid: tuple[int, int], channels: int, needed: int) -> None:
    """Refuse up front, with the numbers and the options, a fit that cannot fit in memory."""
    available = available_memory_bytes()
    if available is not None and needed > available:
        raise UserError(
            f"the PatchCore fit needs about {format_bytes(needed)} ({n_images} images x {grid[0]}x{grid[1]} "
            f"patches x {channels} channels) but only {format_bytes(available)} of memory is available; "
            f"use a smaller --resize/--crop_size or fewer training images")


def check_bank_size(n_keep: int, n_patches: int, cfg: ModelConfig) -> None:
    """Refuse a bank too small for eq. 7: the re-weighting compares the nearest entry with its
    --num_neighbors - 1 nearest others, and a 1-entry bank (--k 1e-9) scored every image 0.0."""
    if cfg.image_score == "reweighted" and n_keep < cfg.num_neighbors:
        smallest = 100.0 * cfg.num_neighbors / n_patches
        raise UserError(f"--k {cfg.k:g} keeps {n_keep} of {n_patches} training patches, fewer than the "
                        f"{cfg.num_neighbors} bank entries eq. 7's re-weighting compares (--num_neighbors): "
                        f"use --k {smallest:.3g} or more, or --image_score max")


def fit_memory_bank(stream: EmbeddingStream, cfg: ModelConfig, progress: bool = True,
                    array_lib: str = "numpy", shard: Shard | None = None) -> FitResult:
    """Memory bank from a stream of training embeddings [B, C, h, w] (registered in models.registry).

    array_lib "numpy": projection and selection on the CPU. "paddle": both as Paddle tensor ops on the
    current device (a GPU after paddle.set_device("gpu")); the full features stay in host memory.

    `shard` (a multi-process fit, see models.sharding): the stream holds this rank's images only;
    the selection runs over all ranks' patches (on the host) and the chosen full-dimension features
    are gathered, so every rank ends with the bank of a single-process fit. select_coreset decides
    how each case is selected.
    """
    if array_lib not in ARRAY_LIBS:
        raise ValueError(f"array_lib must be one of {ARRAY_LIBS}, not {array_lib!r}")
    start = time.perf_counter()
    batches = iter(stream.batches)
    first = next(batches)
    _, channels, height, width = first.shape
    per_image = height * width
    shard = shard or Shard()
    rows = shard.rows(per_image, stream.n_images)          # this rank's patches among all ranks'
    n_patches = stream.n_images * per_image
    n_keep = bank_entries(rows.total, cfg)
    check_bank_size(n_keep, rows.total, cfg)
    reduce = n_keep < rows.total
    check_memory(stream.n_images, (height, width), channels, fit_bytes(n_patches, channels, cfg.projection_dim, reduce))
    features = np.empty((n_patches, channels), dtype=np.float32)
    projected = ProjectedRows(n_patches, channels, cfg.projection_dim, cfg.seed, array_lib) if reduce else None
    row = 0
    for batch in itertools.chain([first], batches):
        for image in batch:
            block = slice(row, row + per_image)
            features[block] = image.reshape(channels, per_image).T
            if projected is not None:
                projected.fill(block, features[block])
            row += per_image
    if row != n_patches:
        raise ValueError(f"the stream promised {stream.n_images} images but held {row // per_image}")
    extracted = time.perf_counter()
    mine, selection_stats = slice(None), {}
    projected_any = projected is not None
    if projected_any:
        selected = np.sort(select_coreset(projected.points, n_keep, seed=cfg.seed, array_lib=array_lib, shard=rows,
                                          progress=progress and shard.is_main, stats=selection_stats))
        mine = selected[(selected >= rows.first) & (selected < rows.first + n_patches)] - rows.first
    projected = None
    selected_at = time.perf_counter()
    # Ranks hold consecutive patch ranges, so rank order is global order: the single-process bank.
    bank = shard.gather_rows(features[mine])
    done = time.perf_counter()
    stats = {"train_images": float(rows.total // per_image), "train_patches": float(rows.total),
             "bank_size": float(len(bank)), "feature_seconds": extracted - start,
             "coreset_seconds": selected_at - extracted, **shard.fit_stats(stream.n_images, selection_stats)}
    if shard.world_size > 1:
        stats["gather_seconds"] = done - selected_at

    def training_embeddings(batch_size: int) -> Iterator[np.ndarray]:
        grid = features.reshape(stream.n_images, height, width, channels)
        for first_image in range(0, stream.n_images, batch_size):
            yield grid[first_image:first_image + batch_size].transpose(0, 3, 1, 2)

    # Bank rows are in global patch order, so an entry's image is its patch index // patches per image.
    entry_images = (selected if projected_any else np.arange(rows.total)) // per_image
    return FitResult({"memory_bank": bank}, (height, width), stats, training_embeddings, entry_images)


def extend_memory_bank(arrays: dict[str, np.ndarray], stream: EmbeddingStream, cfg: ModelConfig,
                       progress: bool = True) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """The bank with `cfg.k` percent of the new images' patches added: the greedy selection goes on
    (greedy_coreset_continued, on the model's own seeded projection) with every bank entry as an
    already-chosen centre, so the new entries are the new patches least covered by the bank.

    With a bank budget (`cfg.bank_size`) the bank stays at that size: the greedy selection picks
    that many entries again out of the bank and the new patches together."""
    bank = arrays["memory_bank"]
    start = time.perf_counter()
    parts = [image.reshape(image.shape[0], -1).T for batch in stream.batches for image in batch]
    if not parts:
        raise UserError("no new images to add")
    features = np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)
    if features.shape[1] != bank.shape[1]:
        raise UserError(f"new features have {features.shape[1]} channels but the memory bank has {bank.shape[1]}")
    extracted = time.perf_counter()
    matrix = projection_matrix(bank.shape[1], cfg.projection_dim, cfg.seed)
    if cfg.bank_size:
        pooled = np.concatenate([bank, features])
        extended = pooled[np.sort(select_coreset(pooled @ matrix, bank_entries(len(pooled), cfg), seed=cfg.seed,
                                                 progress=progress))]
        n_add = len(extended) - len(bank)
    else:
        n_add = coreset_size(len(features), cfg.k)
        picks = select_coreset(features @ matrix, n_add, centres=bank @ matrix, progress=progress)
        extended = np.concatenate([bank, features[np.sort(picks)]])
    stats = {"update_patches": float(len(features)), "update_added": float(n_add), "bank_size": float(len(extended)),
             "update_feature_seconds": extracted - start, "update_coreset_seconds": time.perf_counter() - extracted}
    stats["train_patches"] = stats["update_patches"]      # the caller adds the patches seen before
    return {"memory_bank": extended}, stats
