"""PaDiM: Gaussian fit, Mahalanobis scoring, channel selection inside the extractor."""
import numpy as np
import paddle
import pytest
from scipy.spatial.distance import mahalanobis as scipy_mahalanobis

from helpers import arch_cases
import models.padim.fit as padim_fit
from models.feature_extractor import build_extractor, embedding_channels, select_channels
from models.model_file import EmbeddingStream
from models.padim.scorer import PadimScorer
from models.registry import ARCHS, PADIM_LAYERS
from models.scoring import upsample_and_smooth
from utils.config import ModelConfig
from utils.errors import UserError


def embedding_batches(seed=0, sizes=(3, 3, 1), channels=5, grid=(3, 4)):
    # Far from zero on purpose: the running sums must not lose the spread to the large mean.
    rng = np.random.default_rng(seed)
    return [(100.0 + rng.standard_normal((n, channels, *grid)) * rng.uniform(0.5, 2.0, channels)[:, None, None])
            .astype(np.float32) for n in sizes]


@pytest.mark.parametrize("chunk_bytes", [1, padim_fit.INVERT_CHUNK_BYTES])
def test_fit_equals_numpy_mean_covariance_and_inverse(monkeypatch, chunk_bytes):
    monkeypatch.setattr(padim_fit, "INVERT_CHUNK_BYTES", chunk_bytes)   # 1 byte: one position per chunk
    batches = embedding_batches()
    fitted = padim_fit.fit_gaussians(EmbeddingStream(iter(batches), sum(len(b) for b in batches)),
                                     ModelConfig(method="padim"))
    data = np.concatenate(batches).astype(np.float64)                  # [N, C, h, w]
    n, channels, height, width = data.shape
    assert fitted.feature_grid == (height, width) and fitted.fit_stats["train_images"] == n
    for position in range(height * width):
        samples = data.reshape(n, channels, -1)[:, :, position]
        cov = np.cov(samples, rowvar=False) + 0.01 * np.eye(channels)
        np.testing.assert_allclose(fitted.arrays["mean"][position], samples.mean(0), rtol=1e-6)
        np.testing.assert_allclose(fitted.arrays["inv_covariance"][position], np.linalg.inv(cov),
                                   rtol=1e-4, atol=1e-6)


def test_fit_needs_two_images_and_one_grid():
    with pytest.raises(UserError, match="at least 2 training images"):
        padim_fit.fit_gaussians(EmbeddingStream(iter(embedding_batches(sizes=(1,))), 1), ModelConfig(method="padim"))
    accumulator = padim_fit.GaussianAccumulator()
    accumulator.update(embedding_batches(sizes=(2,))[0])
    with pytest.raises(ValueError, match="does not match"):
        accumulator.update(embedding_batches(sizes=(2,), grid=(2, 2))[0])


def test_mahalanobis_scores_equal_brute_force():
    rng = np.random.default_rng(3)
    batch, channels, height, width = 2, 6, 3, 5
    positions = height * width
    mean = rng.standard_normal((positions, channels)).astype(np.float32)
    factors = rng.standard_normal((positions, channels, channels))
    inverse = (factors @ factors.transpose(0, 2, 1) + 0.5 * np.eye(channels)).astype(np.float32)
    embedding = rng.standard_normal((batch, channels, height, width)).astype(np.float32)
    scores = PadimScorer(mean, inverse, image_size=20, sigma=4.0)(embedding)
    expected = np.empty((batch, height, width))
    for b in range(batch):
        for y in range(height):
            for x in range(width):
                p = y * width + x
                expected[b, y, x] = scipy_mahalanobis(embedding[b, :, y, x], mean[p], inverse[p])
    np.testing.assert_allclose(scores.patch_scores, expected, rtol=1e-5)
    np.testing.assert_allclose(scores.anomaly_maps, upsample_and_smooth(scores.patch_scores, 20, 4.0), rtol=1e-6)
    np.testing.assert_array_equal(scores.image_scores, scores.anomaly_maps.reshape(batch, -1).max(1))
    with pytest.raises(ValueError, match="channels"):
        PadimScorer(mean, inverse, image_size=20)(embedding[:, :5])


def test_channel_selection_is_seeded_and_inside_the_extractor():
    first = select_channels(448, 100, seed=0)
    np.testing.assert_array_equal(first, select_channels(448, 100, seed=0))
    assert not np.array_equal(first, select_channels(448, 100, seed=1))
    assert len(np.unique(first)) == 100 and np.all(np.diff(first) > 0) and first.max() < 448
    assert select_channels(448, 0, seed=0) is None and select_channels(448, 448, seed=0) is None
    for bad in (-1, 2.5):
        with pytest.raises(UserError, match="number of channels"):
            select_channels(448, bad, seed=0)

    def padim(k):
        return build_extractor(ModelConfig(method="padim", arch="resnet18", pretrained="none", layers=PADIM_LAYERS,
                                           k=k, local_aggregation=False))

    full, chosen = padim(0), padim(20)
    images = paddle.to_tensor(np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32))
    with paddle.no_grad():
        everything, selected = full(images).numpy(), chosen(images).numpy()
    assert everything.shape == (1, 448, 16, 16) and selected.shape == (1, 20, 16, 16)
    np.testing.assert_array_equal(selected, everything[:, select_channels(448, 20, seed=0)])
    # The selection is part of the fingerprint: a model is never scored with another selection.
    assert chosen.fingerprint() != full.fingerprint() != padim(21).fingerprint()


@pytest.mark.parametrize("arch", arch_cases(ARCHS))
def test_stage_channel_table_matches_the_networks(arch):
    extractor = build_extractor(ModelConfig(method="padim", arch=arch, pretrained="none", layers=PADIM_LAYERS, k=0))
    with paddle.no_grad():
        out = extractor(paddle.zeros([1, 3, 32, 32]))
    assert out.shape[1] == embedding_channels(arch, PADIM_LAYERS)

