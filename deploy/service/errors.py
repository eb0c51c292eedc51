"""What the service answers when a request cannot be served: a status and one line of JSON."""
from __future__ import annotations


class ServiceError(Exception):
    """An HTTP error answered as {"error": message} with `status` (400, 401, 404, 409, 413, 415, 503)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message
