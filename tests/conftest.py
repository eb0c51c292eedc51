import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def shared_dir() -> Path:
    """../shared beside the repo (read-only data and weights); PATCHCORE_SHARED overrides it."""
    return Path(os.environ.get("PATCHCORE_SHARED", ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


def run_script(*args: str, cwd: Path = ROOT) -> "subprocess.CompletedProcess[str]":
    """Run an entry script the way a user does; returns the completed process (never raises)."""
    import subprocess

    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """Two tiny generated categories (an object and a texture) in MVTec layout."""
    from datasets.synthetic import generate_category

    root = tmp_path_factory.mktemp("synthetic")
    common = dict(n_train=8, n_test_good=3, n_test_per_defect=2, defects=("scratch", "stain"), image_size=64)
    generate_category(root, "part", kind="object", seed=1, **common)
    generate_category(root, "fabric", kind="texture", seed=2, **common)
    return root


# Small and fast: random-init ResNet18 on 64x64 images.
FAST_TRAIN_ARGS = ("--arch", "resnet18", "--pretrained", "none", "--resize", "64", "--crop_size", "64",
                   "--k", "25", "--no_progress")
