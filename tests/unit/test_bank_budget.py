"""--bank_size: a memory bank of a fixed number of entries, whatever the number of patches."""
import numpy as np
import pytest

import models.patchcore.fit as patchcore_fit
import argparse

from engine.cli import add_data_args, add_model_args, config_from_args
from models.memory_estimate import method_bytes
from models.model_file import EmbeddingStream
from models.registry import check_config
from utils.config import Config, DataConfig, ModelConfig


def stream(images):
    return EmbeddingStream(iter([images]), len(images))


def images(n_images, grid=(6, 6), seed=0):
    return np.random.default_rng(seed).standard_normal((n_images, 16, *grid)).astype(np.float32)


def test_the_budget_fixes_the_bank_whatever_the_patches():
    cfg = ModelConfig(k=1, bank_size=40, projection_dim=8)
    small = patchcore_fit.fit_memory_bank(stream(images(4)), cfg, progress=False)
    large = patchcore_fit.fit_memory_bank(stream(images(4, grid=(12, 12))), cfg, progress=False)
    assert len(small.arrays["memory_bank"]) == len(large.arrays["memory_bank"]) == 40
    # The same greedy selection as --k for the same count: a budget is only another way to say how many.
    by_percent = patchcore_fit.fit_memory_bank(stream(images(4)), ModelConfig(k=40 / 144 * 100, projection_dim=8),
                                               progress=False)
    np.testing.assert_array_equal(small.arrays["memory_bank"], by_percent.arrays["memory_bank"])


def test_a_budget_larger_than_the_patches_keeps_them_all():
    result = patchcore_fit.fit_memory_bank(stream(images(1)), ModelConfig(bank_size=10**6), progress=False)
    assert len(result.arrays["memory_bank"]) == 36
    assert patchcore_fit.bank_entries(36, ModelConfig(k=10)) == 4
    assert patchcore_fit.bank_entries(36, ModelConfig(k=10, bank_size=7)) == 7


def test_an_update_keeps_a_budgeted_bank_at_its_size():
    cfg = ModelConfig(bank_size=30, projection_dim=8)
    fitted = patchcore_fit.fit_memory_bank(stream(images(3)), cfg, progress=False)
    arrays, stats = patchcore_fit.extend_memory_bank(fitted.arrays, stream(images(2, seed=1)), cfg, progress=False)
    assert len(arrays["memory_bank"]) == 30 and stats["bank_size"] == 30


def test_the_option_reaches_the_model_settings_and_the_memory_estimate():
    parser = argparse.ArgumentParser()
    add_data_args(parser)
    add_model_args(parser)
    args = parser.parse_args(["--data_path", "x", "--bank_size", "5000"])
    assert config_from_args(args).model.bank_size == 5000
    budget = Config(DataConfig(), ModelConfig(k=100, bank_size=5000))
    everything = Config(DataConfig(), ModelConfig(k=100))
    # A budget below the patch count needs the projection and the selector state: more than k=100.
    assert method_bytes(budget, 200, 8) > method_bytes(everything, 200, 8)


@pytest.mark.parametrize("model", [ModelConfig(bank_size=-1), ModelConfig(method="padim", k=0, bank_size=10)])
def test_bad_budgets_are_refused(model):
    with pytest.raises(ValueError, match="bank_size"):
        check_config(Config(DataConfig(), model))
