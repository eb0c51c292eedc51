"""ImageNet backbones from paddle.vision, cut into stages that end at strides 4, 8 and 16.

Which sub-layers form each stage is the arch's record in models.registry; stage names are shared
by every arch so the rest of the pipeline never special-cases one:
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

from models.registry import ArchSpec, StagePart, arch_spec
from utils.errors import UserError, first_line
from utils.safe_pickle import load_plain_pickle


def _assemble(net: nn.Layer, part: StagePart) -> nn.Layer:
    """A stage description of models.registry -> the network's own sub-layers (shared, not copied)."""
    if isinstance(part, str):
        return dict(net.named_sublayers())[part]
    return nn.Sequential(*(_assemble(net, p) for p in part))


def _load_local_weights(net: nn.Layer, path: str, spec: ArchSpec) -> None:
    if not os.path.isfile(path):
        raise UserError(f"weights file not found: {path} (use --pretrained imagenet|none|PATH.pdparams)")
    # Not paddle.load (plain pickle): a downloaded weights file could run code when loaded.
    state = load_plain_pickle(path, "weights file")
    if not isinstance(state, dict):
        raise UserError(f"weights file '{path}' does not hold a state dict")
    expected = net.state_dict()
    wrong = [k for k, v in state.items() if k in expected and tuple(expected[k].shape) != tuple(np.shape(v))]
    missing = [k for k in expected if k not in state and not k.startswith(spec.classifier_prefix)]
    if wrong or missing:
        raise UserError(f"weights file '{path}' does not fit --arch {spec.name} "
                             f"({len(missing)} missing, {len(wrong)} wrongly shaped parameters)")
    # A features-only checkpoint has no classifier; keep the net's own so paddle does not warn.
    net.set_state_dict({k: state.get(k, v) for k, v in expected.items()})


def _download_imagenet(spec: ArchSpec) -> nn.Layer:
    build = getattr(vision_models, spec.builder)
    # paddle's downloader logs every retry; the user needs one line, not a page of them.
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return build(pretrained=True)
    except Exception as err:
        raise UserError(
            f"could not download ImageNet weights for {spec.name} ({first_line(err, 120)}); "
            f"pass a local file with --pretrained PATH.pdparams "
            f"(PyTorch weights convert with tools/convert_weights.py)") from None
    finally:
        logger.setLevel(level)


def build_backbone_stages(arch: str, pretrained: str = "imagenet", seed: int = 0) -> nn.LayerList:
    """The three stages of `arch` with weights from `pretrained`: imagenet | none | PATH.pdparams."""
    spec = arch_spec(arch)
    if pretrained == "imagenet":
        net = _download_imagenet(spec)
    else:
        # Random init must be reproducible too: tests and TIPC rebuild the same net from the seed.
        paddle.seed(seed)
        net = getattr(vision_models, spec.builder)(pretrained=False)
        if pretrained != "none":
            _load_local_weights(net, pretrained, spec)
    stages = nn.LayerList([_assemble(net, part) for part in spec.stages])
    stages.eval()
    for param in stages.parameters():
        param.stop_gradient = True
    return stages


def weights_fingerprint(layer: nn.Layer, derived: tuple[str, ...] = ()) -> str:
    """A short hash of every parameter and buffer: ties a memory bank to the exact extractor.

    Buffers whose names start with one of `derived` are left out: they are computed from settings
    the hash already covers, and leaving them out keeps the fingerprints of models fitted before
    they existed.
    """
    digest = hashlib.sha1()
    for name, value in sorted(layer.state_dict().items()):
        if derived and name.startswith(derived):
            continue
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(value.numpy(), dtype=np.float32).tobytes())
    return digest.hexdigest()[:16]
