"""Converted torchvision ResNet weights reproduce PyTorch's activations after layer1-3.

../shared/weights/torchvision_reference.npz holds, per arch, the torchvision state-dict layout, an
input and the activations PyTorch computed with seeded stand-in weights that
../shared/weights/seeded_state_dict.py rebuilds. Skips without ../shared.
"""
import importlib.util

import numpy as np
import paddle
import pytest
from paddle.vision import models

from helpers import arch_cases, shared_dir
from tools.convert_weights import convert_state_dict


def load_reference(arch):
    folder = shared_dir() / "weights"
    if not (folder / "torchvision_reference.npz").is_file() or not (folder / "seeded_state_dict.py").is_file():
        pytest.skip("../shared/weights/torchvision_reference.npz is not available")
    spec = importlib.util.spec_from_file_location("seeded_state_dict", folder / "seeded_state_dict.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.load_reference(str(folder / "torchvision_reference.npz"), arch)


@pytest.mark.parametrize("arch", arch_cases(["resnet18", "wide_resnet50_2"]))
def test_converted_weights_reproduce_torchvision_activations(arch):
    torch_state, image, expected = load_reference(arch)
    net = getattr(models, arch)(pretrained=False)
    net.set_state_dict(convert_state_dict(torch_state, arch, log=None))
    net.eval()
    with paddle.no_grad():
        x = net.maxpool(net.relu(net.bn1(net.conv1(paddle.to_tensor(image)))))
        for name in ("layer1", "layer2", "layer3"):
            x = getattr(net, name)(x)
            got, want = x.numpy(), expected[name]
            assert got.shape == want.shape
            relative = np.abs(got - want).max() / np.abs(want).max()
            assert relative < 1e-4, f"{arch} {name}: max relative error {relative:.2e}"
