"""Fit extraction through a runtime: same features as the dynamic graph, else the dynamic graph."""
import numpy as np
import pytest

import engine.runtime_extraction as fast
from models.feature_extractor import build_extractor, extract
from utils.config import ModelConfig


@pytest.fixture(scope="module")
def extractor():
    return build_extractor(ModelConfig(arch="mobilenet_v2", pretrained="none", aggregation="unfold",
                                       pretrain_embed_dim=40, target_embed_dim=24))


def _batches():
    rng = np.random.default_rng(3)
    return [rng.standard_normal((n, 3, 64, 64)).astype(np.float32) for n in (2, 3)]


@pytest.mark.slow
def test_engine_features_match_the_dynamic_graph(extractor, monkeypatch, capsys):
    monkeypatch.delenv(fast.RUNTIME_VARIABLE, raising=False)
    embed = fast.training_embedder(extractor, (64, 64))
    for batch in _batches():
        expected = extract(extractor, batch)
        got = embed(batch)
        assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()
    assert embed.embed.name in ("openvino", "paddle")          # a runtime did the work, not the fallback
    # Same extractor and runtime, same features: the same seed gives the same memory bank.
    again = fast.training_embedder(extractor, (64, 64))
    for batch in _batches():
        np.testing.assert_array_equal(again(batch), embed(batch))
    assert capsys.readouterr().err == ""
    # The extractor itself is still the dynamic graph (to_static worked on a copy).
    assert type(extractor.forward).__name__ == "method"


def test_a_mismatching_engine_falls_back_to_the_dynamic_graph(extractor, monkeypatch, capsys):
    monkeypatch.delenv(fast.RUNTIME_VARIABLE, raising=False)

    class Drifting:
        name = "planted"

        def __call__(self, images):
            return extract(extractor, images) * 1.001

    monkeypatch.setattr(fast, "open_runtime", lambda files, options: Drifting())
    embed = fast.training_embedder(extractor, (64, 64))
    for batch in _batches():
        np.testing.assert_array_equal(embed(batch), extract(extractor, batch))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "planted differs from the dynamic graph by 1.0e-03" in err[0]


def test_an_engine_failing_without_a_message_falls_back(extractor, monkeypatch, capsys):
    # A runtime error with an empty message (last_line used to index an empty list here, so the fit
    # crashed instead of falling back): the warning names the error's type.
    monkeypatch.delenv(fast.RUNTIME_VARIABLE, raising=False)

    def failing(files, options):
        raise RuntimeError("")

    monkeypatch.setattr(fast, "open_runtime", failing)
    embed = fast.training_embedder(extractor, (64, 64))
    batch = _batches()[0]
    np.testing.assert_array_equal(embed(batch), extract(extractor, batch))
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["warning: fit extraction on the dynamic graph (RuntimeError)"]


def test_the_variable_keeps_the_dynamic_graph(extractor, monkeypatch):
    monkeypatch.setenv(fast.RUNTIME_VARIABLE, "dynamic")
    embed = fast.training_embedder(extractor, (64, 64))
    assert not isinstance(embed, fast.RuntimeEmbedder)
