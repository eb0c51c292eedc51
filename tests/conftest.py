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
