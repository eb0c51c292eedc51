"""From patch features to image scores and anomaly maps (PatchCore scoring)."""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import paddle
import paddle.nn.functional as F
from scipy.ndimage import gaussian_filter

from models.knn import MemoryBank


@dataclass
class Scores:
    image_scores: np.ndarray   # [B]
    anomaly_maps: np.ndarray   # [B, H, W] float32
    patch_scores: np.ndarray   # [B, h, w]

    @classmethod
    def concatenate(cls, parts: "list[Scores]") -> "Scores":
        """The scores of several batches as one, in order."""
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)))


def upsample_and_smooth(patch_scores: np.ndarray, size: int, sigma: float) -> np.ndarray:
    """Patch grid -> image-sized anomaly maps: bilinear upsampling then Gaussian smoothing."""
    grid = paddle.to_tensor(patch_scores[:, None].astype(np.float32))
    maps = F.interpolate(grid, size=(size, size), mode="bilinear", align_corners=False).numpy()[:, 0]
    if sigma > 0:
        # truncate=4 gives the usual 33-tap kernel for sigma 4.
        maps = np.stack([gaussian_filter(m, sigma=sigma, mode="reflect", truncate=4.0) for m in maps])
    return maps.astype(np.float32)


def reweight(test_patch: np.ndarray, nearest: int, bank: MemoryBank, num_neighbors: int) -> float:
    """Paper eq. 7: s = (1 - exp|m_test - m*| / sum_{m in N_b(m*)} exp|m_test - m|) * |m_test - m*|.

    N_b(m*) is m* itself plus its b-1 nearest other bank entries, so the weight shrinks when m* sits
    in a dense part of the bank (the test patch is probably just unusual for a common pattern)
    and grows when m* is isolated.
    """
    _, support = bank.search(bank.features[nearest][None], k=num_neighbors + 1)
    others = [i for i in support[0] if i != nearest][: num_neighbors - 1]
    neighbourhood = bank.features[[nearest] + others].astype(np.float64)
    dists = np.sqrt(((neighbourhood - test_patch.astype(np.float64)) ** 2).sum(axis=1))
    # Softmax with the max subtracted: the same ratio without overflowing exp().
    shifted = np.exp(dists - dists.max())
    weight = 1.0 - shifted[0] / shifted.sum()
    return float(weight * dists[0])


class PatchCoreScorer:
    """Scores a batch of patch embeddings [B, C, h, w] against the memory bank."""

    def __init__(self, bank: np.ndarray, image_size: int, num_neighbors: int = 9,
                 image_score: str = "reweighted", sigma: float = 4.0):
        if image_score not in ("reweighted", "max"):
            raise ValueError(f"image_score must be 'reweighted' or 'max', not {image_score!r}")
        self.bank = MemoryBank(bank)
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


def normalize(scores: np.ndarray | float, threshold: float, low: float, high: float) -> np.ndarray:
    """Map raw scores to [0, 1] with the threshold at exactly 0.5 (min-max scaled around it)."""
    span = max(high - low, 1e-12)
    return np.clip((np.asarray(scores, dtype=np.float64) - threshold) / span + 0.5, 0.0, 1.0)
