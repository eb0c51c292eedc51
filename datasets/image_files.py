"""Every image below a folder, in a stable order: what predict.py / infer.py score and what the
export check verifies its verdicts on."""
from __future__ import annotations

import os
import sys

from datasets.preprocess import list_images


def images_below(folder: str | os.PathLike) -> list[str]:
    """The images of `folder` and of every folder below it, sorted (folders and names)."""
    paths = []
    for parent, dirs, _ in sorted(os.walk(folder, onerror=_warn_unreadable)):
        dirs.sort()
        paths += list_images(parent)
    return paths


def _warn_unreadable(err: OSError) -> None:
    # os.walk skips a folder it cannot list without a word; its images would be missing unnoticed.
    print(f"warning: skipping folder '{err.filename}': {err.strerror or err}", file=sys.stderr)
