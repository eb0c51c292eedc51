"""Patch embeddings: chosen backbone stages, locally aggregated, resized to the finest grid.

PatchCore uses layer2 + layer3 with a local aggregation, either (--aggregation avgpool, default)
each stage's 3x3 average, concatenated, or (--aggregation unfold, the official PatchCore's) each
position's unfolded 3x3 neighbourhood pooled to a fixed length per stage, then across stages.
PaDiM uses layer1-3 without aggregation and keeps a seeded random subset of the channels.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

from models.backbones import build_backbone_stages, weights_fingerprint
from models.registry import STAGE_NAMES, arch_spec, check_aggregation, method_spec
from models.shapes import embedding_channels
from utils.config import ModelConfig
from utils.errors import UserError


# Name of the unfold aggregation's averaging-matrix buffer (see PatchFeatureExtractor).
UNFOLD_POOL = "unfold_pool"


class PatchFeatureExtractor(nn.Layer):
    """image batch [B,3,H,W] -> patch embedding [B,C,H/s,W/s] (s = stride of the first chosen layer).

    This whole layer is what export_model.py turns into the static graph, so everything between the
    pixels and the per-patch vectors lives here and nothing else does.
    """

    def __init__(self, stages: nn.LayerList, layers: Sequence[str], local_aggregation: bool = True,
                 channels: np.ndarray | None = None, unfold_dims: tuple[int, int] | None = None,
                 stage_channels: Sequence[int] | None = None):
        super().__init__()
        unknown = [name for name in layers if name not in STAGE_NAMES]
        if unknown or not layers:
            raise UserError(f"unknown layers {unknown}; choose from {', '.join(STAGE_NAMES)}")
        self.layer_indices = sorted(STAGE_NAMES.index(name) for name in layers)
        # Stages after the deepest chosen one are never run, so they are not kept either.
        self.stages = nn.LayerList(list(stages)[: self.layer_indices[-1] + 1])
        # Zero padding counts in the border averages (exclusive=False, PyTorch's default): on MVTec
        # bottle with ImageNet MobileNetV2 this measured pixel AUROC 0.977 / PRO 0.909 against
        # 0.975 / 0.897 with Paddle's default exclusive pooling.
        self.smooth = (nn.AvgPool2D(kernel_size=3, stride=1, padding=1, exclusive=False)
                       if local_aggregation and unfold_dims is None else None)
        # --aggregation unfold: (pretrain_embed_dim, target_embed_dim). Also a persistable buffer,
        # so the two lengths are part of the fingerprint and of the exported parameters (a stats
        # file of an unfold model is refused with the parameters of an avgpool export and vice
        # versa; forward reads the buffer, else the classic program export drops it as unused).
        # An avgpool extractor has no such buffer: its fingerprint is what it always was.
        self.unfold_dims = None if unfold_dims is None else tuple(int(d) for d in unfold_dims)
        if self.unfold_dims is not None:
            self.register_buffer("unfold_embed_dims", paddle.to_tensor(np.asarray(self.unfold_dims, dtype=np.int64)),
                                 persistable=True)
            # Both adaptive poolings as one fixed averaging matrix (one MatMul): exact, and unlike
            # adaptive_avg_pool1d with lengths that do not divide, converted right by paddle2onnx
            # and read by OpenVINO. Derived from the stage channels and the two lengths, so left
            # out of the fingerprint (models fitted before the matrices existed keep theirs).
            if stage_channels is None or len(stage_channels) != len(self.layer_indices):
                raise ValueError("--aggregation unfold needs the channels of every chosen stage")
            self.register_buffer(UNFOLD_POOL, paddle.to_tensor(unfold_pool_matrix(stage_channels, *self.unfold_dims)),
                                 persistable=True)
        # A persistable buffer, not a Python list: it is saved in the exported parameters, selected
        # inside the static graph (the predictor outputs only these channels) and covered by the
        # fingerprint, so a model cannot be scored with another selection.
        if channels is None:
            self.channel_index = None
        else:
            self.register_buffer("channel_index", paddle.to_tensor(np.asarray(channels, dtype=np.int64)),
                                 persistable=True)

    def forward(self, images: paddle.Tensor) -> paddle.Tensor:
        maps = []
        x = images
        for index, stage in enumerate(self.stages):
            x = stage(x)
            if index in self.layer_indices:
                maps.append(self.smooth(x) if self.smooth is not None else x)
        if self.unfold_dims is not None:
            # Times exactly 1 (the lengths are positive): keeps the buffer in the exported graph.
            kept = paddle.cast(self.unfold_embed_dims.min() > 0, "float32")
            return unfold_aggregate(maps, *self.unfold_dims, self.unfold_pool) * kept
        grid = maps[0].shape[-2:]
        maps = [maps[0]] + [F.interpolate(m, size=grid, mode="bilinear", align_corners=False) for m in maps[1:]]
        embedding = paddle.concat(maps, axis=1)
        if self.channel_index is not None:
            embedding = paddle.index_select(embedding, self.channel_index, axis=1)
        return embedding

    def fingerprint(self) -> str:
        return weights_fingerprint(self, derived=(UNFOLD_POOL,))


def averaging_matrix(length: int, bins: int) -> np.ndarray:
    """[length, bins] float32: x @ M is 1-D adaptive average pooling of x from `length` to `bins`.

    Bin i averages elements floor(i*L/D) .. ceil((i+1)*L/D) - 1 (bins overlap where D does not divide
    L; D > L repeats elements), as paddle's and PyTorch's adaptive_avg_pool1d do.
    """
    matrix = np.zeros((length, bins), dtype=np.float64)
    for i in range(bins):
        start, end = (i * length) // bins, -(-((i + 1) * length) // bins)
        matrix[start:end, i] = 1.0 / (end - start)
    return matrix.astype(np.float32)


def neighbourhood_columns(stage_map: paddle.Tensor) -> paddle.Tensor:
    """[B, C, h, w] -> [B, C*9, h, w]: each position's zero-padded 3x3 neighbourhood, channel-major
    then the 3x3 positions (F.unfold's order), as nine shifted slices: plain ops every runtime reads
    (OpenVINO has no unfold)."""
    height, width = stage_map.shape[-2:]
    padded = F.pad(stage_map, [1, 1, 1, 1])
    shifted = [padded[:, :, dy:dy + height, dx:dx + width] for dy in range(3) for dx in range(3)]
    return paddle.stack(shifted, axis=2).reshape([0, stage_map.shape[1] * 9, height, width])


def unfold_pool_matrix(stage_channels: Sequence[int], pretrain_dim: int, target_dim: int) -> np.ndarray:
    """[sum(C_s*9), target_dim] float32: the per-stage pooling to pretrain_dim (block diagonal) and the
    pooling of the stacked stage vectors to target_dim, multiplied out in float64 (fewer products
    per patch than the two steps: 0.9M instead of 2.9M for MobileNetV2's layer2+3 at 1024)."""
    lengths = [int(count) * 9 for count in stage_channels]
    per_stage = np.zeros((sum(lengths), len(lengths) * pretrain_dim))
    row = 0
    for number, length in enumerate(lengths):
        per_stage[row:row + length, number * pretrain_dim:(number + 1) * pretrain_dim] = \
            averaging_matrix(length, pretrain_dim)
        row += length
    return (per_stage @ averaging_matrix(len(lengths) * pretrain_dim, target_dim)).astype(np.float32)


def unfold_aggregate(maps: Sequence[paddle.Tensor], pretrain_dim: int, target_dim: int,
                     pool: paddle.Tensor | None = None) -> paddle.Tensor:
    """Stage maps [B, C_s, h_s, w_s] (finest first) -> embedding [B, target_dim, h_0, w_0].

    Per stage, every position's zero-padded 3x3 neighbourhood becomes one C_s*9 vector (channel-
    major, then the 3x3 positions: F.unfold's order), the grid of those vectors is resized
    bilinearly to the finest grid, and each vector is average-pooled adaptively to pretrain_dim;
    the stage vectors, stacked, are pooled adaptively to target_dim. Both poolings are the one
    matrix `pool` (default: unfold_pool_matrix of the maps' channels).
    """
    height, width = maps[0].shape[-2:]
    if pool is None:
        pool = paddle.to_tensor(unfold_pool_matrix([m.shape[1] for m in maps], pretrain_dim, target_dim))
    grids = []
    for stage_map in maps:
        grid = neighbourhood_columns(stage_map)                                     # [B, C*9, h, w]
        if tuple(grid.shape[-2:]) != (height, width):
            grid = F.interpolate(grid, size=[height, width], mode="bilinear", align_corners=False)
        grids.append(grid)
    columns = paddle.concat(grids, axis=1).transpose([0, 2, 3, 1])                 # [B, h, w, sum C*9]
    # F.linear is columns @ pool; paddle.matmul fails to trace into a classic (.pdmodel) program.
    return F.linear(columns, pool).transpose([0, 3, 1, 2])


def select_channels(total: int, count: float, seed: int) -> np.ndarray | None:
    """`count` of `total` channel indices drawn at random from `seed` (sorted); None keeps them all."""
    if count < 0 or count != int(count):
        raise UserError(f"--k for padim is a number of channels (0 = all {total}), not {count:g}")
    if count == 0 or count >= total:
        return None
    return np.sort(np.random.default_rng(seed).choice(total, size=int(count), replace=False))


def build_extractor(cfg: ModelConfig, pretrained: str | None = None) -> PatchFeatureExtractor:
    """The extractor `cfg` describes; `pretrained` overrides where its weights come from."""
    check_aggregation(cfg)
    stages = build_backbone_stages(cfg.arch, pretrained or cfg.pretrained, cfg.seed)
    # A method reading --k as a channel count selects them here (PaDiM); otherwise k is its own (a coreset percentage).
    channels = (select_channels(embedding_channels(cfg.arch, cfg.layers), cfg.k, cfg.seed)
                if method_spec(cfg.method).k_counts_channels else None)
    unfold_dims = (cfg.pretrain_embed_dim, cfg.target_embed_dim) if cfg.aggregation == "unfold" else None
    stage_channels = [arch_spec(cfg.arch).channels[STAGE_NAMES.index(name)] for name in sorted(
        cfg.layers, key=STAGE_NAMES.index)] if unfold_dims else None
    extractor = PatchFeatureExtractor(stages, cfg.layers, cfg.local_aggregation, channels, unfold_dims, stage_channels)
    extractor.eval()
    return extractor


def extract(extractor: PatchFeatureExtractor, images: np.ndarray) -> np.ndarray:
    """Patch embeddings [B, C, h, w] of a float32 image batch [B, 3, H, W], on the dynamic graph."""
    with paddle.no_grad():
        return extractor(paddle.to_tensor(images)).numpy()
