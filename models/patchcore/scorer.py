"""PatchCore scoring: nearest memory-bank entry per patch, the re-weighted image score of eq. 7."""
from __future__ import annotations

import numpy as np

from models.knn import MemoryBank
from models.scoring import Scores, upsample_and_smooth
from utils.config import Config


def reweight(test_patch: np.ndarray, nearest: int, bank: MemoryBank, num_neighbors: int) -> float:
    """Paper eq. 7: s = (1 - exp|m_test - m*| / sum_{m in N_b(m*)} exp|m_test - m|) * |m_test - m*|.

    N_b(m*) is m* itself plus its b-1 nearest other bank entries, so the weight shrinks when m* sits
    in a dense part of the bank (the test patch is probably just unusual for a common pattern)
    and grows when m* is isolated.
    """
    _, support = bank.search(bank.features[nearest][None], k=num_neighbors + 1)
    others = [i for i in support[0] if i != nearest][: num_neighbors - 1]
    return neighbourhood_score(test_patch, bank.features[[nearest] + others])


def neighbourhood_score(test_patch: np.ndarray, neighbourhood: np.ndarray) -> float:
    """Eq. 7 for a test patch and its neighbourhood [b, C] (m* first, then its nearest other entries)."""
    neighbourhood = neighbourhood.astype(np.float64)
    dists = np.sqrt(((neighbourhood - test_patch.astype(np.float64)) ** 2).sum(axis=1))
    # Softmax with the max subtracted: the same ratio without overflowing exp().
    shifted = np.exp(dists - dists.max())
    weight = 1.0 - shifted[0] / shifted.sum()
    return float(weight * dists[0])


class PatchCoreScorer:
    """Scores a batch of patch embeddings [B, C, h, w] against the memory bank."""

    def __init__(self, bank: np.ndarray, image_size: int, num_neighbors: int = 9,
                 image_score: str = "reweighted", sigma: float = 4.0, array_lib: str = "numpy", product_threads: int = 1):
        if image_score not in ("reweighted", "max"):
            raise ValueError(f"image_score must be 'reweighted' or 'max', not {image_score!r}")
        self.bank = MemoryBank(bank, array_lib=array_lib, product_threads=product_threads)
        self.image_size = image_size
        self.num_neighbors = num_neighbors
        self.image_score = image_score
        self.sigma = sigma

    def __call__(self, embedding: np.ndarray) -> Scores:
        batch, channels, height, width = embedding.shape
        if channels != self.bank.dim:
            raise ValueError(f"features have {channels} channels but the memory bank has {self.bank.dim}")
        patches = np.ascontiguousarray(embedding.transpose(0, 2, 3, 1).reshape(-1, channels))
        dists, nearest = self.bank.search(patches, k=1)
        patch_scores = dists[:, 0].reshape(batch, height * width)
        nearest = nearest[:, 0].reshape(batch, height * width)
        image_scores = np.empty(batch, dtype=np.float32)
        for b in range(batch):
            worst = int(np.argmax(patch_scores[b]))
            if self.image_score == "max":
                image_scores[b] = patch_scores[b, worst]
            else:
                patch = patches[b * height * width + worst]
                image_scores[b] = reweight(patch, int(nearest[b, worst]), self.bank, self.num_neighbors)
        patch_scores = patch_scores.reshape(batch, height, width)
        maps = upsample_and_smooth(patch_scores, self.image_size, self.sigma)
        return Scores(image_scores, maps, patch_scores)


def build_scorer(arrays: dict[str, np.ndarray], config: Config, array_lib: str = "numpy",
                 product_threads: int = 1) -> PatchCoreScorer:
    """The scorer a PatchCore model file describes (registered in models.registry)."""
    m = config.model
    return PatchCoreScorer(arrays["memory_bank"], config.data.crop_size, m.num_neighbors, m.image_score, m.sigma,
                           array_lib, product_threads)
