"""Every tunable setting of the pipeline, with its default, in one place.

Entry scripts build their argparse defaults from these dataclasses, and a trained model stores the
exact values it was fitted with, so eval / predict / export / infer never have to be told again.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ARCHS = ("resnet18", "wide_resnet50_2", "mobilenet_v2")
METHODS = ("patchcore", "padim")
METHOD_TITLES = {"patchcore": "PatchCore", "padim": "PaDiM"}
# Stage names are the same for every arch: layer1/2/3 end at stride 4/8/16.
PATCHCORE_LAYERS = ("layer2", "layer3")
PATCHCORE_K = 10.0
PADIM_LAYERS = ("layer1", "layer2", "layer3")
# PaDiM's --k is a channel count; these are the paper's choices (R18 100 of 448, WRN50 550 of 1792).
# MobileNetV2's three stages give only 24 + 32 + 96 = 152 channels, all kept (0 = all).
PADIM_CHANNELS = {"resnet18": 100, "wide_resnet50_2": 550, "mobilenet_v2": 0}


@dataclass
class DataConfig:
    resize: int = 256
    crop_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


@dataclass
class ModelConfig:
    method: str = "patchcore"
    arch: str = "wide_resnet50_2"
    layers: tuple[str, ...] = PATCHCORE_LAYERS
    # "imagenet" (paddle.vision download / cache), a local .pdparams path, or "none" (random init).
    pretrained: str = "imagenet"
    # PatchCore: percentage of training patches kept by the coreset (100 keeps them all).
    # PaDiM: number of embedding channels kept by a seeded random selection (0 keeps them all).
    k: float = PATCHCORE_K
    # 3x3 average of every stage's features before concatenation (PatchCore's local aggregation).
    # Model files written before this setting existed were all PatchCore ones, hence the default.
    local_aggregation: bool = True
    projection_dim: int = 128
    # Bank neighbours of the matched entry used by the re-weighting of eq. 7 (paper: b = 9).
    num_neighbors: int = 9
    # "reweighted" (paper eq. 7) or "max" (plain maximum patch score).
    image_score: str = "reweighted"
    # Gaussian smoothing of the upsampled anomaly map.
    sigma: float = 4.0
    seed: int = 0


def method_defaults(method: str, arch: str) -> dict[str, Any]:
    """The settings that differ between methods, as ModelConfig keyword arguments.

    PaDiM (Defard et al. 2020) embeds all three stages and models each position with a Gaussian. It
    skips the 3x3 average, as the original does: on MVTec bottle (ImageNet MobileNetV2, all 152
    channels) it measured pixel AUROC 0.9795 / PRO 0.930 without it and 0.9783 / 0.913 with it
    (image AUROC 1.0 both).
    """
    if method == "padim":
        return {"layers": PADIM_LAYERS, "k": float(PADIM_CHANNELS[arch]), "local_aggregation": False}
    return {"layers": PATCHCORE_LAYERS, "k": PATCHCORE_K, "local_aggregation": True}


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)

    def to_dict(self) -> dict[str, Any]:
        return {"data": _plain(asdict(self.data)), "model": _plain(asdict(self.model))}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "Config":
        return cls(data=_build(DataConfig, raw.get("data", {})),
                   model=_build(ModelConfig, raw.get("model", {})))


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    # Tuples become lists so the dict survives JSON and pickle round trips unchanged.
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def _build(kind: type, raw: dict[str, Any]) -> Any:
    known = {f.name for f in fields(kind)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items() if k in known}
    return kind(**values)
