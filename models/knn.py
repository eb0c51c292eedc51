"""Nearest-neighbour search against a memory bank, in bounded memory.

Squared distances come from ||a||^2 - 2ab + ||b||^2 matrix products on chunks of queries, so the
distance matrix in memory never exceeds `max_chunk_bytes` whatever the bank or image size.
"""
from __future__ import annotations

import numpy as np
import paddle

DEFAULT_CHUNK_BYTES = 256 * 2**20


class MemoryBank:
    """A fixed set of feature vectors with their squared norms kept ready for searching."""

    def __init__(self, features: np.ndarray, max_chunk_bytes: int = DEFAULT_CHUNK_BYTES):
        if features.ndim != 2 or len(features) == 0:
            raise ValueError(f"memory bank must be a non-empty [M, C] array, got shape {features.shape}")
        self.features = np.ascontiguousarray(features, dtype=np.float32)
        self.tensor = paddle.to_tensor(self.features)
        self.sq_norms = (self.tensor * self.tensor).sum(axis=1)
        self.max_chunk_bytes = max_chunk_bytes

    def __len__(self) -> int:
        return len(self.features)

    @property
    def dim(self) -> int:
        return self.features.shape[1]

    def search(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Distances [Q, k] (ascending, Euclidean) and bank indices [Q, k] of the k nearest entries."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, len(self))
        rows = max(1, self.max_chunk_bytes // (4 * len(self)))
        dists, indices = [], []
        for start in range(0, len(queries), rows):
            chunk = paddle.to_tensor(queries[start:start + rows])
            sq = (chunk * chunk).sum(axis=1, keepdim=True) - 2.0 * paddle.matmul(chunk, self.tensor, transpose_y=True)
            sq = sq + self.sq_norms.unsqueeze(0)
            values, index = paddle.topk(sq, k=k, axis=1, largest=False, sorted=True)
            dists.append(values.numpy())
            indices.append(index.numpy())
        index = np.concatenate(indices).astype(np.int64)
        # The expanded form loses precision for near neighbours; recompute the chosen distances directly.
        diff = queries[:, None, :] - self.features[index]
        exact = np.sqrt(np.einsum("qkc,qkc->qk", diff, diff, dtype=np.float64)).astype(np.float32)
        return exact, index
