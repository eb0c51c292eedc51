"""PatchCore fit: streamed features, per-image projection, memory check, replayed embeddings."""
import numpy as np
import pytest

import models.patchcore.fit as patchcore_fit
from models.model_file import EmbeddingStream
from models.patchcore.sampling import coreset_size, greedy_coreset, projection_matrix
from utils.config import ModelConfig
from utils.errors import UserError


def embeddings(n_images=7, channels=24, grid=(5, 6), seed=0):
    return np.random.default_rng(seed).standard_normal((n_images, channels, *grid)).astype(np.float32)


def stream(images, batch_size):
    return EmbeddingStream((images[i:i + batch_size] for i in range(0, len(images), batch_size)), len(images))


def test_bank_is_the_coreset_of_all_patches_whatever_the_batching():
    images = embeddings()
    cfg = ModelConfig(k=20, projection_dim=8, seed=3)
    patches = images.transpose(0, 2, 3, 1).reshape(-1, images.shape[1])
    matrix = projection_matrix(images.shape[1], 8, 3)
    projected = np.concatenate([patches[i * 30:(i + 1) * 30] @ matrix for i in range(len(images))])
    expected = patches[np.sort(greedy_coreset(projected, coreset_size(len(patches), 20), 3))]
    for batch_size in (1, 3, 7):
        result = patchcore_fit.fit_memory_bank(stream(images, batch_size), cfg, progress=False)
        np.testing.assert_array_equal(result.arrays["memory_bank"], expected)
        assert result.feature_grid == (5, 6) and result.fit_stats["train_patches"] == len(patches)
        replayed = np.concatenate(list(result.training_embeddings(2)))
        np.testing.assert_array_equal(replayed, images)


def test_k_100_keeps_every_patch():
    images = embeddings(n_images=2)
    result = patchcore_fit.fit_memory_bank(stream(images, 1), ModelConfig(k=100), progress=False)
    np.testing.assert_array_equal(result.arrays["memory_bank"], images.transpose(0, 2, 3, 1).reshape(-1, 24))


def test_a_fit_that_cannot_fit_in_memory_is_refused_up_front(monkeypatch):
    monkeypatch.setattr(patchcore_fit, "available_memory_bytes", lambda: 10_000)
    with pytest.raises(UserError, match=r"needs about .* \(7 images x 5x6 patches x 24 channels\).*--resize"):
        patchcore_fit.fit_memory_bank(stream(embeddings(), 2), ModelConfig(k=10), progress=False)
    assert patchcore_fit.fit_bytes(1000, 24, 8, projected=True) == 1000 * (4 * 24 + 4 * 8 + 48)


def test_a_stream_shorter_than_promised_is_an_error():
    images = embeddings()
    with pytest.raises(ValueError, match="promised 9 images"):
        patchcore_fit.fit_memory_bank(EmbeddingStream(iter([images]), 9), ModelConfig(k=10), progress=False)
