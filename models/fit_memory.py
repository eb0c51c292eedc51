"""Memory a fit will need, estimated from the settings alone and checked before anything is allocated.

The fits check their own arrays once the first batch has shown the feature grid (check_memory in
models.patchcore.fit), but that first batch can already exhaust the machine: --resize 10000 took
24 GB and a kernel OOM kill, with nothing on stderr. This estimate needs only the geometry (resize
and crop, the arch's stage channels and strides, the batch size and the number of images), so the
run is refused in one line before the first image is decoded. It is a lower bound (the network's
inner layers and Paddle's allocator add to it): it refuses only what surely cannot fit.
"""
from __future__ import annotations

import math

from models.feature_extractor import embedding_channels
from models.patchcore.fit import bank_entries, fit_bytes
from models.registry import STAGE_NAMES, arch_spec
from utils.config import Config
from utils.errors import UserError
from utils.runtime import available_memory_bytes, format_bytes

# Output stride of each of STAGE_NAMES (every registered arch: layer1/2/3 end at 4/8/16).
STAGE_STRIDES = (4, 8, 16)
FLOAT32, FLOAT64 = 4, 8
# Unfold aggregation: each stage's C x 3 x 3 neighbourhood vector per position.
UNFOLD_NEIGHBOURS = 9
# Floats per input pixel of the widest tensor inside the network, which is wider than any stage
# output: mobilenet_v2's second block expands 16 to 96 channels at stride 2 (96 / 4 = 24);
# the ResNets' first convolution has 64 channels at stride 2 (16). A 2048 x 2048 input makes that
# one tensor 400 MB for mobilenet_v2; the estimate counts it with its input and output alive.
WIDEST_ACTIVATION = {"mobilenet_v2": 24, "resnet18": 16, "wide_resnet50_2": 16}


def feature_grid(config: Config) -> tuple[int, int]:
    """(h, w) of the patch grid: the crop divided by the stride of the first chosen layer, rounded up."""
    stride = STAGE_STRIDES[min(STAGE_NAMES.index(name) for name in config.model.layers)]
    return tuple(math.ceil(side / stride) for side in config.data.crop_hw)


def embedding_width(config: Config) -> int:
    """Channels of the embedding the fit stores per patch."""
    m = config.model
    if m.method == "padim":
        return int(m.k) or embedding_channels(m.arch, m.layers)
    if m.aggregation == "unfold":
        return m.target_embed_dim
    return embedding_channels(m.arch, m.layers)


def batch_bytes(config: Config, batch_size: int) -> int:
    """One batch from pixels to embedding: the resized images, the network input, the widest
    activation (with a layer's input and output alive together), the chosen stages' maps (and
    their 3x3 averages or unfolded neighbourhoods) and the embedding on the patch grid."""
    (resize_h, resize_w), (crop_h, crop_w) = config.data.resize_hw, config.data.crop_hw
    m, spec = config.model, arch_spec(config.model.arch)
    pixels = crop_h * crop_w
    stage_floats = [c * pixels / s**2 for c, s in zip(spec.channels, STAGE_STRIDES)]
    widest = max(WIDEST_ACTIVATION.get(m.arch, 0) * pixels, *stage_floats)
    chosen = sum(stage_floats[STAGE_NAMES.index(name)] for name in m.layers)
    chosen *= UNFOLD_NEIGHBOURS if m.aggregation == "unfold" and m.method != "padim" else 2
    grid_h, grid_w = feature_grid(config)
    per_image = (3 * resize_h * resize_w                                  # resized uint8 RGB
                 + FLOAT32 * (2 * 3 * pixels                             # normalised array, stacked batch
                              + 3 * widest + chosen
                              + 2 * embedding_width(config) * grid_h * grid_w))
    return int(batch_size * per_image)


def method_bytes(config: Config, n_images: int, batch_size: int) -> int:
    """The fit's own arrays: PatchCore's features, projection and selector state; PaDiM's float64
    running sums and a batch of them, and the float32 inverse covariances."""
    grid_h, grid_w = feature_grid(config)
    positions, channels = grid_h * grid_w, embedding_width(config)
    m = config.model
    if m.method == "padim":
        return positions * channels * (channels * (FLOAT64 + FLOAT32) + 2 * batch_size * FLOAT64)
    n_patches = n_images * positions
    return fit_bytes(n_patches, channels, m.projection_dim, projected=bank_entries(n_patches, m) < n_patches)


def fit_memory_estimate(config: Config, n_images: int, batch_size: int) -> int:
    """Bytes a fit needs beyond the Python + Paddle process itself: its first batch and its arrays."""
    return batch_bytes(config, min(batch_size, max(n_images, 1))) + method_bytes(config, n_images, batch_size)


def check_fit_memory(config: Config, n_images: int, batch_size: int) -> None:
    """Refuse, in one line with the numbers, a fit whose first batch and arrays cannot fit in memory."""
    available = available_memory_bytes()
    if available is None:
        return
    batch = batch_bytes(config, min(batch_size, max(n_images, 1)))
    arrays = method_bytes(config, n_images, batch_size)
    if batch + arrays <= available:
        return
    (crop_h, crop_w), (grid_h, grid_w) = config.data.crop_hw, feature_grid(config)
    raise UserError(
        f"this fit needs at least {format_bytes(batch + arrays)} ({format_bytes(batch)} per batch of "
        f"{min(batch_size, max(n_images, 1))} {crop_h}x{crop_w} images, {format_bytes(arrays)} for {n_images} images x "
        f"{grid_h}x{grid_w} patches x {embedding_width(config)} channels) but only {format_bytes(available)} of "
        f"memory is available; use a smaller --resize/--crop_size or --batch_size, or fewer training images")
