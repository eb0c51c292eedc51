"""Micro-batching: concurrent requests to one model go through the network together.

One worker thread per model takes the first waiting image, then whatever else arrives within
`max_wait_s` (up to `max_batch`), and scores them as one batch. The queue is bounded: when it is
full `submit` refuses at once (the service answers 503) instead of letting memory grow.
"""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from typing import Callable, NamedTuple

import numpy as np

from deploy.inferencer import Inferencer, Prediction
from utils.errors import UserError


class QueueFull(Exception):
    """The model's queue holds --max_queue images already."""


class _Job(NamedTuple):
    inferencer: Inferencer   # the model version the image was preprocessed for
    image: np.ndarray
    future: Future


class MicroBatcher:
    def __init__(self, max_batch: int, max_wait_s: float, max_queue: int):
        self.max_batch, self.max_wait_s = max_batch, max_wait_s
        self.queue: queue.Queue[_Job | None] = queue.Queue(maxsize=max_queue)
        self.on_batch: Callable[[int], None] = lambda size: None   # e.g. a metric of batch sizes
        self.thread = threading.Thread(target=self._run, name="micro-batcher", daemon=True)
        self.thread.start()

    @property
    def depth(self) -> int:
        return self.queue.qsize()

    def submit(self, inferencer: Inferencer, image: np.ndarray) -> Future:
        """Queue one preprocessed image; its Future resolves to a Prediction (or the UserError)."""
        future: Future = Future()
        try:
            self.queue.put_nowait(_Job(inferencer, image, future))
        except queue.Full:
            raise QueueFull() from None
        return future

    def close(self) -> None:
        self.queue.put(None)

    def _take_batch(self) -> list[_Job] | None:
        first = self.queue.get()
        if first is None:
            return None
        batch = [first]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            try:
                job = self.queue.get(timeout=max(deadline - time.monotonic(), 0.0)) \
                    if time.monotonic() < deadline else self.queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                self.queue.put(None)   # keep the stop signal for the loop
                break
            batch.append(job)
        return batch

    def _run(self) -> None:
        while (batch := self._take_batch()) is not None:
            self.on_batch(len(batch))
            # A hot reload may leave images of two versions in one batch: each goes through its own.
            for inferencer in dict.fromkeys(job.inferencer for job in batch):
                _score(inferencer, [job for job in batch if job.inferencer is inferencer])


def _score(inferencer: Inferencer, jobs: list[_Job]) -> None:
    try:
        predictions: list[Prediction] = inferencer.predict_preprocessed(np.stack([j.image for j in jobs]))
    except Exception as err:
        if len(jobs) > 1 and isinstance(err, UserError):
            for job in jobs:   # one bad image (non-finite scores) fails only its own request
                _score(inferencer, [job])
            return
        for job in jobs:
            job.future.set_exception(err)
        return
    for job, prediction in zip(jobs, predictions):
        job.future.set_result(prediction)
