"""Process-wide setup and resource readings shared by training, deployment and benchmarks."""
from __future__ import annotations

import os
import resource
import sys
import warnings

from utils.errors import UserError, install_interrupt_hook


def configure_environment() -> None:
    """Settings that must be in place before NumPy / Paddle load (prepare_process; benchmarks call it alone)."""
    # OpenBLAS worker threads spin for a long time after each matrix product (the kNN search) and
    # steal the cores from Paddle's next forward pass: on the 2-core test machine infer.py measured
    # 92 ms/image with the default and 50 ms with a short spin.
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
    # Paddle's OpenMP threads (Intel libiomp5) spin 200 ms after each parallel region by default:
    # between two images they hold the core the reader and the kNN need. 1 ms keeps them awake from
    # one layer to the next (bottle infer.py, oneDNN, 2 threads: 39.9-45.4 ms/image -> 32.5-36.8).
    os.environ.setdefault("KMP_BLOCKTIME", "1")
    reuse_freed_memory()
    # `import paddle` warns about a C++ extension cache that this project never compiles with.
    warnings.filterwarnings("ignore", message="No ccache found")
    # Image names in figure titles may hold characters the font lacks (CJK with DejaVu Sans): drawn as
    # empty boxes, the full name is in results.csv, so a warning per glyph only adds noise.
    warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from font", category=UserWarning)


# glibc's malloc, by default, gives blocks above 128 kB back to the OS as soon as they are freed
# (and trims the heap above a few MB), so every NumPy temporary of an image's size (a 448 px
# image's 3,136 x 128 patches are 1.6 MB) comes back as fresh pages and faults on each of them
# again. Blocks up to 4 MB kept for reuse and the heap trimmed only above 64 MB, the kNN of one
# bottle 448 px image against 1,639 entries took 10.5-11.4 ms instead of 15.1-17.7 (2 threads;
# docs/results.md, High resolution). Larger blocks still go back at once: 32 MB / 512 MB gave the
# same speed but kept more, and a 2048 px fit's peak came within 11 MB of its memory estimate.
MALLOC_MMAP_THRESHOLD = 4 * 2**20
MALLOC_TRIM_THRESHOLD = 64 * 2**20


def reuse_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed blocks for the next allocations (see above); False where the
    C library is not glibc or refuses (nothing changes then)."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3   # glibc's mallopt parameter numbers
        return bool(libc.mallopt(m_mmap_threshold, MALLOC_MMAP_THRESHOLD)
                    and libc.mallopt(m_trim_threshold, MALLOC_TRIM_THRESHOLD))
    except (OSError, AttributeError):
        return False


# Paddle logs through glog; at this level only errors remain: no executor chatter ("New Executor is
# Running") from a fit's static extraction or an export, nothing but results from Paddle Inference.
QUIET_PADDLE_LOGS = {"GLOG_minloglevel": "2"}


def quiet_paddle_logs() -> None:
    """Paddle's glog prints only errors (a GLOG_minloglevel the user set wins). Call before paddle is
    first imported: glog reads it once."""
    for name, value in QUIET_PADDLE_LOGS.items():
        os.environ.setdefault(name, value)


def prepare_process() -> None:
    """The process-wide setup of an entry script, its first statement (before NumPy and Paddle
    load; no import does any of it): thread and memory settings, Paddle's quiet glog, and Ctrl-C
    as one line also during the slow imports that follow."""
    configure_environment()
    quiet_paddle_logs()
    install_interrupt_hook()


DEVICES = ("auto", "cpu", "gpu")


def select_device(device: str) -> str:
    """Put Paddle on `device` (auto = a GPU when this build and machine have one) and return the
    array library that goes with it: "numpy" on the CPU (BLAS beats Paddle's eager CPU kernels
    there), "paddle" on a GPU (projection, coreset and kNN as tensor ops on the device)."""
    import paddle

    if device not in DEVICES:
        raise UserError(f"--device must be one of {', '.join(DEVICES)}, not {device!r}")
    has_gpu = paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if device == "gpu" and not has_gpu:
        raise UserError("--device gpu: no CUDA GPU is visible to this Paddle build (install paddlepaddle-gpu, "
                        "see README) or use --device cpu")
    use_gpu = device == "gpu" or (device == "auto" and has_gpu)
    paddle.set_device("gpu" if use_gpu else "cpu")
    return "paddle" if use_gpu else "numpy"


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


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
