"""Image and mask preprocessing shared by training, evaluation and deployment.

Deliberately free of Paddle so that infer.py can use the exact same pixels as predict.py.
"""
from __future__ import annotations

import contextlib
import os
import stat
import sys
import threading
import warnings
from typing import BinaryIO, Iterator, Sequence

import numpy as np
from PIL import Image, ImageOps

from utils.config import hw
from utils.errors import UserError, first_line

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


# Pillow's own check warns between 1x and 2x Image.MAX_IMAGE_PIXELS and refuses only above: one
# limit instead (Pillow's default, 89.5 Mpx), checked by open_image from the header before
# decoding and refused in one line. Pillow's global setting is left as it is (importing this
# module changes no process-wide state): its warning is turned into our refusal for the one
# Image.open call only (see _header).
MAX_IMAGE_PIXELS = 89_478_485
# warnings.catch_warnings swaps the process's filters while it is active: our own threads (the
# reader thread, the service's decoding pool) take turns so that none restores another's filters.
_HEADER_LOCK = threading.Lock()
# EXIF tag 0x0112: how the camera was held. 1 is upright; 2..8 are mirrored and/or rotated.
_EXIF_ORIENTATION = 0x0112


def open_regular_file(path: str | os.PathLike) -> BinaryIO:
    """`path` opened for reading; UserError if it is not a regular file.

    Opened non-blocking and checked on the open descriptor: a plain open() of a named pipe waits
    forever for a writer, and checking the name first would leave a gap for it to be swapped.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UserError(f"'{path}' is not a regular file (a folder, pipe, socket or device): not reading it")
    return os.fdopen(fd, "rb")


@contextlib.contextmanager
def open_image(path: str | os.PathLike) -> Iterator[Image.Image]:
    """The image at `path`, header read but not decoded; UserError if it is not a regular file or
    has more than MAX_IMAGE_PIXELS pixels."""
    # An open stream (an upload) is read as it is; a path is opened as a regular file only.
    source = contextlib.nullcontext(path) if hasattr(path, "read") else open_regular_file(path)
    with source as f, _header(f, path) as img:
        if img.width * img.height > MAX_IMAGE_PIXELS:
            raise _too_large(path, img.width, img.height)
        yield img


def _too_large(path: object, width: int | str, height: int | str) -> UserError:
    return UserError(f"image '{path}' is too large to decode safely: {width}x{height} pixels, "
                     f"more than {MAX_IMAGE_PIXELS}")


def _header(f: BinaryIO, path: object) -> Image.Image:
    """Image.open(f) (the header only), Pillow's pixel-limit warning or error raised as our refusal."""
    with _HEADER_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return Image.open(f)
        except (Image.DecompressionBombWarning, Image.DecompressionBombError):
            raise _too_large(path, "more than", "the limit of") from None


def upright(img: Image.Image) -> Image.Image:
    """The image as viewers show it: its EXIF orientation applied (phone photos are stored sideways
    with a tag saying so). Every loader (training, evaluation, predict, infer, the service, masks)
    goes through here, so training and inference always see the same pixels."""
    if img.getexif().get(_EXIF_ORIENTATION, 1) in (2, 3, 4, 5, 6, 7, 8):
        return ImageOps.exif_transpose(img)
    return img


def load_image(path: str | os.PathLike | BinaryIO, name: str | None = None) -> Image.Image:
    """Decode an image (a file, or an open binary stream called `name` in errors) as 8-bit RGB,
    whatever its mode (see `to_rgb8` for the bit-depth rule)."""
    if name is not None:
        return _load_named(path, name)
    try:
        with open_image(path) as img:
            img.load()
            return to_rgb8(upright(img), path)
    except UserError:
        raise
    except FileNotFoundError:
        raise UserError(f"image not found: {path}") from None
    except PermissionError:
        raise UserError(f"cannot read image '{path}': permission denied") from None
    except Exception as err:
        # Any decoder failure costs only this image (a crafted TIFF makes Pillow raise TypeError, a
        # deep one MemoryError): the callers turn it into an error row, a 400, or a named refusal.
        raise UserError(f"cannot decode image '{path}': {first_line(err)}") from None


