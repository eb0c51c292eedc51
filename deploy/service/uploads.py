"""Reading an uploaded image safely: bounded size, multipart or raw body, type from the bytes."""
from __future__ import annotations

import asyncio

from starlette.requests import ClientDisconnect, Request

from deploy.service.errors import ServiceError

# Magic numbers of the formats the scoring scripts read (datasets.preprocess.IMAGE_EXTENSIONS);
# the file name and the declared content type are never trusted.
SIGNATURES = ((b"\x89PNG\r\n\x1a\n", ".png"), (b"\xff\xd8\xff", ".jpg"), (b"BM", ".bmp"),
              (b"II*\x00", ".tif"), (b"MM\x00*", ".tif"))


def sniff_extension(data: bytes) -> str:
    """The image type of `data` from its first bytes, as a file extension; 415 when it is none of ours."""
    for magic, extension in SIGNATURES:
        if data.startswith(magic):
            return extension
    raise ServiceError(415, "unsupported image type: send a PNG, JPEG, BMP or TIFF image")


async def read_image_upload(request: Request, max_bytes: int, timeout_s: float = 30.0) -> bytes:
    """The image of a request: the part named 'file' of a multipart form, or else the raw body.

    A client that sends nothing for `timeout_s` (e.g. a Content-Length larger than what it sends)
    gets a 408 and its connection is closed: uvicorn itself would wait for the rest forever."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise ServiceError(413, f"upload larger than the limit of {max_bytes / 2**20:g} MB (--max_upload_mb)")
    body = bytearray()
    chunks = request.stream().__aiter__()
    try:
        while True:
            try:
                chunk = await asyncio.wait_for(chunks.__anext__(), timeout_s)
            except StopAsyncIteration:
                break
            body += chunk
            if len(body) > max_bytes:
                raise ServiceError(413, f"upload larger than the limit of {max_bytes / 2**20:g} MB (--max_upload_mb)")
    except ClientDisconnect:
        raise ServiceError(400, "the client disconnected during the upload") from None
    except asyncio.TimeoutError:
        raise ServiceError(408, f"the upload stalled: nothing received for {timeout_s:g} s (--upload_timeout); "
                                f"was its Content-Length right?") from None
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        request._body = bytes(body)   # Starlette parses the form from the body already read
        try:
            form = await request.form()
        except Exception as err:
            raise ServiceError(400, f"cannot parse the multipart form: {str(err)[:100]}") from None
        part = form.get("file")
        if part is None or isinstance(part, str):
            raise ServiceError(400, "the multipart form has no file field named 'file'")
        data = await part.read()
    else:
        data = bytes(body)
    if not data:
        raise ServiceError(400, "empty upload: send an image as the body or as the form field 'file'")
    sniff_extension(data)
    return data
