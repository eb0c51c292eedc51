"""Locally aware patch features: chosen backbone stages, 3x3 average, resized to the finest grid."""
from __future__ import annotations

from typing import Sequence

import paddle
import paddle.nn.functional as F
from paddle import nn

from models.backbones import STAGE_NAMES, build_backbone_stages, weights_fingerprint
from utils.config import ModelConfig
from utils.errors import PatchCoreError


class PatchFeatureExtractor(nn.Layer):
    """image batch [B,3,H,W] -> patch embedding [B,C,H/s,W/s] (s = stride of the first chosen layer).

    This whole layer is what export_model.py turns into the static graph, so everything between the
    pixels and the per-patch vectors lives here and nothing else does.
    """

    def __init__(self, stages: nn.LayerList, layers: Sequence[str]):
        super().__init__()
        unknown = [name for name in layers if name not in STAGE_NAMES]
        if unknown or not layers:
            raise PatchCoreError(f"unknown layers {unknown}; choose from {', '.join(STAGE_NAMES)}")
        self.layer_indices = sorted(STAGE_NAMES.index(name) for name in layers)
        # Stages after the deepest chosen one are never run, so they are not kept either.
        self.stages = nn.LayerList(list(stages)[: self.layer_indices[-1] + 1])
        # Zero padding counts in the border averages (exclusive=False, PyTorch's default): on MVTec
        # bottle with ImageNet MobileNetV2 this measured pixel AUROC 0.977 / PRO 0.909 against
        # 0.975 / 0.897 with Paddle's default exclusive pooling.
        self.smooth = nn.AvgPool2D(kernel_size=3, stride=1, padding=1, exclusive=False)

    def forward(self, images: paddle.Tensor) -> paddle.Tensor:
        maps = []
        x = images
        for index, stage in enumerate(self.stages):
            x = stage(x)
            if index in self.layer_indices:
                maps.append(self.smooth(x))
        grid = maps[0].shape[-2:]
        maps = [maps[0]] + [F.interpolate(m, size=grid, mode="bilinear", align_corners=False) for m in maps[1:]]
        return paddle.concat(maps, axis=1)

    def fingerprint(self) -> str:
        return weights_fingerprint(self)


def build_extractor(cfg: ModelConfig, pretrained: str | None = None) -> PatchFeatureExtractor:
    """The extractor `cfg` describes; `pretrained` overrides where its weights come from."""
    stages = build_backbone_stages(cfg.arch, pretrained or cfg.pretrained, cfg.seed)
    extractor = PatchFeatureExtractor(stages, cfg.layers)
    extractor.eval()
    return extractor