def _load_named(stream: BinaryIO, name: str) -> Image.Image:
    try:
        return load_image(stream)
    except UserError as err:
        raise UserError(str(err).replace(repr(stream), name)) from None


def to_rgb8(img: Image.Image, path: str | os.PathLike = "image") -> Image.Image:
    """Any PIL mode -> 8-bit RGB. The rule for deep images (fixed, never per image, so scores stay comparable):

    - 16-bit integer modes (I;16*, and I as Pillow opens 16-bit PNG/TIFF): value / 257, rounded, so
      65535 -> 255 and an 8-bit image saved as 16-bit (x * 257) gives back exactly x. Values outside
      0..65535 (32-bit I) are clipped. 12-bit data stored in 16 bits keeps its scale (it looks dark):
      shift it left by 4 bits first if it is not already MSB-aligned.
    - F (32-bit float): values in [0, 1] are scaled by 255; otherwise the image is taken as 0..255
      (clipped). NaN/inf pixels are refused.
    - Everything else (1, L, P, LA, PA, RGBA, CMYK, YCbCr, 16-bit RGB, which Pillow reduces to 8
      bits itself) goes through PIL's own conversion; alpha is dropped.
    """
    if img.mode.startswith("I") or img.mode == "F":
        values = np.asarray(img)
        if values.ndim != 2:
            raise UserError(f"cannot decode image '{path}': unsupported {img.mode} layout {values.shape}")
        values = values.astype(np.float64)
        if img.mode == "F":
            if not np.isfinite(values).all():
                raise UserError(f"image '{path}' has NaN or infinite pixels")
            scale = 255.0 if values.size and values.max() <= 1.0 else 1.0
            gray = np.clip(values * scale, 0, 255)
        else:
            gray = np.clip(values, 0, 65535) / 257.0
        img = Image.fromarray(np.rint(gray).astype(np.uint8), mode="L")
    # convert() copies even when nothing changes: 4 ms for a 900x900 image.
    return img if img.mode == "RGB" else img.convert("RGB")


def _plain_bilinear(img: Image.Image, width: int, height: int) -> Image.Image:
    """Two-tap bilinear resampling (pixel centres aligned, no widening of the filter when shrinking),
    as OpenCV's INTER_LINEAR does; rounded back to 8 bits."""
    values = np.asarray(img, dtype=np.float32)

    def taps(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        source = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
        low = np.floor(source).astype(np.int64)
        return low, np.minimum(low + 1, n_in - 1), (source - low).astype(np.float32)

    y0, y1, wy = taps(height, values.shape[0])
    x0, x1, wx = taps(width, values.shape[1])
    wy = wy.reshape((-1, 1) + (1,) * (values.ndim - 2))
    wx = wx.reshape((1, -1) + (1,) * (values.ndim - 2))
    rows = values[y0] * (1 - wy) + values[y1] * wy
    out = rows[:, x0] * (1 - wx) + rows[:, x1] * wx
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), mode=img.mode)


def _resize_and_crop(img: Image.Image, resize: int | tuple[int, int], crop_size: int | tuple[int, int],
                     resample: int, interpolation: str = "antialias") -> Image.Image:
    (height, width), (crop_h, crop_w) = hw(resize), hw(crop_size)
    if crop_h > height or crop_w > width:
        raise UserError(f"crop_size ({crop_size}) must not exceed resize ({resize})")
    if interpolation == "bilinear" and resample == Image.BILINEAR:
        img = _plain_bilinear(img, width, height)
    else:
        img = img.resize((width, height), resample=resample)     # PIL sizes are width x height
    # Same rounding as the usual centre crop: the extra pixel of an odd margin goes right/bottom.
    top, left = int(round((height - crop_h) / 2.0)), int(round((width - crop_w) / 2.0))
    return img.crop((left, top, left + crop_w, top + crop_h))


