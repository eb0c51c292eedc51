"""Multi-process fit under `python -m paddle.distributed.launch` (NCCL on GPUs, gloo on CPUs).

The launcher's environment (PADDLE_TRAINERS_NUM, PADDLE_TRAINER_ID) says whether this process is one
of several; a plain `python train.py` has none of it and stays a single process. The collectives
are paddle.distributed's, wrapped for NumPy arrays; a collective that fails because another worker
has stopped becomes a one-line error, so every rank ends with one line instead of a traceback.
"""
from __future__ import annotations

import os
import time

import numpy as np

from models.sharding import Shard, shard_bounds
from utils.errors import UserError, last_line
from utils.launch import launched_world

_initialised = False
# A test aid: every collective first sleeps this many milliseconds, standing in for the round trip
# between separate machines (the launcher's workers on one machine are ~1-3 ms apart).
LATENCY_VARIABLE = "PATCHCORE_COLLECTIVE_LATENCY_MS"


def quiet_launched_worker() -> None:
    """In a launched worker, no C++ stack dump from Paddle when the launcher stops it (because
    another worker failed): that worker's one-line error is the message."""
    if launched_world()[1] > 1:
        import paddle

        paddle.disable_signal_handler()


def is_main_process() -> bool:
    return launched_world()[0] == 0


def _init() -> None:
    global _initialised
    if not _initialised:
        import paddle.distributed as dist

        dist.init_parallel_env()
        _initialised = True


def _latency_ms() -> float:
    value = os.environ.get(LATENCY_VARIABLE) or "0"
    try:
        return max(0.0, float(value))
    except ValueError:
        raise UserError(f"{LATENCY_VARIABLE} must be a number of milliseconds, not {value!r}") from None


def _collective(run, array: np.ndarray):
    time.sleep(_latency_ms() / 1000)
    try:
        return run(array)
    except RuntimeError as err:
        rank = launched_world()[0]
        raise UserError(f"worker {rank}: another worker stopped during the distributed fit "
                        f"({last_line(err, 120)}); see its log for the cause") from None


def _all_gather(array: np.ndarray) -> np.ndarray:
    import paddle
    import paddle.distributed as dist

    def run(a: np.ndarray) -> np.ndarray:
        parts: list = []
        dist.all_gather(parts, paddle.to_tensor(np.ascontiguousarray(a)))
        return np.stack([p.numpy() for p in parts])

    return _collective(run, array)


def _all_reduce_sum(array: np.ndarray) -> np.ndarray:
    import paddle
    import paddle.distributed as dist

    def run(a: np.ndarray) -> np.ndarray:
        tensor = paddle.to_tensor(np.ascontiguousarray(a))
        dist.all_reduce(tensor)
        return tensor.numpy()

    return _collective(run, array)


def make_shard(n_images: int) -> Shard:
    """This process's part of a fit on `n_images` training images (everything for a plain run)."""
    rank, world_size = launched_world()
    if world_size == 1:
        return Shard(total_images=n_images)
    if n_images < world_size:
        raise UserError(f"{n_images} training images cannot be split over {world_size} workers")
    _init()
    bounds = shard_bounds(n_images, world_size)
    return Shard(rank=rank, world_size=world_size, first_image=bounds[rank], total_images=n_images,
                 all_gather=_all_gather, all_reduce_sum=_all_reduce_sum)
