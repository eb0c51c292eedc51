"""The entry scripts' malloc setting: the scorer's image-sized temporaries reuse freed memory."""
import subprocess
import sys
import textwrap

import pytest

ROOT = __file__.rsplit("/tests/", 1)[0]

FAULTS_PER_SEARCH = textwrap.dedent("""
    import resource, sys
    sys.path.insert(0, {root!r})
    if sys.argv[1] == "set":
        from utils.runtime import configure_environment
        configure_environment()
    import numpy as np
    from models.knn import MemoryBank
    rng = np.random.default_rng(0)
    entries = rng.standard_normal((1639, 128)).astype(np.float32)
    bank = MemoryBank(entries)
    # One 448 px image's patches, each near some entry as real patches are.
    queries = entries[rng.integers(0, 1639, 3136)] + 0.5 * rng.standard_normal((3136, 128)).astype(np.float32)
    bank.search(queries)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        bank.search(queries)
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_search_reuses_freed_memory_instead_of_faulting_pages_in_again():
    from utils.runtime import reuse_freed_memory

    if not reuse_freed_memory():
        pytest.skip("the C library is not glibc")
    script = FAULTS_PER_SEARCH.format(root=ROOT)
    faults = {mode: float(subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True,
                                         check=True).stdout) for mode in ("default", "set")}
    # Default glibc hands the search's multi-MB temporaries back to the OS and faults them in again
    # (about 2,300 page faults per search measured); kept for reuse, a few dozen while it settles.
    assert faults["default"] > 500, faults
    assert faults["set"] < faults["default"] / 10, faults