def preprocess_image(img: Image.Image, resize: int | tuple[int, int], crop_size: int | tuple[int, int],
                     mean: Sequence[float], std: Sequence[float], interpolation: str = "antialias") -> np.ndarray:
    """RGB image -> normalised float32 CHW array of size crop_size (height x width)."""
    img = _resize_and_crop(img, resize, crop_size, Image.BILINEAR, interpolation)
    array = np.asarray(img, dtype=np.float32) / 255.0
    array = (array - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(array.transpose(2, 0, 1))


# A mask is binary-like if nearly all its pixels are black or white: JPEG noise and anti-aliased
# edges are tolerated, a coloured (e.g. pure red, gray 76 once converted) or gray-scale map is not.
MASK_TOLERANCE = 10          # gray levels counted as black (<= 10) or white (>= 245)
MASK_MAX_UNSURE = 0.01       # share of pixels allowed in between


def load_mask(path: str | os.PathLike | None, resize: int | tuple[int, int], crop_size: int | tuple[int, int],
              image_size: tuple[int, int] | None = None) -> np.ndarray:
    """Ground-truth mask with the image's geometry, binary uint8 (1 = defect); None -> all zero.

    Refused with a one-line error naming the file: a mask whose size differs from its image's
    (`image_size`, width x height: it would be stretched onto the wrong pixels) or whose values are
    not binary-like (see MASK_TOLERANCE). 0/1-valued masks are read as such.
    """
    if path is None:
        return np.zeros(hw(crop_size), dtype=np.uint8)
    try:
        with open_image(path) as img:
            img.load()
            img = upright(img)
            mask = to_rgb8(img, path).convert("L") if img.mode != "L" else img.copy()
    except UserError as err:
        raise UserError(f"cannot read mask '{path}': {err}") from None
    except Exception as err:   # as load_image: any decoder failure is this file's one-line error
        raise UserError(f"cannot read mask '{path}': {first_line(err)}") from None
    if image_size is not None and mask.size != tuple(image_size):
        raise UserError(f"mask '{path}' is {mask.size[0]}x{mask.size[1]}, its image {image_size[0]}x{image_size[1]}")
    values = np.asarray(mask)
    if values.max() <= 1:
        values = values * 255   # a 0/1 label image
    else:
        unsure = ((values > MASK_TOLERANCE) & (values < 255 - MASK_TOLERANCE)).mean()
        if unsure > MASK_MAX_UNSURE:
            raise UserError(f"mask '{path}' is not black and white ({unsure:.0%} of its pixels are neither)")
    # Nearest neighbour keeps the mask binary and its edges where the annotator put them.
    mask = _resize_and_crop(Image.fromarray(values.astype(np.uint8), mode="L"), resize, crop_size, Image.NEAREST)
    return (np.asarray(mask) > 127).astype(np.uint8)


def resized_rgb(img: Image.Image, resize: int | tuple[int, int], crop_size: int | tuple[int, int],
                interpolation: str = "antialias") -> np.ndarray:
    """The uint8 RGB image the model actually saw, for visualisations."""
    return np.asarray(_resize_and_crop(img, resize, crop_size, Image.BILINEAR, interpolation))


def _is_special(path: str) -> bool:
    """An existing entry that is not a regular file (pipe, socket, device, folder): never an image."""
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False   # missing or unreadable: load_image says so for that image


def list_images(folder: str | os.PathLike) -> list[str]:
    """Image files of a folder, sorted by name so every run sees the same order.

    Entries with an image name that are not regular files (a named pipe would block the run) are
    left out with a warning line on stderr.
    """
    paths = [os.path.join(folder, n) for n in sorted(os.listdir(folder)) if n.lower().endswith(IMAGE_EXTENSIONS)]
    special = [p for p in paths if _is_special(p)]
    for path in special:
        print(f"warning: skipping '{path}': not a regular file", file=sys.stderr)
    return [p for p in paths if p not in set(special)]
