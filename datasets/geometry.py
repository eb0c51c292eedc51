"""The input geometry (resize and crop, height x width) chosen from the training images' shape.

`--resize auto[:N]` keeps the images' median aspect ratio with N (default 256) as the short side;
`--resize auto` alone does not crop: the whole image is inspected (the crop equals the resize).
`--crop_size auto[:N]` crops to the resized geometry's aspect with short side N (default 224). Both
sides are multiples of GRID_STRIDE, the stride of the coarsest stage the extractor uses (layer3),
so every stage's grid covers the image exactly.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Iterable

import numpy as np

from datasets.preprocess import open_image
from utils.config import DataConfig, hw
from utils.errors import UserError

GRID_STRIDE = 16
DEFAULT_RESIZE_SHORT, DEFAULT_CROP_SHORT = 256, 224
# Images whose aspect differs from the geometry's by more than this are said to be squashed.
SQUASH_WARNING_RATIO = 1.3


@dataclass(frozen=True)
class AutoGeometry:
    """What --resize auto[:N] / --crop_size auto[:N] asked for: the short sides (None: not auto)."""
    resize_short: int | None = None
    crop_short: int | None = None
    # No centre crop: the crop equals the chosen resize (--resize auto alone, or --crop_size none).
    no_crop: bool = False

    @property
    def any(self) -> bool:
        return self.resize_short is not None or self.crop_short is not None or self.no_crop


def image_sizes(paths: Iterable[str | os.PathLike]) -> np.ndarray:
    """(width, height) of each readable image, from the file headers only (no decoding); an
    unreadable one is left to the loader, whose one-line error names what is wrong with it."""
    sizes = []
    for path in paths:
        try:
            with open_image(path) as img:
                sizes.append(img.size)
        except Exception:   # whatever it is (a crafted header raises TypeError), the loader says it
            continue
    return np.array(sizes, dtype=np.float64).reshape(-1, 2)


def median_size(paths: Iterable[str | os.PathLike]) -> tuple[int, int]:
    """The median (width, height) of the images: the size a warning names."""
    sizes = image_sizes(paths)
    if not len(sizes):
        raise UserError("no training images to read the geometry from")
    width, height = np.median(sizes, axis=0)
    return int(round(width)), int(round(height))


def _stride_multiple(length: float) -> int:
    return max(GRID_STRIDE, int(round(length / GRID_STRIDE)) * GRID_STRIDE)


def shape_with_short_side(aspect: float, short: int) -> tuple[int, int]:
    """(height, width) of aspect width/height with the short side `short`, both multiples of GRID_STRIDE."""
    short = _stride_multiple(short)
    return (short, _stride_multiple(short * aspect)) if aspect >= 1 else (_stride_multiple(short / aspect), short)


def _as_size(height: int, width: int) -> int | tuple[int, int]:
    return height if height == width else (height, width)


def choose_geometry(data: DataConfig, auto: AutoGeometry, image_size: tuple[int, int]) -> DataConfig:
    """`data` with the auto sides chosen for images of median `image_size` (width, height)."""
    resize = data.resize
    if auto.resize_short is not None:
        resize = _as_size(*shape_with_short_side(image_size[0] / image_size[1], auto.resize_short))
    crop = resize if auto.no_crop else data.crop_size
    if auto.crop_short is not None:
        height, width = hw(resize)
        crop_h, crop_w = shape_with_short_side(width / height, auto.crop_short)
        crop = _as_size(min(crop_h, height), min(crop_w, width))
    return replace(data, resize=resize, crop_size=crop)


def squash_warning(data: DataConfig, image_size: tuple[int, int], category: str) -> str | None:
    """One warning line when the resize squashes the images' median shape by more than
    SQUASH_WARNING_RATIO, naming their size and the option that keeps it; else None."""
    width, height = image_size
    resize_h, resize_w = data.resize_hw
    ratio = (width / height) / (resize_w / resize_h)
    if max(ratio, 1 / ratio) <= SQUASH_WARNING_RATIO:
        return None
    kept = shape_with_short_side(width / height, min(resize_h, resize_w))
    return (f"warning: {category}: the training images are {width}x{height} (width x height, median) but "
            f"--resize {resize_h},{resize_w} changes their aspect {max(ratio, 1 / ratio):.2f}x; "
            f"--resize auto (here {kept[0]},{kept[1]}) keeps it")


def crop_warning(data: DataConfig, category: str) -> str | None:
    """One warning line when the centre crop discards image area (how much, and the option that
    keeps the whole image); None without a crop."""
    (resize_h, resize_w), (crop_h, crop_w) = data.resize_hw, data.crop_hw
    if (crop_h, crop_w) == (resize_h, resize_w):
        return None
    lost = 1.0 - (crop_h * crop_w) / (resize_h * resize_w)
    return (f"warning: {category}: the centre crop {crop_h}x{crop_w} of the {resize_h}x{resize_w} resize discards "
            f"{100 * lost:.1f}% of every image ({(resize_h - crop_h) / 2:g} px top and bottom, "
            f"{(resize_w - crop_w) / 2:g} px left and right): a defect there is never seen; "
            f"--crop_size none (or equal to --resize) inspects the whole image")
