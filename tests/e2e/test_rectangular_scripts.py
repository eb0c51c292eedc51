"""Non-square images: --resize H,W / --crop_size H,W through train, export, infer and predict."""
import numpy as np
import pytest
from PIL import Image

from models.model_file import AnomalyModel
from tests.helpers import check_infer_matches_predict, run_script

RECT_ARGS = ("--arch", "resnet18", "--pretrained", "none", "--resize", "64,96", "--crop_size", "64,80",
             "--k", "25", "--no_progress")


@pytest.mark.parametrize("method, interpolation", [("coreset", "antialias"), ("padim", "bilinear")])
def test_rectangular_model_deploys_with_its_geometry(synthetic_root, tmp_path, method, interpolation):
    out = tmp_path / "out"
    done = run_script("train.py", "--data_path", str(synthetic_root), "--category", "part", "--method", method,
                      *RECT_ARGS, "--interpolation", interpolation, "--eval", "--eval_PRO", "--save_path", str(out))
    assert done.returncode == 0, done.stderr
    model_file = out / "part.pdparams"
    model = AnomalyModel.load(str(model_file))
    assert model.config.data.crop_hw == (64, 80) and model.config.data.interpolation == interpolation
    grid = model.feature_grid
    assert grid[1] > grid[0]                                  # the feature grid keeps the aspect ratio
    export_dir = tmp_path / "export"
    done = run_script("export_model.py", "--model_path", str(model_file), "--save_dir", str(export_dir))
    assert done.returncode == 0, done.stderr
    check_infer_matches_predict(export_dir, model_file, out / "train_results.csv", synthetic_root, "part", tmp_path)
    maps = np.load(tmp_path / "infer_True" / "anomaly_maps.npz")["anomaly_maps"]
    assert maps.shape[1:] == (64, 80)
    figure = next((tmp_path / "predict").glob("*.png"))
    width, height = Image.open(figure).size
    assert width > 3 * height                                 # panels wider than tall, as the crop
