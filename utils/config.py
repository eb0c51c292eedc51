"""Every tunable setting of the pipeline, with its default, in one place.

Entry scripts build their argparse defaults from these dataclasses, and a trained model stores the
exact values it was fitted with, so eval / predict / export / infer never have to be told again.
The field defaults are PatchCore's (and what model files written before a field existed meant);
the settings that differ per method live in that method's record in models.registry.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# PatchCore's local aggregation: "avgpool" (3x3 average of each stage, the Paddle reference repos)
# or "unfold" (the official PatchCore: 3x3 neighbourhoods unfolded and adaptively average-pooled).
AGGREGATIONS = ("avgpool", "unfold")


def str2bool(value: str) -> bool:
    """Command-line booleans as the TIPC configs write them (True/False, 1/0, yes/no)."""
    if value.lower() in ("true", "1", "yes", "y"):
        return True
    if value.lower() in ("false", "0", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {value!r}")


# Thresholds and ratios end up in float32 arrays and scores: beyond this they would become inf.
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _number_type(kind: type, minimum: float, name: str) -> Callable[[str], Any]:
    """An argparse `type=`: parses `kind`, refuses NaN/inf, values below `minimum` and floats
    beyond float32's range."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {name}, got {text!r}") from None
        if not math.isfinite(value) or value < minimum:
            raise argparse.ArgumentTypeError(f"expected {name}, got {text!r}")
        if kind is float and abs(value) > FLOAT32_MAX:
            raise argparse.ArgumentTypeError(f"expected {name} within float32's range (+-{FLOAT32_MAX:.3g}), "
                                             f"got {text!r}")
        return value
    parse.__name__ = name   # argparse names the type in its messages
    return parse


INTERPOLATIONS = ("antialias", "bilinear")


def hw(size: "int | tuple[int, int] | list[int]") -> tuple[int, int]:
    """(height, width) of a size given as one number (square) or as height, width."""
    if isinstance(size, (tuple, list)):
        return int(size[0]), int(size[1])
    return int(size), int(size)


@dataclass(frozen=True)
class AutoSize:
    """--resize auto[:N] / --crop_size auto[:N]: the side chosen from the training images' shape
    (datasets.geometry), N the short side (None: the option's default)."""
    short: int | None = None


def _size_type(minimum: int, name: str) -> Callable[[str], Any]:
    """An argparse `type=` for sizes: "256" (square), "256,320" (height,width) or "auto[:N]" (AutoSize);
    a square pair is stored as one number, so square settings and model files stay as they always were."""
    number = _number_type(int, minimum, name)

    def parse(text: str) -> Any:
        if text == "auto" or text.startswith("auto:"):
            return AutoSize(number(text[5:]) if text.startswith("auto:") else None)
        parts = [number(part) for part in text.split(",")]
        if len(parts) not in (1, 2):
            raise argparse.ArgumentTypeError(f"expected {name} or height,width, got {text!r}")
        return parts[0] if len(parts) == 1 or parts[0] == parts[1] else (parts[0], parts[1])
    parse.__name__ = name
    return parse


# Command-line number types: every numeric option is range-checked when it is parsed.
positive_int = _number_type(int, 1, "a positive integer")
resize_int = _number_type(int, 2, "an integer >= 2")
non_negative_int = _number_type(int, 0, "an integer >= 0")
non_negative_float = _number_type(float, 0, "a number >= 0")
finite_float = _number_type(float, -math.inf, "a finite number")
resize_size = _size_type(2, "an integer >= 2")
crop_size_type = _size_type(1, "a positive integer")


@dataclass
class DataConfig:
    # One number (square) or (height, width): resize to it, then centre-crop to crop_size.
    resize: int | tuple[int, int] = 256
    crop_size: int | tuple[int, int] = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    # Image downscaling: "antialias" (PIL bilinear, its filter widened by the scale factor) or
    # "bilinear" (plain two-tap bilinear, as OpenCV's INTER_LINEAR; keeps thin structures sharper).
    interpolation: str = "antialias"

    @property
    def resize_hw(self) -> tuple[int, int]:
        return hw(self.resize)

    @property
    def crop_hw(self) -> tuple[int, int]:
        return hw(self.crop_size)


# train.py's --val_ratio: a tenth of the good images is enough to place the thresholds on bottle-
# sized sets (200+ images) and costs the bank little; see README "Thresholds from good images only".
DEFAULT_VAL_RATIO = 0.1


