"""The plain farthest-point loop: the rule's definition, and the oracle the tests hold every
faster selector to (bit for bit)."""
from __future__ import annotations

import numpy as np

from models.patchcore.coreset.distances import rule_distances, squared_norms, start_index


def greedy_coreset_reference(points: np.ndarray, n_select: int, seed: int = 0) -> np.ndarray:
    """Plain farthest-point selection; the definition the fast selector is tested against."""
    points = np.ascontiguousarray(points, dtype=np.float32)
    sq_norms = squared_norms(points)
    selected = [start_index(len(points), seed)]
    min_dist = rule_distances(points, sq_norms, points[selected[0]], sq_norms[selected[0]])
    for _ in range(n_select - 1):
        index = int(np.argmax(min_dist))
        selected.append(index)
        np.minimum(min_dist, rule_distances(points, sq_norms, points[index], sq_norms[index]), out=min_dist)
    return np.asarray(selected, dtype=np.int64)
