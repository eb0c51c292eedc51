import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
# The repo root (project packages) and tests/ (the shared helpers module) are importable everywhere.
sys.path[:0] = [str(TESTS.parent), str(TESTS)]


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """Two tiny generated categories (an object and a texture) in MVTec layout."""
    from datasets.synthetic import generate_category

    root = tmp_path_factory.mktemp("synthetic")
    common = dict(n_train=8, n_test_good=3, n_test_per_defect=2, defects=("scratch", "stain"), image_size=64)
    generate_category(root, "part", kind="object", seed=1, **common)
    generate_category(root, "fabric", kind="texture", seed=2, **common)
    return root
