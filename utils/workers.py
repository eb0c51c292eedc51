"""A few threads for array work that lets go of the GIL (the memory bank's BLAS products)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable


class Workers:
    """`count` threads, started at the first parallel map; with one, everything runs on the caller's thread."""

    def __init__(self, count: int):
        if count < 1:
            raise ValueError(f"the thread count must be at least 1, not {count}")
        self.count = int(count)
        self._pool: ThreadPoolExecutor | None = None

    def map(self, function: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
        """[function(item) for item in items], spread over the threads; the first error is raised."""
        items = list(items)
        if self.count == 1 or len(items) < 2:
            return [function(item) for item in items]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.count, thread_name_prefix="scoring")
        return list(self._pool.map(function, items))
