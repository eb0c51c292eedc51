import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
# The repo root (project packages) and tests/ (the shared helpers module) are importable everywhere.
sys.path[:0] = [str(TESTS.parent), str(TESTS)]

from utils.runtime import configure_environment, quiet_paddle_logs  # noqa: E402

# What the entry scripts do first (utils.runtime.prepare_process; no import does it), for the library
# code the tests run in this process: the threading environment before NumPy loads, quiet glog. The
# Ctrl-C hook is left to pytest.
configure_environment()
quiet_paddle_logs()


@pytest.fixture(scope="session", autouse=True)
def service_data_dir(tmp_path_factory) -> Path:
    """serve.py started by any test keeps its inspection log here, not in the repo (serve.py's --data_dir default)."""
    folder = tmp_path_factory.mktemp("serve_data")
    os.environ["PATCHCORE_DATA_DIR"] = str(folder)
    return folder


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """Two tiny generated categories (an object and a texture) in MVTec layout."""
    from datasets.synthetic import generate_category

    root = tmp_path_factory.mktemp("synthetic")
    common = dict(n_train=8, n_test_good=3, n_test_per_defect=2, defects=("scratch", "stain"), image_size=64)
    generate_category(root, "part", kind="object", seed=1, **common)
    generate_category(root, "fabric", kind="texture", seed=2, **common)
    return root


@pytest.fixture(scope="session")
def served_models(synthetic_root, tmp_path_factory) -> Path:
    """A --models folder as a user makes it: train.py's part.pdparams and export_model.py's part/ export."""
    from helpers import FAST_TRAIN_ARGS, run_script

    root = tmp_path_factory.mktemp("models")
    done = run_script("train.py", "--data_path", str(synthetic_root), "--category", "part", "--save_path", str(root),
                      *FAST_TRAIN_ARGS)
    assert done.returncode == 0, done.stderr
    done = run_script("export_model.py", "--model_path", str(root / "part.pdparams"), "--save_dir", str(root / "part"))
    assert done.returncode == 0, done.stderr
    return root


@pytest.fixture(scope="session")
def converted_mobilenet(tmp_path_factory):
    from helpers import shared_dir

    source = shared_dir() / "weights" / "mobilenet_v2_imagenet_torch.pt"
    if not source.is_file():
        pytest.skip("ImageNet MobileNetV2 weights not present (../shared/weights)")
    from tools.convert_weights import convert_file

    target = tmp_path_factory.mktemp("weights") / "mobilenet_v2.pdparams"
    convert_file(str(source), str(target), "mobilenet_v2", log=None)
    return target
