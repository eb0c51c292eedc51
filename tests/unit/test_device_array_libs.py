"""The GPU code paths (Paddle tensor ops), run on the CPU place: same answers as the NumPy paths."""
import numpy as np
import pytest

from models.model_file import EmbeddingStream
from models.patchcore.fit import fit_memory_bank
from models.patchcore.sampling import greedy_coreset, greedy_coreset_paddle
from models.patchcore.scorer import PatchCoreScorer
from utils.config import ModelConfig
from utils.errors import UserError
from utils.runtime import select_device


@pytest.mark.parametrize("shape", [(3000, 32), (20000, 16)])
def test_paddle_greedy_selects_the_numpy_indices(shape):
    points = np.random.default_rng(5).standard_normal(shape).astype(np.float32)
    np.testing.assert_array_equal(greedy_coreset_paddle(points, 300, seed=3), greedy_coreset(points, 300, seed=3))


def test_paddle_fit_builds_the_numpy_bank():
    rng = np.random.default_rng(6)
    embeddings = [rng.standard_normal((2, 24, 6, 6)).astype(np.float32) for _ in range(3)]
    cfg = ModelConfig(arch="resnet18", k=10.0, projection_dim=16, seed=1)
    banks = [fit_memory_bank(EmbeddingStream(iter(embeddings), 6), cfg, progress=False, array_lib=b).arrays["memory_bank"]
             for b in ("numpy", "paddle")]
    np.testing.assert_array_equal(banks[0], banks[1])


def test_paddle_scorer_matches_numpy_scores():
    rng = np.random.default_rng(7)
    bank = rng.standard_normal((5000, 32)).astype(np.float32)
    embedding = rng.standard_normal((2, 32, 8, 8)).astype(np.float32)
    numpy_scores = PatchCoreScorer(bank, 32)(embedding)
    paddle_scores = PatchCoreScorer(bank, 32, array_lib="paddle")(embedding)
    np.testing.assert_allclose(paddle_scores.patch_scores, numpy_scores.patch_scores, rtol=1e-4)
    np.testing.assert_allclose(paddle_scores.image_scores, numpy_scores.image_scores, rtol=1e-4)


def test_device_choice():
    assert select_device("cpu") == "numpy"
    assert select_device("auto") in ("numpy", "paddle")
    import paddle

    if not paddle.device.is_compiled_with_cuda():
        with pytest.raises(UserError, match="no CUDA GPU"):
            select_device("gpu")
