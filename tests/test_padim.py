"""PaDiM: Gaussian fit, Mahalanobis scoring, channel selection, and the scripts end to end."""
import numpy as np
import paddle
import pytest
from scipy.spatial.distance import mahalanobis as scipy_mahalanobis

import models.padim_fit as padim_fit
from conftest import FAST_TRAIN_ARGS, run_script
from models.feature_extractor import build_extractor, embedding_channels, select_channels
from models.model_file import PatchCoreModel
from models.padim import PadimScorer
from models.scorer import upsample_and_smooth
from test_deploy import TRAINING_MODULES, check_infer_matches_predict, modules_infer_loads
from utils.config import ARCHS, PADIM_LAYERS, ModelConfig
from utils.errors import PatchCoreError

PADIM_ARGS = (*FAST_TRAIN_ARGS, "--method", "padim")   # --k 25: 25 of resnet18's 448 channels


def embedding_batches(seed=0, sizes=(3, 3, 1), channels=5, grid=(3, 4)):
    # Far from zero on purpose: the running sums must not lose the spread to the large mean.
    rng = np.random.default_rng(seed)
    return [(100.0 + rng.standard_normal((n, channels, *grid)) * rng.uniform(0.5, 2.0, channels)[:, None, None])
            .astype(np.float32) for n in sizes]


@pytest.mark.parametrize("chunk_bytes", [1, padim_fit.INVERT_CHUNK_BYTES])
def test_fit_equals_numpy_mean_covariance_and_inverse(monkeypatch, chunk_bytes):
    monkeypatch.setattr(padim_fit, "INVERT_CHUNK_BYTES", chunk_bytes)   # 1 byte: one position per chunk
    batches = embedding_batches()
    fitted = padim_fit.fit_gaussians(iter(batches), ModelConfig(method="padim"))
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
    with pytest.raises(PatchCoreError, match="at least 2 training images"):
        padim_fit.fit_gaussians(iter(embedding_batches(sizes=(1,))), ModelConfig(method="padim"))
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
        with pytest.raises(PatchCoreError, match="number of channels"):
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


@pytest.mark.parametrize("arch", ARCHS)
def test_stage_channel_table_matches_the_networks(arch):
    extractor = build_extractor(ModelConfig(method="padim", arch=arch, pretrained="none", layers=PADIM_LAYERS, k=0))
    with paddle.no_grad():
        out = extractor(paddle.zeros([1, 3, 32, 32]))
    assert out.shape[1] == embedding_channels(arch, PADIM_LAYERS)


@pytest.fixture(scope="module")
def padim_runs(synthetic_root, tmp_path_factory):
    """Two identical padim trainings of 'part' (a, b); a is also evaluated and exported."""
    out = tmp_path_factory.mktemp("padim")
    for name in ("a", "b"):
        done = run_script("train.py", "--data_path", str(synthetic_root), "--category", "part", "--eval",
                          "--eval_PRO", "--save_path", str(out / name), *PADIM_ARGS)
        assert done.returncode == 0, done.stderr
        assert "channels" in done.stdout
    done = run_script("export_model.py", "--model_path", str(out / "a" / "part.pdparams"), "--save_dir",
                      str(out / "a_infer"))
    assert done.returncode == 0, done.stderr
    return out


def test_same_seed_gives_identical_models_and_numbers(padim_runs):
    a, b = (PatchCoreModel.load(padim_runs / name / "part.pdparams") for name in ("a", "b"))
    assert a.config.model.method == "padim" and a.config.model.layers == PADIM_LAYERS
    assert a.arrays["mean"].shape == (16 * 16, 25) and a.arrays["inv_covariance"].shape == (16 * 16, 25, 25)
    for name in ("mean", "inv_covariance"):
        np.testing.assert_array_equal(a.arrays[name], b.arrays[name])
    assert (padim_runs / "a" / "part_test_scores.csv").read_text() == \
           (padim_runs / "b" / "part_test_scores.csv").read_text()
    metrics = [[line.split(",")[:4] for line in (padim_runs / name / "train_results.csv").read_text().splitlines()]
               for name in ("a", "b")]
    assert metrics[0] == metrics[1]     # fit_seconds, the next column, is the only one that may differ


def test_eval_reads_the_method_from_the_model_file(padim_runs, synthetic_root):
    done = run_script("eval.py", "--data_path", str(synthetic_root), "--category", "part", "--eval_PRO",
                      "--save_path", str(padim_runs / "a"), "--no_progress")
    assert done.returncode == 0, done.stderr
    trained, evaluated = ((padim_runs / "a" / f"{t}_results.csv").read_text().splitlines() for t in ("train", "eval"))
    # Same metrics; train's table adds fit_seconds and channels after them.
    assert [line.split(",")[:4] for line in trained] == [line.split(",")[:4] for line in evaluated]


def test_export_and_infer_agree_with_predict(padim_runs, synthetic_root):
    check_infer_matches_predict(padim_runs / "a_infer", padim_runs / "a" / "part.pdparams",
                                padim_runs / "a" / "train_results.csv", synthetic_root, "part", padim_runs)


def test_infer_imports_no_training_code(padim_runs, synthetic_root):
    image = next((synthetic_root / "part" / "test" / "good").iterdir())
    loaded = modules_infer_loads(padim_runs / "a_infer", image, padim_runs / "lean")
    assert "models.padim" in loaded and not loaded & TRAINING_MODULES


def test_bad_channel_count_is_a_one_line_error(synthetic_root, tmp_path):
    done = run_script("train.py", "--data_path", str(synthetic_root), "--category", "part",
                      "--save_path", str(tmp_path / "out"), *PADIM_ARGS, "--k", "2.5")
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0 and len(lines) == 1 and "--k for padim is a number of channels" in lines[0]


def test_version1_patchcore_files_still_load(tmp_path):
    import json

    from utils.config import Config

    bank = np.arange(12, dtype=np.float32).reshape(4, 3)
    old = {"format": "patchcore-paddle/1", "category": "part", "config": Config().to_dict(), "memory_bank": bank,
           "extractor_fingerprint": "abc", "feature_grid": [2, 2], "calibration": {}, "fit_stats": {}}
    np.testing.assert_array_equal(PatchCoreModel.from_dict(old).arrays["memory_bank"], bank)
    stats = tmp_path / "stats.npz"
    meta = {k: v for k, v in old.items() if k != "memory_bank"}
    np.savez(stats, memory_bank=bank, meta=np.array(json.dumps(dict(meta, params_sha256="0f"))))
    model, sha = PatchCoreModel.load_stats(stats)
    assert sha == "0f" and model.method == "patchcore"
    np.testing.assert_array_equal(model.arrays["memory_bank"], bank)
    padim_without_arrays = dict(old, format="patchcore-paddle/2", arrays={"mean": bank})
    padim_without_arrays["config"]["model"]["method"] = "padim"
    with pytest.raises(PatchCoreError, match="lacks the padim array 'inv_covariance'"):
        PatchCoreModel.from_dict(padim_without_arrays)
