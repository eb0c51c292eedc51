"""Image and mask preprocessing shared by training, evaluation and deployment.

Deliberately free of Paddle so that infer.py can use the exact same pixels as predict.py.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from utils.errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def load_image(path: str | os.PathLike) -> Image.Image:
    """Decode an image as RGB: grayscale, palette and RGBA inputs all become three channels."""
    try:
        with Image.open(path) as img:
            img.load()
            # convert() copies even when nothing changes: 4 ms for a 900x900 image.
            return img if img.mode == "RGB" else img.convert("RGB")
    except FileNotFoundError:
        raise UserError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise UserError(f"cannot decode image '{path}': {err}") from None


def _resize_and_crop(img: Image.Image, resize: int, crop_size: int, resample: int) -> Image.Image:
    if crop_size > resize:
        raise UserError(f"crop_size ({crop_size}) must not exceed resize ({resize})")
    img = img.resize((resize, resize), resample=resample)
    # Same rounding as the usual centre crop: the extra pixel of an odd margin goes right/bottom.
    offset = int(round((resize - crop_size) / 2.0))
    return img.crop((offset, offset, offset + crop_size, offset + crop_size))


def preprocess_image(img: Image.Image, resize: int, crop_size: int,
                     mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """RGB image -> normalised float32 CHW array of size crop_size x crop_size."""
    img = _resize_and_crop(img, resize, crop_size, Image.BILINEAR)
    array = np.asarray(img, dtype=np.float32) / 255.0
    array = (array - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def load_mask(path: str | os.PathLike | None, resize: int, crop_size: int) -> np.ndarray:
    """Ground-truth mask with the image's geometry, binary uint8 (1 = defect); None -> all zero."""
    if path is None:
        return np.zeros((crop_size, crop_size), dtype=np.uint8)
    try:
        with Image.open(path) as img:
            mask = img.convert("L")
    except (FileNotFoundError, UnidentifiedImageError, OSError, ValueError) as err:
        raise UserError(f"cannot read mask '{path}': {err}") from None
    # Nearest neighbour keeps the mask binary and its edges where the annotator put them.
    mask = _resize_and_crop(mask, resize, crop_size, Image.NEAREST)
    return (np.asarray(mask) > 127).astype(np.uint8)


def resized_rgb(img: Image.Image, resize: int, crop_size: int) -> np.ndarray:
    """The uint8 RGB image the model actually saw, for visualisations."""
    return np.asarray(_resize_and_crop(img, resize, crop_size, Image.BILINEAR))


def list_images(folder: str | os.PathLike) -> list[str]:
    """Image files of a folder, sorted by name so every run sees the same order."""
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))
    return [os.path.join(folder, n) for n in names]
