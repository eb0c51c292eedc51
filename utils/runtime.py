"""Process-wide setup and resource readings shared by training, deployment and benchmarks."""
from __future__ import annotations

import os
import resource
import sys
import warnings


def configure_environment() -> None:
    """Settings that must be in place before NumPy / Paddle load (called by `import utils`)."""
    # OpenBLAS worker threads spin for a long time after each matrix product (the kNN search) and
    # steal the cores from Paddle's next forward pass: on the 2-core test machine infer.py measured
    # 92 ms/image with the default and 50 ms with a short spin.
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
    # `import paddle` warns about a C++ extension cache that this project never compiles with.
    warnings.filterwarnings("ignore", message="No ccache found")


def peak_memory_mb() -> float:
    """Peak resident memory of this process (Linux reports kB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def available_memory_bytes() -> int | None:
    """Memory the system can give this process now (Linux MemAvailable), None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def format_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    return f"{count:.1f} TB"
