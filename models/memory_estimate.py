"""Memory a fit will need, estimated from the settings alone and checked before anything is allocated.

The fits check their own arrays once the first batch has shown the feature grid (check_memory in
models.patchcore.fit), but that first batch can already exhaust the machine: --resize 10000 took
24 GB and a kernel OOM kill, with nothing on stderr. This estimate needs only the geometry (resize
and crop, the arch's stage channels and strides, the batch size and the number of images), so the
run is refused in one line before the first image is decoded. It is a lower bound (the network's
inner layers and Paddle's allocator add to it): it refuses only what surely cannot fit.
"""
from __future__ import annotations

from models.registry import METHODS
from models.shapes import batch_bytes, embedding_width, feature_grid
from utils.config import Config
from utils.errors import UserError
from utils.runtime import available_memory_bytes, format_bytes

def method_bytes(config: Config, n_images: int, batch_size: int) -> int:
    """The fit's own arrays: PatchCore's features, projection and selector state; PaDiM's float64
    running sums and a batch of them, and the float32 inverse covariances."""
    grid_h, grid_w = feature_grid(config)
    positions, channels = grid_h * grid_w, embedding_width(config)
    m = config.model
    return METHODS[m.method].fit_bytes_function()(positions, channels, n_images, batch_size, m)


def _fit_parts(config: Config, n_images: int, batch_size: int) -> tuple[int, int, int]:
    """(images in the first batch, that batch's bytes, the fit's arrays' bytes)."""
    first = min(batch_size, max(n_images, 1))
    return first, batch_bytes(config, first), method_bytes(config, n_images, batch_size)


def fit_memory_estimate(config: Config, n_images: int, batch_size: int) -> int:
    """Bytes a fit needs beyond the Python + Paddle process itself: its first batch and its arrays."""
    _, batch, arrays = _fit_parts(config, n_images, batch_size)
    return batch + arrays


def check_fit_memory(config: Config, n_images: int, batch_size: int) -> None:
    """Refuse, in one line with the numbers, a fit whose first batch and arrays cannot fit in memory."""
    available = available_memory_bytes()
    if available is None:
        return
    first, batch, arrays = _fit_parts(config, n_images, batch_size)
    if batch + arrays <= available:
        return
    (crop_h, crop_w), (grid_h, grid_w) = config.data.crop_hw, feature_grid(config)
    raise UserError(
        f"this fit needs at least {format_bytes(batch + arrays)} ({format_bytes(batch)} per batch of "
        f"{first} {crop_h}x{crop_w} images, {format_bytes(arrays)} for {n_images} images x "
        f"{grid_h}x{grid_w} patches x {embedding_width(config)} channels) but only {format_bytes(available)} of "
        f"memory is available; use a smaller --resize/--crop_size or --batch_size, or fewer training images")
