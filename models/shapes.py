"""What a model's settings imply, from numbers alone: its feature grid, its embedding width, the
shapes of its arrays and the memory one batch takes from pixels to embedding.

No Paddle and no fit code: the fit's memory estimate (models.memory_estimate) and every loader of a
model or stats file (models.model_file, deployment included) share these, so a file's arrays are
checked against its own settings, and its geometry against the memory there is, before any
network, index or image buffer is built.
"""
from __future__ import annotations

import math
from typing import Sequence

from models.registry import METHODS, STAGE_NAMES, arch_spec
from utils.config import Config
from utils.errors import UserError
from utils.runtime import available_memory_bytes, format_bytes

# Output stride of each of STAGE_NAMES (every registered arch: layer1/2/3 end at 4/8/16).
STAGE_STRIDES = (4, 8, 16)
FLOAT32 = 4
# Unfold aggregation: each stage's C x 3 x 3 neighbourhood vector per position.
UNFOLD_NEIGHBOURS = 9
# Floats per input pixel of the widest tensor inside the network, which is wider than any stage
# output: mobilenet_v2's second block expands 16 to 96 channels at stride 2 (96 / 4 = 24);
# the ResNets' first convolution has 64 channels at stride 2 (16). A 2048 x 2048 input makes that
# one tensor 400 MB for mobilenet_v2; the estimate counts it with its input and output alive.
WIDEST_ACTIVATION = {"mobilenet_v2": 24, "resnet18": 16, "wide_resnet50_2": 16}


def embedding_channels(arch: str, layers: Sequence[str]) -> int:
    """Channels of the concatenated embedding before any selection."""
    return sum(arch_spec(arch).channels[STAGE_NAMES.index(name)] for name in layers)


def feature_grid(config: Config) -> tuple[int, int]:
    """(h, w) of the patch grid: the crop divided by the stride of the first chosen layer, rounded up."""
    stride = STAGE_STRIDES[min(STAGE_NAMES.index(name) for name in config.model.layers)]
    return tuple(math.ceil(side / stride) for side in config.data.crop_hw)


def embedding_width(config: Config) -> int:
    """Channels of the embedding the fit stores per patch (the method's record says which)."""
    m = config.model
    return METHODS[m.method].embedding_width(m, embedding_channels(m.arch, m.layers))


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
    chosen *= UNFOLD_NEIGHBOURS if METHODS[m.method].unfolds(m) else 2
    grid_h, grid_w = feature_grid(config)
    per_image = (3 * resize_h * resize_w                                  # resized uint8 RGB
                 + FLOAT32 * (2 * 3 * pixels                             # normalised array, stacked batch
                              + 3 * widest + chosen
                              + 2 * embedding_width(config) * grid_h * grid_w))
    return int(batch_size * per_image)


def array_shape_problem(config: Config, grid: tuple[int, int], shapes: dict[str, tuple[int, ...]]) -> str | None:
    """Why arrays of `shapes` cannot be the model `config` describes (None when they fit).

    The stored feature grid must be the one the crop gives (to within one patch: rounding at the
    border); the arrays have the shapes the method's record gives (PatchCore's bank rows the
    embedding's width; PaDiM one mean [C] and one inverse covariance [C, C] per grid position).
    """
    expected = feature_grid(config)
    if any(abs(g - e) > 1 for g, e in zip(grid, expected)):
        crop_h, crop_w = config.data.crop_hw
        return f"field 'feature_grid' is {list(grid)}, which does not fit a {crop_h}x{crop_w} crop (expected {list(expected)})"
    m, spec = config.model, METHODS[config.model.method]
    sizes = {"N": None, "P": grid[0] * grid[1], "C": embedding_width(config)}
    wanted = {name: tuple(sizes[d] for d in dims) for name, dims in zip(spec.arrays, spec.array_shapes)}
    entries = shapes.get(spec.arrays[0])
    if spec.reweights(m) and entries and entries[0] < m.num_neighbors:
        return (f"field 'arrays.{spec.arrays[0]}' has {entries[0]} entries, fewer than the {m.num_neighbors} eq. 7's "
                f"re-weighting compares (num_neighbors): every image would score 0")
    for name, dims in wanted.items():
        shape = shapes.get(name)
        if shape is None or len(shape) != len(dims):
            continue   # a missing array or a wrong rank is named by the loader's own checks
        if any(d is not None and s != d for s, d in zip(shape, dims)):
            described = " x ".join("N" if d is None else str(d) for d in dims)
            return (f"field 'arrays.{name}' has shape {list(shape)}, but {config.model.arch} {', '.join(config.model.layers)} "
                    f"with this geometry gives {described}")
    return None


def check_image_memory(config: Config, batch_size: int = 1) -> None:
    """Refuse, in one line, a geometry whose batch of images cannot fit in the memory available
    (as the fit's estimate does): a model file saying resize 1000000 must fail at load."""
    available = available_memory_bytes()
    needed = batch_bytes(config, batch_size)
    if available is not None and needed > available:
        (resize_h, resize_w), (crop_h, crop_w) = config.data.resize_hw, config.data.crop_hw
        raise UserError(f"resize {resize_h}x{resize_w} / crop {crop_h}x{crop_w} needs at least {format_bytes(needed)} "
                        f"per batch of {batch_size} images, but only {format_bytes(available)} of memory is available")