@dataclass
class ModelConfig:
    method: str = "patchcore"
    arch: str = "wide_resnet50_2"
    layers: tuple[str, ...] = ("layer2", "layer3")
    # "imagenet" (paddle.vision download / cache), a local .pdparams path, or "none" (random init).
    pretrained: str = "imagenet"
    # PatchCore: percentage of training patches kept by the coreset (100 keeps them all).
    # PaDiM: number of embedding channels kept by a seeded random selection (0 keeps them all).
    k: float = 10.0
    # 3x3 average of every stage's features before concatenation (PatchCore's local aggregation).
    # Model files written before this setting existed were all PatchCore ones, hence the default.
    local_aggregation: bool = True
    # How the local aggregation is done (one of AGGREGATIONS; PatchCore only). Model files written
    # before this setting existed used the 3x3 average, hence the default.
    aggregation: str = "avgpool"
    # "unfold" only: each stage's C*9 neighbourhood vector is pooled to pretrain_embed_dim, then the
    # stacked stage vectors to target_embed_dim (the embedding's channel count).
    pretrain_embed_dim: int = 1024
    target_embed_dim: int = 1024
    projection_dim: int = 128
    # Bank neighbours of the matched entry used by the re-weighting of eq. 7 (paper: b = 9).
    num_neighbors: int = 9
    # "reweighted" (paper eq. 7) or "max" (plain maximum patch score).
    image_score: str = "reweighted"
    # Gaussian smoothing of the upsampled anomaly map.
    sigma: float = 4.0
    seed: int = 0
    # Fraction of train/good held out of the fit and scored to set the thresholds (seeded). 0 here
    # is what model files written before this setting did; train.py's default is DEFAULT_VAL_RATIO.
    val_ratio: float = 0.0
    # With held-out images: the image threshold flags at most this fraction of good images (the
    # (1 - rate) quantile of their scores), the pixel threshold this fraction of their pixels.
    max_false_reject: float = 0.01
    pixel_false_reject: float = 0.001
    # PaDiM: keep the float64 running sums in the model file so train.py --update can add images
    # exactly (positions x channels^2 x 8 bytes more; never exported).
    keep_sums: bool = False


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)

    def to_dict(self) -> dict[str, Any]:
        return {"data": _plain(asdict(self.data)), "model": _plain(asdict(self.model))}

    @classmethod
    def from_dict(cls, raw: Any) -> "Config":
        """The settings a model file stores; ValueError naming the field if one is missing a sane value."""
        if not isinstance(raw, dict):
            raise ValueError("config: expected a dict")
        config = cls(data=_build(DataConfig, raw.get("data", {}), "config.data"),
                     model=_build(ModelConfig, raw.get("model", {}), "config.model"))
        config.check()
        return config

    def check(self) -> None:
        """Range checks shared by the command line and model files; ValueError naming the setting."""
        d, m = self.data, self.model
        _require(min(d.resize_hw) >= 2, "resize", d.resize, "at least 2")
        _require(all(1 <= c <= r for c, r in zip(d.crop_hw, d.resize_hw)), "crop_size", d.crop_size,
                 f"between 1 and resize ({d.resize}) on each side")
        _require(d.interpolation in INTERPOLATIONS, "interpolation", d.interpolation, " or ".join(INTERPOLATIONS))
        _require(len(d.mean) == 3, "mean", d.mean, "3 numbers")
        _require(len(d.std) == 3 and all(v > 0 for v in d.std), "std", d.std, "3 positive numbers")
        if m.method == "padim":
            # PaDiM's k is a channel count (0 = all channels).
            _require(m.k >= 0 and m.k == int(m.k), "k", m.k, "a whole number of channels >= 0 for padim")
        else:
            _require(0 < m.k <= 100, "k", m.k, "a percentage in (0, 100]")
        _require(len(m.layers) >= 1, "layers", m.layers, "at least one layer")
        _require(m.projection_dim >= 1, "projection_dim", m.projection_dim, "at least 1")
        _require(m.num_neighbors >= 1, "num_neighbors", m.num_neighbors, "at least 1")
        _require(m.image_score in ("reweighted", "max"), "image_score", m.image_score, "reweighted or max")
        _require(m.sigma >= 0, "sigma", m.sigma, ">= 0")
        _require(0 <= m.val_ratio < 1, "val_ratio", m.val_ratio, "in [0, 1)")
        _require(0 <= m.max_false_reject < 1, "max_false_reject", m.max_false_reject, "in [0, 1)")
        _require(0 <= m.pixel_false_reject < 1, "pixel_false_reject", m.pixel_false_reject, "in [0, 1)")


def _require(ok: bool, name: str, value: Any, expected: str) -> None:
    if not ok:
        raise ValueError(f"{name} must be {expected}, got {value!r}")


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    # Tuples become lists so the dict survives JSON and pickle round trips unchanged.
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def _checked_value(default: Any, value: Any, name: str) -> Any:
    """`value` if it has the type of the field's default (ints accepted for floats), else ValueError."""
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or not value:
            raise ValueError(f"{name}: expected a non-empty list, got {type(value).__name__}")
        return tuple(_checked_value(default[0], v, name) for v in value)
    if isinstance(default, bool) or isinstance(default, str):
        ok = isinstance(value, type(default))
    elif isinstance(default, int):
        ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    else:   # float (model files may hold NumPy scalars)
        ok = isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok:
        raise ValueError(f"{name}: expected {type(default).__name__}, got {value!r:.60}")
    return type(default)(value)


SIZE_FIELDS = ("resize", "crop_size")


def _checked_size(value: Any, name: str) -> int | tuple[int, int]:
    """A stored size: one integer (square; every file before rectangular sizes) or [height, width]."""
    if isinstance(value, (list, tuple)) and len(value) == 2:
        height, width = (_checked_value(0, v, name) for v in value)
        return height if height == width else (height, width)
    return _checked_value(0, value, name)


def _build(kind: type, raw: Any, where: str) -> Any:
    """A dataclass from a stored dict: every known field type-checked, unknown ones ignored (newer files)."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a dict, got {type(raw).__name__}")
    defaults = kind()
    values = {f.name: _checked_value(getattr(defaults, f.name), raw[f.name], f"{where}.{f.name}")
              for f in fields(kind) if f.name in raw and f.name not in SIZE_FIELDS}
    for name in SIZE_FIELDS:
        if name in raw and name in {f.name for f in fields(kind)}:
            values[name] = _checked_size(raw[name], f"{where}.{name}")
    return kind(**values)
