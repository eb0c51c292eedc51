import numpy as np
import paddle
import pytest

from helpers import arch_cases
from models.feature_extractor import build_extractor
from utils.config import ModelConfig
from utils.errors import UserError

# Channels of the stride-8 and stride-16 stages per arch.
EXPECTED_CHANNELS = {"resnet18": 128 + 256, "mobilenet_v2": 32 + 96, "wide_resnet50_2": 512 + 1024}


@pytest.mark.parametrize("arch", arch_cases(sorted(EXPECTED_CHANNELS)))
def test_embedding_shape_per_arch(arch):
    extractor = build_extractor(ModelConfig(arch=arch, pretrained="none"))
    with paddle.no_grad():
        out = extractor(paddle.zeros([2, 3, 64, 64]))
    assert tuple(out.shape) == (2, EXPECTED_CHANNELS[arch], 8, 8)


def test_random_init_is_reproducible_from_the_seed():
    a = build_extractor(ModelConfig(arch="resnet18", pretrained="none", seed=3))
    b = build_extractor(ModelConfig(arch="resnet18", pretrained="none", seed=3))
    c = build_extractor(ModelConfig(arch="resnet18", pretrained="none", seed=4))
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_deeper_stage_is_smoothed_and_resized_to_the_finer_grid():
    extractor = build_extractor(ModelConfig(arch="resnet18", pretrained="none"))
    x = paddle.to_tensor(np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32))
    with paddle.no_grad():
        out = extractor(x).numpy()
        s1 = extractor.stages[1](extractor.stages[0](x))
        pooled = paddle.nn.functional.avg_pool2d(s1, 3, 1, 1, exclusive=False).numpy()
    np.testing.assert_allclose(out[:, :128], pooled, rtol=1e-5, atol=1e-6)


def test_bad_weights_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="weights file not found"):
        build_extractor(ModelConfig(arch="resnet18", pretrained=str(tmp_path / "missing.pdparams")))
    wrong = tmp_path / "mnv2.pdparams"
    paddle.save(paddle.vision.models.mobilenet_v2().state_dict(), str(wrong))
    with pytest.raises(UserError, match="does not fit --arch resnet18"):
        build_extractor(ModelConfig(arch="resnet18", pretrained=str(wrong)))
    with pytest.raises(UserError, match="unknown arch"):
        build_extractor(ModelConfig(arch="vgg16", pretrained="none"))
