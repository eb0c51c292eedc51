"""How many threads share the memory bank's tiles, per runtime: OpenVINO and ONNX Runtime take their
CPU threads; Paddle Inference, the service and Paddle's dynamic graph (predict.py, training) one;
the answers do not depend on it."""
import numpy as np
import pytest

import deploy.exported_model as exported_model
import models.knn as knn
from deploy.exported_model import scoring_options
from models.knn import MemoryBank
from models.runtimes import RuntimeOptions
from models.scoring import ScoringOptions


@pytest.fixture
def four_cores(monkeypatch):
    monkeypatch.setattr(exported_model.os, "cpu_count", lambda: 4)


@pytest.mark.parametrize("cpu_threads,expected", [(1, 1), (2, 2), (4, 4), (16, 4)])
def test_openvino_and_onnx_runtime_share_the_tiles_over_their_cpu_threads(four_cores, cpu_threads, expected):
    for runtime in ("openvino", "onnxruntime"):
        for asked in (runtime, "auto"):
            options = scoring_options(RuntimeOptions(runtime=asked, cpu_threads=cpu_threads), runtime)
            assert options == ScoringOptions("numpy", product_threads=expected)


@pytest.mark.parametrize("asked", ["paddle", "auto"])
def test_beside_paddle_inference_the_scorer_keeps_one_thread(four_cores, asked):
    # Its OpenMP threads and the decoding thread already fill the cores (docs/results.md).
    assert scoring_options(RuntimeOptions(runtime=asked, cpu_threads=4), "paddle") == ScoringOptions("numpy", 1)


def test_the_service_scores_on_one_thread(four_cores):
    # It decodes uploads and takes concurrent requests while it scores: the cores are busy already.
    options = scoring_options(RuntimeOptions(runtime="openvino", cpu_threads=4), "openvino", shared_cores=True)
    assert options == ScoringOptions("numpy", product_threads=1)


def test_the_service_asks_for_shared_cores(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from deploy.service import served_models
    from deploy.service.settings import ServiceSettings

    asked = {}
    stats = tmp_path / "stats.npz"
    stats.write_bytes(b"x")

    class Recorder:
        def __init__(self, export_dir, **kwargs):
            asked.update(kwargs)
            self.data = SimpleNamespace(crop_size=4)
            self.files = SimpleNamespace(stats=str(stats))

        def predict_preprocessed(self, images):
            return []

    monkeypatch.setattr(served_models, "Inferencer", Recorder)
    monkeypatch.setattr(served_models, "files_signature", lambda export_dir: ())
    served_models.load_version(str(tmp_path), ServiceSettings(max_batch=1))
    assert asked["shared_cores"] is True


def test_on_a_gpu_the_bank_is_searched_there_on_one_host_thread(monkeypatch):
    monkeypatch.setattr(exported_model, "select_device", lambda device: "paddle" if device == "gpu" else "numpy")
    assert scoring_options(RuntimeOptions(use_gpu=True, cpu_threads=2), "paddle") == ScoringOptions("paddle", 1)


def test_dynamic_graph_processes_keep_one_thread():
    # predict.py, training and evaluation build their scorers with the defaults.
    assert ScoringOptions().product_threads == 1
    assert ScoringOptions("numpy").product_threads == 1
    assert MemoryBank(np.ones((3, 2), np.float32)).product_threads == 1


def test_the_chosen_count_reaches_the_memory_bank():
    from models.patchcore.scorer import build_scorer
    from utils.config import Config

    config = Config()
    bank = np.random.default_rng(0).standard_normal((20, 4)).astype(np.float32)
    scorer = build_scorer({"memory_bank": bank}, config, "numpy", 2)
    assert scorer.bank.product_threads == 2


def test_fewer_than_one_thread_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        ScoringOptions(product_threads=0)
    with pytest.raises(ValueError, match="at least 1"):
        MemoryBank(np.ones((3, 2), np.float32), product_threads=0)


@pytest.mark.parametrize("grouped", [False, True])
def test_answers_do_not_depend_on_the_thread_count(monkeypatch, grouped):
    # Small tiles: several query tiles per worker, sizes that do not divide the data.
    monkeypatch.setattr(knn, "QUERY_TILE", 7)
    monkeypatch.setattr(knn, "BANK_TILE", 13)
    rng = np.random.default_rng(5)
    bank = rng.standard_normal((90, 16)).astype(np.float32) * 20
    bank[45:] = bank[:45]                       # exact duplicates: the lowest index must win
    queries = np.concatenate([rng.standard_normal((60, 16)).astype(np.float32) * 20, bank[40:50]])
    answers = [MemoryBank(bank, grouped=grouped, product_threads=n).search(queries, k=1) for n in (1, 2, 3)]
    for dists, index in answers[1:]:
        np.testing.assert_array_equal(index, answers[0][1])
        np.testing.assert_array_equal(dists, answers[0][0])
    assert (answers[0][1][60:, 0] < 45).all()


def test_the_tiles_run_on_the_banks_threads(monkeypatch):
    monkeypatch.setattr(knn, "QUERY_TILE", 4)
    import threading
    seen = set()
    real = MemoryBank._query_tiles

    def spy(self, *args):
        seen.add(threading.get_ident())
        return real(self, *args)

    monkeypatch.setattr(MemoryBank, "_query_tiles", spy)
    rng = np.random.default_rng(1)
    bank = MemoryBank(rng.standard_normal((30, 8)).astype(np.float32), grouped=False, product_threads=2)
    bank.search(rng.standard_normal((40, 8)).astype(np.float32))
    assert threading.get_ident() not in seen and len(seen) >= 1
    seen.clear()
    MemoryBank(bank.features, grouped=False).search(rng.standard_normal((40, 8)).astype(np.float32))
    assert seen == {threading.get_ident()}


def test_a_scorer_with_threads_gives_the_one_thread_scores():
    from models.patchcore.scorer import PatchCoreScorer

    rng = np.random.default_rng(2)
    bank = rng.standard_normal((300, 8)).astype(np.float32)
    embedding = rng.standard_normal((2, 8, 20, 20)).astype(np.float32)
    one, two = (PatchCoreScorer(bank, 80, product_threads=n)(embedding) for n in (1, 2))
    for field in ("image_scores", "anomaly_maps", "patch_scores"):
        np.testing.assert_array_equal(getattr(one, field), getattr(two, field))
