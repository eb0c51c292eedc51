"""The model file: older formats still load, incomplete files are refused."""
import json

import numpy as np
import pytest

from models.model_file import AnomalyModel
from utils.config import Config
from utils.errors import UserError


def test_version1_patchcore_files_still_load(tmp_path):
    bank = np.arange(12, dtype=np.float32).reshape(4, 3)
    old = {"format": "patchcore-paddle/1", "category": "part", "config": Config().to_dict(), "memory_bank": bank,
           "extractor_fingerprint": "abc", "feature_grid": [2, 2], "calibration": {}, "fit_stats": {}}
    np.testing.assert_array_equal(AnomalyModel.from_dict(old).arrays["memory_bank"], bank)
    stats = tmp_path / "stats.npz"
    meta = {k: v for k, v in old.items() if k != "memory_bank"}
    np.savez(stats, memory_bank=bank, meta=np.array(json.dumps(dict(meta, params_sha256="0f"))))
    model, sha = AnomalyModel.load_stats(stats)
    assert sha == "0f" and model.method == "patchcore"
    np.testing.assert_array_equal(model.arrays["memory_bank"], bank)
    padim_without_arrays = dict(old, format="patchcore-paddle/2", arrays={"mean": bank})
    padim_without_arrays["config"]["model"]["method"] = "padim"
    with pytest.raises(UserError, match="lacks the padim array 'inv_covariance'"):
        AnomalyModel.from_dict(padim_without_arrays)
