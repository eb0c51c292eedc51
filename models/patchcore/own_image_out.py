"""Leave-own-image-out scores of PatchCore's training images (training side, for calibration).

A training image scored against the full bank finds its own patches there (the coreset kept some of
them), so its scores are biased low and a threshold set from them flags far too many good parts.
Scored against the bank without the entries that came from it, each training image is scored as an
unseen good image would be: every image of train/good then both fits and calibrates, and nothing
has to be held out of the bank.

Per image: the nearest entry of every patch in the full bank (the fast search of models.knn); the
patches whose nearest entry is one of the image's own are searched again over the other entries
(an exact product over the bank with the own columns excluded). The image score is eq. 7 with m*
the nearest other-image entry and its neighbourhood taken among other-image entries too.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
from tqdm import tqdm

from models.model_file import AnomalyModel
from models.knn import DEFAULT_CHUNK_BYTES, MemoryBank
from models.patchcore.scorer import PatchCoreScorer, neighbourhood_score
from models.scoring import Scores, upsample_and_smooth


def nearest_excluding(bank: MemoryBank, queries: np.ndarray, excluded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Euclidean distance, bank index) of each query's nearest entry among those not `excluded` (bool [M])."""
    rows = max(1, DEFAULT_CHUNK_BYTES // (4 * len(bank)))
    index = np.empty(len(queries), dtype=np.int64)
    for start in range(0, len(queries), rows):
        block = queries[start:start + rows]
        partial = bank.sq_norms[None, :] - 2.0 * (block @ bank.features.T)
        partial[:, excluded] = np.inf
        index[start:start + rows] = partial.argmin(axis=1)
    diff = queries.astype(np.float64) - bank.features[index]
    return np.sqrt(np.einsum("qc,qc->q", diff, diff)).astype(np.float32), index


def _image_scores(scorer: PatchCoreScorer, patches: np.ndarray, own: np.ndarray) -> tuple[np.ndarray, float]:
    """Patch scores [P] and the image score of one image's patches [P, C], its own entries `own` left out."""
    bank = scorer.bank
    dists, nearest = bank.search(patches, k=1)
    dists, nearest = dists[:, 0], nearest[:, 0]
    again = own[nearest]
    if again.any():
        dists[again], nearest[again] = nearest_excluding(bank, patches[again], own)
    worst = int(np.argmax(dists))
    if scorer.image_score == "max":
        return dists, float(dists[worst])
    matched = int(nearest[worst])
    to_matched = np.einsum("mc,mc->m", bank.features - bank.features[matched], bank.features - bank.features[matched])
    to_matched[own] = np.inf
    to_matched[matched] = np.inf
    others = np.argsort(to_matched, kind="stable")[: scorer.num_neighbors - 1]
    others = others[np.isfinite(to_matched[others])]
    return dists, neighbourhood_score(patches[worst], bank.features[np.r_[matched, others]])


def own_image_out_scores(scorer: PatchCoreScorer, entry_images: np.ndarray, embeddings: Iterable[np.ndarray],
                         first_image: int = 0, progress: bool = False) -> Scores:
    """Scores of training images (embedding batches [B, C, h, w] in image order, the first being
    training image `first_image`), each against the bank without the entries of `entry_images`
    (the training image of every bank entry) equal to its own index."""
    parts = []
    image = first_image
    for embedding in tqdm(embeddings, desc="leave-own-image-out scores", unit="batch", disable=not progress,
                          leave=False):
        batch, channels, height, width = embedding.shape
        grid = np.empty((batch, height * width), dtype=np.float32)
        image_scores = np.empty(batch, dtype=np.float32)
        for b in range(batch):
            patches = np.ascontiguousarray(embedding[b].reshape(channels, -1).T, dtype=np.float32)
            grid[b], image_scores[b] = _image_scores(scorer, patches, entry_images == image)
            image += 1
        patch_scores = grid.reshape(batch, height, width)
        parts.append(Scores(image_scores, upsample_and_smooth(patch_scores, scorer.image_size, scorer.sigma),
                            patch_scores))
    return Scores.concatenate(parts)


def leave_own_image_out(model: AnomalyModel, embeddings: Iterable[np.ndarray], entry_images: np.ndarray | None,
                        first_image: int = 0, backend: str = "numpy", progress: bool = False) -> Scores:
    """The method's leave-own-image-out scores (registered in models.registry)."""
    if entry_images is None:
        raise ValueError("leave-own-image-out scores need the training image of every bank entry")
    return own_image_out_scores(model.scorer(backend), entry_images, embeddings, first_image, progress)
