"""Every image below a folder, in a stable order: what predict.py / infer.py score and what the
export check verifies its verdicts on."""
from __future__ import annotations

import os

from datasets.preprocess import list_images


def images_below(folder: str | os.PathLike) -> list[str]:
    """The images of `folder` and of every folder below it, sorted (folders and names)."""
    paths = []
    for parent, dirs, _ in sorted(os.walk(folder)):
        dirs.sort()
        paths += list_images(parent)
    return paths
