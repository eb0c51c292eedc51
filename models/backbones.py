"""ImageNet backbones from paddle.vision, cut into stages that end at strides 4, 8 and 16.

Stage names are shared by every arch so the rest of the pipeline never special-cases one:
  layer1 -> stride 4, layer2 -> stride 8, layer3 -> stride 16.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os

import numpy as np
import paddle
from paddle import nn
from paddle.vision import models as vision_models

from utils.config import ARCHS
from utils.errors import PatchCoreError

STAGE_NAMES = ("layer1", "layer2", "layer3")
# Output channels of layer1/2/3 per arch: lets a channel selection be drawn before any forward pass.
STAGE_CHANNELS = {"resnet18": (64, 128, 256), "wide_resnet50_2": (256, 512, 1024), "mobilenet_v2": (24, 32, 96)}


def _resnet_stages(net: nn.Layer) -> list[nn.Layer]:
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    return [nn.Sequential(stem, net.layer1), net.layer2, net.layer3]


def _mobilenet_v2_stages(net: nn.Layer) -> list[nn.Layer]:
    f = net.features
    # features.3, .6 and .13 are the last blocks before the stride doubles (24, 32, 96 channels).
    return [nn.Sequential(*f[0:4]), nn.Sequential(*f[4:7]), nn.Sequential(*f[7:14])]


_BUILDERS = {
    "resnet18": (vision_models.resnet18, _resnet_stages),
    "wide_resnet50_2": (vision_models.wide_resnet50_2, _resnet_stages),
    "mobilenet_v2": (vision_models.mobilenet_v2, _mobilenet_v2_stages),
}


def _load_local_weights(net: nn.Layer, path: str, arch: str) -> None:
    if not os.path.isfile(path):
        raise PatchCoreError(f"weights file not found: {path} (use --pretrained imagenet|none|PATH.pdparams)")
    try:
        state = paddle.load(path, return_numpy=True)
    except Exception as err:  # paddle raises a variety of types for a bad file
        raise PatchCoreError(f"cannot read weights file '{path}': {err}") from None
    if not isinstance(state, dict):
        raise PatchCoreError(f"weights file '{path}' does not hold a state dict")
    expected = net.state_dict()
    wrong = [k for k, v in state.items() if k in expected and tuple(expected[k].shape) != tuple(np.shape(v))]
    missing = [k for k in expected if k not in state and not k.startswith(("fc.", "classifier."))]
    if wrong or missing:
        raise PatchCoreError(f"weights file '{path}' does not fit --arch {arch} "
                             f"({len(missing)} missing, {len(wrong)} wrongly shaped parameters)")
    # A features-only checkpoint has no classifier; keep the net's own so paddle does not warn.
    net.set_state_dict({k: state.get(k, v) for k, v in expected.items()})


def _download_imagenet(arch: str) -> nn.Layer:
    build = _BUILDERS[arch][0]
    # paddle's downloader logs every retry; the user needs one line, not a page of them.
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return build(pretrained=True)
    except Exception as err:
        raise PatchCoreError(
            f"could not download ImageNet weights for {arch} ({str(err).splitlines()[0][:120]}); "
            f"pass a local file with --pretrained PATH.pdparams "
            f"(PyTorch weights convert with tools/convert_weights.py)") from None
    finally:
        logger.setLevel(level)


def build_backbone_stages(arch: str, pretrained: str = "imagenet", seed: int = 0) -> nn.LayerList:
    """The three stages of `arch` with weights from `pretrained`: imagenet | none | PATH.pdparams."""
    if arch not in _BUILDERS:
        raise PatchCoreError(f"unknown arch '{arch}'; choose one of {', '.join(ARCHS)}")
    build, split = _BUILDERS[arch]
    if pretrained == "imagenet":
        net = _download_imagenet(arch)
    else:
        # Random init must be reproducible too: tests and TIPC rebuild the same net from the seed.
        paddle.seed(seed)
        net = build(pretrained=False)
        if pretrained != "none":
            _load_local_weights(net, pretrained, arch)
    stages = nn.LayerList(split(net))
    stages.eval()
    for param in stages.parameters():
        param.stop_gradient = True
    return stages


def weights_fingerprint(layer: nn.Layer) -> str:
    """A short hash of every parameter and buffer: ties a memory bank to the exact extractor."""
    digest = hashlib.sha1()
    for name, value in sorted(layer.state_dict().items()):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(value.numpy(), dtype=np.float32).tobytes())
    return digest.hexdigest()[:16]
