"""Leave-own-image-out scores of PatchCore's training images (training side, for calibration).

A training image scored against the full bank finds its own patches there (the coreset kept some of
them), so its scores are biased low and a threshold set from them flags far too many good parts.
Scored against the bank without the entries that came from it, each training image is scored as an
unseen good image would be: every image of train/good then both fits and calibrates, and nothing
has to be held out of the bank.

Taking an image's entries out of a coreset leaves holes a coreset fitted without that image would
not have: the greedy selection kept one entry per neighbourhood, and where it kept this image's,
the other images' near-duplicates were left out. So each removed entry is replaced by its
substitute, the nearest patch of the other training images (what the selection would most likely
have kept instead); without that the scores come out too high (generated demo bottle, 20 images,
k 10: leave-own-image-out scores 12.4-19.9 against 10.5-11.8 for the good test images).

Per image: the nearest entry of every patch in the full bank (the fast search of models.knn); the
patches whose nearest entry is one of the image's own are searched again over the other entries
(an exact product with the own columns excluded) and over the substitutes. The image score is
eq. 7 with m* and its neighbourhood taken among those same entries.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
from tqdm import tqdm

from models.knn import DEFAULT_CHUNK_BYTES, MemoryBank
from models.model_file import AnomalyModel
from models.patchcore.scorer import PatchCoreScorer, neighbourhood_score
from models.scoring import Scores, upsample_and_smooth


def nearest_excluding(bank: MemoryBank, queries: np.ndarray, excluded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Euclidean distance, bank index) of each query's nearest entry among those not `excluded` (bool [M])."""
    return nearest_rows(bank.features, bank.sq_norms, queries, excluded)


def nearest_rows(rows: np.ndarray, sq_norms: np.ndarray, queries: np.ndarray,
                 excluded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distance, index) of each query's nearest row of `rows` [M, C] (squared norms given) not `excluded`."""
    chunk = max(1, DEFAULT_CHUNK_BYTES // (4 * len(rows)))
    index = np.empty(len(queries), dtype=np.int64)
    for start in range(0, len(queries), chunk):
        partial = sq_norms[None, :] - 2.0 * (queries[start:start + chunk] @ rows.T)
        partial[:, excluded] = np.inf
        index[start:start + chunk] = partial.argmin(axis=1)
    diff = queries.astype(np.float64) - rows[index]
    return np.sqrt(np.einsum("qc,qc->q", diff, diff)).astype(np.float32), index


def _distances_to(rows: np.ndarray, point: np.ndarray) -> np.ndarray:
    diff = rows - point
    return np.einsum("mc,mc->m", diff, diff)


def _image_scores(scorer: PatchCoreScorer, patches: np.ndarray, own: np.ndarray,
                  substitutes: np.ndarray) -> tuple[np.ndarray, float]:
    """Patch scores [P] and the image score of one image's patches [P, C] against the bank without
    its own entries `own` (bool [M]) plus their `substitutes` [S, C]."""
    bank = scorer.bank
    dists, nearest = bank.search(patches, k=1)
    dists, nearest = dists[:, 0], nearest[:, 0]
    again = own[nearest]
    if again.any():
        dists[again], nearest[again] = nearest_excluding(bank, patches[again], own)
    # Entries are the bank's (index < M) or the substitutes (index M + s).
    if len(substitutes):
        sub_dist, sub_index = nearest_rows(substitutes, np.einsum("sc,sc->s", substitutes, substitutes), patches,
                                           np.zeros(len(substitutes), dtype=bool))
        closer = sub_dist < dists
        dists[closer], nearest[closer] = sub_dist[closer], len(bank) + sub_index[closer]
    worst = int(np.argmax(dists))
    if scorer.image_score == "max":
        return dists, float(dists[worst])
    entries = np.concatenate([bank.features, substitutes]) if len(substitutes) else bank.features
    matched = int(nearest[worst])
    to_matched = _distances_to(entries, entries[matched])
    to_matched[:len(own)][own] = np.inf
    to_matched[matched] = np.inf
    others = np.argsort(to_matched, kind="stable")[: scorer.num_neighbors - 1]
    others = others[np.isfinite(to_matched[others])]
    return dists, neighbourhood_score(patches[worst], entries[np.r_[matched, others]])


def own_image_out_scores(scorer: PatchCoreScorer, entry_images: np.ndarray, features: np.ndarray,
                         images: Iterable[int], progress: bool = False) -> Scores:
    """Scores of the training `images` (indices), each against the bank without the entries of
    `entry_images` (the training image of every bank entry) equal to its index, plus their
    substitutes among `features` [n_images, h, w, C] (every training image's patches, fit order)."""
    n_images, height, width, channels = features.shape
    rows = features.reshape(-1, channels)
    row_images = np.repeat(np.arange(n_images), height * width)
    row_sq_norms = np.einsum("mc,mc->m", rows, rows)
    bank = scorer.bank
    grids, image_scores = [], []
    for image in tqdm(list(images), desc="leave-own-image-out scores", unit="image", disable=not progress,
                      leave=False):
        own = entry_images == image
        substitutes = np.empty((0, channels), np.float32)
        if own.any() and n_images > 1:
            index = nearest_rows(rows, row_sq_norms, bank.features[own], row_images == image)[1]
            substitutes = rows[np.unique(index)]
            # A substitute the bank already holds (k = 100, or kept from another image) adds nothing.
            substitutes = substitutes[nearest_excluding(bank, substitutes, own)[0] > 0]
        patches = np.ascontiguousarray(rows[row_images == image], dtype=np.float32)
        grid, score = _image_scores(scorer, patches, own, substitutes)
        grids.append(grid.reshape(height, width))
        image_scores.append(score)
    patch_scores = np.stack(grids).astype(np.float32)
    return Scores(np.array(image_scores, dtype=np.float32),
                  upsample_and_smooth(patch_scores, scorer.image_size, scorer.sigma), patch_scores)


def leave_own_image_out(model: AnomalyModel, embeddings: Iterable[np.ndarray], entry_images: np.ndarray | None,
                        first_image: int = 0, array_lib: str = "numpy", progress: bool = False,
                        gather=None) -> Scores:
    """The method's leave-own-image-out scores (registered in models.registry): `embeddings` are
    this worker's training images from `first_image` on; `gather` (a distributed fit: every
    worker's rows, in rank order) gives the other workers' patches for the substitutes."""
    if entry_images is None:
        raise ValueError("leave-own-image-out scores need the training image of every bank entry")
    mine = np.concatenate([batch.transpose(0, 2, 3, 1) for batch in embeddings]).astype(np.float32, copy=False)
    features = mine if gather is None else gather(mine)
    return own_image_out_scores(model.scorer(array_lib), entry_images, features,
                                range(first_image, first_image + len(mine)), progress)
