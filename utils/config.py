"""Every tunable setting of the pipeline, with its default, in one place.

Entry scripts build their argparse defaults from these dataclasses, and a trained model stores the
exact values it was fitted with, so eval / predict / export / infer never have to be told again.
The field defaults are PatchCore's (and what model files written before a field existed meant);
the settings that differ per method live in that method's record in models.registry.
"""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field, fields
from typing import Any

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
