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


def number_type(kind: type, minimum: float, name: str, maximum: float = math.inf) -> Callable[[str], Any]:
    """An argparse `type=`: parses `kind`, refuses NaN/inf, values outside [minimum, maximum] and
    floats beyond float32's range."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {name}, got {text!r}") from None
        if not math.isfinite(value) or not minimum <= value <= maximum:
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


class NoCrop:
    """--crop_size none: no centre crop (the crop equals the resize)."""

    def __repr__(self) -> str:
        return "none"


NO_CROP = NoCrop()


@dataclass(frozen=True)
class AutoSize:
    """--resize auto[:N] / --crop_size auto[:N]: the side chosen from the training images' shape
    (datasets.geometry), N the short side (None: the option's default)."""
    short: int | None = None


def _size_type(minimum: int, name: str, allow_none: bool = False) -> Callable[[str], Any]:
    """An argparse `type=` for sizes: "256" (square), "256,320" (height,width), "auto[:N]" (AutoSize)
    or, with `allow_none`, "none" (NO_CROP);
    a square pair is stored as one number, so square settings and model files stay as they always were."""
    number = number_type(int, minimum, name)

    def parse(text: str) -> Any:
        if text == "none" and allow_none:
            return NO_CROP
        if text == "auto" or text.startswith("auto:"):
            return AutoSize(number(text[5:]) if text.startswith("auto:") else None)
        parts = [number(part) for part in text.split(",")]
        if len(parts) not in (1, 2):
            raise argparse.ArgumentTypeError(f"expected {name} or height,width, got {text!r}")
        return parts[0] if len(parts) == 1 or parts[0] == parts[1] else (parts[0], parts[1])
    parse.__name__ = name
    return parse


# Command-line number types: every numeric option is range-checked when it is parsed.
positive_int = number_type(int, 1, "a positive integer")
resize_int = number_type(int, 2, "an integer >= 2")
non_negative_int = number_type(int, 0, "an integer >= 0")
finite_float = number_type(float, -math.inf, "a finite number")
non_negative_float = number_type(float, 0.0, "a number >= 0")
# Paddle's and NumPy's generators both take a 32-bit seed; a larger one was a libpaddle TypeError.
MAX_SEED = 2**32 - 1
seed_int = number_type(int, 0, f"an integer between 0 and {MAX_SEED}", MAX_SEED)
port_int = number_type(int, 1, "a port number between 1 and 65535", 65535)
resize_size = _size_type(2, "an integer >= 2")
crop_size_type = _size_type(1, "a positive integer", allow_none=True)


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


# Threads one inference runtime (Paddle Inference, OpenVINO, ONNX Runtime) runs on the CPU: infer.py's
# --cpu_threads, the Inferencer, the export check. The project's machines have 2 cores.
DEFAULT_CPU_THREADS = 2

# train.py's --val_ratio: 0, every good image is in the bank and the default threshold rule
# (leave-own-image-out) calibrates on all of them. 0.1 was the default before that rule existed:
# a tenth held out to set the thresholds (docs/guide.md "Decisions and thresholds").
DEFAULT_VAL_RATIO = 0.0
# How the image threshold is placed (engine.calibration_rule): own_image_out (default: every training
# image scored against the bank without its own entries), held_out (the quantile of --val_ratio's
# held-out images; the default before), test_split (F1-optimal between the classes of the labelled
# test split; needs --eval). "" in model files written before the setting: the rule followed from
# val_ratio and --eval.
THRESHOLD_RULES = ("own_image_out", "held_out", "test_split")


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
    # PatchCore: memory-bank entries kept, whatever the number of training patches (0: --k percent).
    # A bank budget keeps the search cost of a higher input size from growing with the bank too.
    bank_size: int = 0
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
    # The image threshold's false-reject target on good images (own_image_out: the fitted tail's
    # (1 - rate) quantile; held_out: the (1 - rate) quantile of the held-out scores), and the pixel
    # threshold's on good pixels.
    max_false_reject: float = 0.01
    # One of THRESHOLD_RULES; "" in files written before it (Config.from_dict): the rule followed
    # from val_ratio / --eval.
    threshold_rule: str = "own_image_out"
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
        model = _build(ModelConfig, raw.get("model", {}), "config.model")
        if isinstance(raw.get("model"), dict) and "threshold_rule" not in raw["model"]:
            model.threshold_rule = ""       # written before the setting: its rule followed from val_ratio
        config = cls(data=_build(DataConfig, raw.get("data", {}), "config.data"), model=model)
        config.check()
        return config

    def check(self) -> None:
        """Range checks shared by the command line and model files; ValueError naming the setting."""
        d, m = self.data, self.model
        require(min(d.resize_hw) >= 2, "resize", d.resize, "at least 2")
        require(all(1 <= c <= r for c, r in zip(d.crop_hw, d.resize_hw)), "crop_size", d.crop_size,
                 f"between 1 and resize ({d.resize}) on each side")
        require(d.interpolation in INTERPOLATIONS, "interpolation", d.interpolation, " or ".join(INTERPOLATIONS))
        require(len(d.mean) == 3, "mean", d.mean, "3 numbers")
        require(len(d.std) == 3 and all(v > 0 for v in d.std), "std", d.std, "3 positive numbers")
        # --k and --bank_size mean what the method says: models.registry.check_config checks them.
        require(m.bank_size >= 0 and m.bank_size == int(m.bank_size), "bank_size", m.bank_size, "a whole number >= 0")
        require(len(m.layers) >= 1, "layers", m.layers, "at least one layer")
        require(m.projection_dim >= 1, "projection_dim", m.projection_dim, "at least 1")
        require(m.num_neighbors >= 1, "num_neighbors", m.num_neighbors, "at least 1")
        require(m.image_score in ("reweighted", "max"), "image_score", m.image_score, "reweighted or max")
        require(m.sigma >= 0, "sigma", m.sigma, ">= 0")
        require(0 <= m.seed <= MAX_SEED, "seed", m.seed, f"between 0 and {MAX_SEED}")
        require(0 <= m.val_ratio < 1, "val_ratio", m.val_ratio, "in [0, 1)")
        require(m.threshold_rule in ("",) + THRESHOLD_RULES, "threshold_rule", m.threshold_rule,
                 " or ".join(THRESHOLD_RULES))
        require(m.threshold_rule != "held_out" or m.val_ratio > 0, "val_ratio", m.val_ratio,
                 "above 0 for --threshold_rule held_out (0.1 was its default)")
        require(m.threshold_rule != "own_image_out" or m.val_ratio == 0, "val_ratio", m.val_ratio,
                 "0 for --threshold_rule own_image_out (every good image is fitted and calibrates)")
        require(0 <= m.max_false_reject < 1, "max_false_reject", m.max_false_reject, "in [0, 1)")
        require(0 <= m.pixel_false_reject < 1, "pixel_false_reject", m.pixel_false_reject, "in [0, 1)")


def require(ok: bool, name: str, value: Any, expected: str) -> None:
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
