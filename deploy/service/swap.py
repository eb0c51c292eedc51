"""Replacing a folder or file by another in one step, so a crash leaves one whole version.

Linux's renameat2(RENAME_EXCHANGE) swaps two paths atomically: after a crash either the old or the
new export is in place, never a mix. Where it is missing, three renames are used (a crash between
them leaves the old version beside a hidden temporary; documented in docs/deployment.md, Serving).
"""
from __future__ import annotations

import ctypes
import os
import tempfile

from utils.io import temp_prefix

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
try:
    _renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
except (OSError, AttributeError):
    _renameat2 = None


def exchange(a: str, b: str) -> None:
    """Swap what the paths `a` and `b` name (both must exist, on one file system)."""
    if _renameat2 is not None:
        if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
            return
        code = ctypes.get_errno()
        if code not in (22, 38, 95):   # EINVAL, ENOSYS, EOPNOTSUPP: the file system cannot; fall back
            raise OSError(code, os.strerror(code), a)
    parking = tempfile.mktemp(dir=os.path.dirname(b), prefix=temp_prefix("swap"), suffix=".tmp")
    os.rename(b, parking)
    os.rename(a, b)
    os.rename(parking, a)
