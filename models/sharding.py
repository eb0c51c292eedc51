"""How a fit is split between processes: this process's training images and the collectives that
join the shards. Fit code sees only this record; engine/distributed.py fills it from
paddle.distributed under `python -m paddle.distributed.launch`, and a plain run uses `Shard()`.

The split is fixed by image index: with N images and W processes, rank r extracts the contiguous
images [r N / W, (r + 1) N / W) (integer division), so its patches are one contiguous range of the
global patch numbering and every rank knows every other rank's range.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np


def shard_bounds(n_images: int, world_size: int) -> list[int]:
    """First image of every rank, then n_images: rank r holds images bounds[r] .. bounds[r+1]-1."""
    return [r * n_images // world_size for r in range(world_size)] + [n_images]


def _gather_alone(array: np.ndarray) -> np.ndarray:
    return np.asarray(array)[None]


def _reduce_alone(array: np.ndarray) -> np.ndarray:
    return np.asarray(array)


@dataclass(frozen=True)
class RowShard:
    """This process's rows first .. first + n - 1 of `total` rows numbered across the processes
    (consecutive per rank, in rank order), and the all-gather that joins them."""
    first: int
    total: int
    world_size: int = 1
    all_gather: Callable[[np.ndarray], np.ndarray] = field(default=_gather_alone, repr=False)


@dataclass(frozen=True)
class Shard:
    rank: int = 0
    world_size: int = 1
    first_image: int = 0
    total_images: int | None = None     # None: the whole stream is all there is (a plain run)
    # Same-shaped array from every rank -> stacked [world_size, ...] in rank order.
    all_gather: Callable[[np.ndarray], np.ndarray] = field(default=_gather_alone, repr=False)
    # float64 array -> its sum over the ranks.
    all_reduce_sum: Callable[[np.ndarray], np.ndarray] = field(default=_reduce_alone, repr=False)

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that shows progress and writes files."""
        return self.rank == 0

    def rows(self, rows_per_image: int, n_images: int) -> RowShard:
        """This rank's rows among every rank's, `rows_per_image` rows for each image (`n_images`
        here: all there are in a plain run)."""
        total = self.total_images if self.total_images is not None else n_images
        return RowShard(self.first_image * rows_per_image, total * rows_per_image, self.world_size, self.all_gather)

    def fit_stats(self, n_images: int, per_rank: dict[str, float] | None = None) -> dict[str, float]:
        """What a model file records of the split: world size, images per rank (`n_images` here) and
        each rank's `per_rank` values (the same keys on every rank), as rank{r}_{name}."""
        stats = {"world_size": float(self.world_size)}
        if self.world_size > 1:
            names = sorted(per_rank or {})
            values = np.array([float(n_images)] + [per_rank[name] for name in names], dtype=np.float64)
            gathered = self.all_gather(values)
            for r, row in enumerate(gathered):
                stats[f"rank{r}_images"] = float(row[0])
                stats.update({f"rank{r}_{name}": float(v) for name, v in zip(names, row[1:])})
        return stats

    def gather_rows(self, rows: np.ndarray) -> np.ndarray:
        """Every rank's rows [n_r, ...] (any n_r), concatenated in rank order, on every rank."""
        if self.world_size == 1:
            return rows
        counts = self.all_gather(np.array([len(rows)], dtype=np.int64))[:, 0]
        padded = np.zeros((int(counts.max()),) + rows.shape[1:], dtype=rows.dtype)
        padded[:len(rows)] = rows
        stacked = self.all_gather(padded)
        return np.concatenate([stacked[r, :counts[r]] for r in range(self.world_size)])
