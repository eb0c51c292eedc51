"""What the service answers when a request cannot be served: a status and one line of JSON."""
from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """An HTTP error answered as {"error": message, **extra} with `status` (400, 401, 403, 404, 409, 413, 415,
    503); `extra` carries structured details, e.g. the `refused` images of a guarded update."""

    def __init__(self, status: int, message: str, **extra: Any):
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra
