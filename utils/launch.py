"""Whether this process is one of the workers started by `python -m paddle.distributed.launch`."""
from __future__ import annotations

import os


def launched_world() -> tuple[int, int]:
    """(rank, world size) from the launcher's environment; (0, 1) for a plain run."""
    return int(os.environ.get("PADDLE_TRAINER_ID", 0)), int(os.environ.get("PADDLE_TRAINERS_NUM", 1))
