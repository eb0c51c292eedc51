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


_ERROR_SCHEMA = {"type": "object", "required": ["error"],
                 "properties": {"error": {"type": "string"},
                                "refused": {"type": "array", "items": {"type": "object"}}}}
# Every answer that is not a success, as /openapi.json documents it for every route (a client or a
# fuzzer then knows the shape: one line of JSON).
ERROR_RESPONSES: dict[int | str, dict] = {
    status: {"description": what, "content": {"application/json": {"schema": _ERROR_SCHEMA}}}
    for status, what in ((400, "bad request, bad image, or a Host name this service does not answer to"),
                         (401, "the service token is missing or wrong"),
                         (403, "a request from another web site, or a change without the page's header"),
                         (404, "no such model, feedback image, job or path"),
                         (405, "method not allowed (see Allow)"),
                         (409, "an update is running, or the guard refused the update (see refused)"),
                         (413, "upload too large"), (415, "not a PNG, JPEG, BMP or TIFF image, or a form body"),
                         (503, "the model's queue is full or a model is not ready"))}
