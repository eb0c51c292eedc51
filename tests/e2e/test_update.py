"""train.py --update: good images added to a trained PatchCore model."""
import shutil

import numpy as np

from models.model_file import AnomalyModel
from tests.helpers import FAST_TRAIN_ARGS, run_script


def _train(root, out, *extra):
    done = run_script("train.py", "--data_path", str(root), "--category", "fabric", *FAST_TRAIN_ARGS,
                      "--save_path", str(out), *extra)
    assert done.returncode == 0, done.stderr
    return AnomalyModel.load(str(out / "fabric.pdparams"))


def _update(model_file, data, out, *extra):
    return run_script("train.py", "--update", str(model_file), "--data_path", str(data), "--save_path", str(out),
                      "--no_progress", *extra)


def test_update_adds_new_patches_deterministically(synthetic_root, tmp_path):
    base = _train(synthetic_root, tmp_path / "base")
    new_images = tmp_path / "new"
    shutil.copytree(synthetic_root / "part" / "train" / "good", new_images)   # another product's good parts
    banks = []
    for run in ("a", "b"):
        out = tmp_path / run
        shutil.copytree(tmp_path / "base", out)
        done = _update(out / "fabric.pdparams", new_images, out)
        assert done.returncode == 0, done.stderr
        updated = AnomalyModel.load(str(out / "fabric.pdparams"))
        banks.append(updated.arrays["memory_bank"])
    old = base.arrays["memory_bank"]
    np.testing.assert_array_equal(banks[0], banks[1])                  # same inputs, same result
    np.testing.assert_array_equal(banks[0][:len(old)], old)            # the old entries stay
    n_fitted = 8                                                        # the default val_ratio 0 holds out none
    per_image = base.fit_stats["train_patches"] / base.fit_stats["train_images"]
    assert updated.fit_stats["update_patches"] == n_fitted * per_image
    assert len(banks[0]) - len(old) == updated.fit_stats["update_added"] == round(0.25 * n_fitted * per_image)
    assert updated.fit_stats["updates"] == 1
    assert updated.fit_stats["train_images"] == base.fit_stats["train_images"] + n_fitted
    # the threshold never drops below the fit's own-image-out one (the added images score in-sample)
    assert "the added images' scores" in updated.calibration["image_rule"]
    assert updated.calibration["image_threshold"] >= base.calibration["image_threshold"]
    assert updated.extractor_fingerprint == base.extractor_fingerprint


def test_update_refuses_padim_other_categories_and_missing_folders(synthetic_root, tmp_path):
    _train(synthetic_root, tmp_path / "padim", "--method", "padim")
    for done, message in (
            (_update(tmp_path / "padim" / "fabric.pdparams", synthetic_root, tmp_path / "o"), "--keep_sums"),
            (_update(tmp_path / "padim" / "fabric.pdparams", tmp_path / "nowhere", tmp_path / "o"), ""),
            (_update(tmp_path / "missing.pdparams", synthetic_root, tmp_path / "o"), "not found")):
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], done.stderr
    base = _train(synthetic_root, tmp_path / "core")
    done = _update(tmp_path / "core" / "fabric.pdparams", synthetic_root, tmp_path / "o", "--category", "part")
    assert done.returncode == 2 and f"category '{base.category}'" in done.stderr


def test_padim_update_equals_a_fit_on_all_images(synthetic_root, tmp_path):
    good = sorted((synthetic_root / "fabric" / "train" / "good").iterdir())
    first = tmp_path / "first" / "fabric"
    shutil.copytree(synthetic_root / "fabric" / "test", first / "test")
    (first / "train" / "good").mkdir(parents=True)
    rest = tmp_path / "rest"
    rest.mkdir()
    for i, image in enumerate(good):
        shutil.copy(image, (first / "train" / "good" if i < 4 else rest) / image.name)
    args = ("--method", "padim", "--val_ratio", "0", "--keep_sums")
    whole = _train(synthetic_root, tmp_path / "whole", *args)
    _train(tmp_path / "first", tmp_path / "part", *args)
    done = _update(tmp_path / "part" / "fabric.pdparams", rest, tmp_path / "part")
    assert done.returncode == 0, done.stderr
    updated = AnomalyModel.load(str(tmp_path / "part" / "fabric.pdparams"))
    assert updated.fit_stats["train_images"] == whole.fit_stats["train_images"] == 8
    for name in ("mean", "inv_covariance"):
        np.testing.assert_allclose(updated.arrays[name], whole.arrays[name], rtol=1e-5, atol=1e-6)
    assert "sum_outer" in updated.arrays and updated.arrays["sum_outer"].dtype == np.float64
