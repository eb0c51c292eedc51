"""The fit's memory estimated from the settings alone, and refused before the first batch."""
import pytest

from models import memory_estimate
from models.memory_estimate import batch_bytes, check_fit_memory, feature_grid, method_bytes
from models.registry import METHODS
from utils.config import Config, DataConfig, ModelConfig
from utils.errors import UserError


def _config(size, method="patchcore", arch="resnet18", **model):
    defaults = {**METHODS[method].defaults(arch), **model}
    return Config(DataConfig(resize=size, crop_size=size), ModelConfig(method=method, arch=arch, **defaults))


def test_estimate_follows_the_geometry():
    small, large = _config(64), _config(640)
    assert feature_grid(small) == (8, 8) and feature_grid(_config(65)) == (9, 9)     # layer2: stride 8
    assert feature_grid(_config(64, "padim")) == (16, 16)                           # layer1: stride 4
    # Pixels x100 -> both the batch and the fit's arrays x100 (to rounding of the grid).
    assert batch_bytes(large, 8) == pytest.approx(100 * batch_bytes(small, 8), rel=0.01)
    assert method_bytes(large, 10, 8) == pytest.approx(100 * method_bytes(small, 10, 8), rel=0.01)
    assert batch_bytes(small, 16) == 2 * batch_bytes(small, 8)
    assert method_bytes(small, 20, 8) == 2 * method_bytes(small, 10, 8)
    # PaDiM's sums grow with channels^2, not with images.
    assert method_bytes(_config(64, "padim", k=200.0), 10, 8) > 3.5 * method_bytes(_config(64, "padim", k=100.0), 10, 8)
    assert method_bytes(_config(64, "padim"), 10, 8) == method_bytes(_config(64, "padim"), 1000, 8)


def test_refused_in_one_line_with_the_numbers(monkeypatch):
    monkeypatch.setattr(memory_estimate, "available_memory_bytes", lambda: 24 * 2**30)
    check_fit_memory(_config(224, arch="wide_resnet50_2"), 209, 8)          # bottle-sized: fits
    check_fit_memory(_config(224, "padim", arch="wide_resnet50_2"), 209, 8)
    with pytest.raises(UserError) as err:
        check_fit_memory(_config(10000), 8, 8)
    message = str(err.value)
    assert "\n" not in message and "8 10000x10000 images" in message and "1250x1250 patches" in message
    assert "24.0 GB of memory is available" in message and "--batch_size" in message
    monkeypatch.setattr(memory_estimate, "available_memory_bytes", lambda: None)    # unknown: not refused
    check_fit_memory(_config(10000), 8, 8)
