"""What every extractor runtime is and is given."""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from utils.config import DEFAULT_CPU_THREADS
from utils.errors import UserError, last_line


@dataclass(frozen=True)
class RuntimeOptions:
    """How to run the extractor; fields a runtime has no use for are ignored by it."""
    runtime: str = "auto"
    use_gpu: bool = False
    cpu_threads: int = DEFAULT_CPU_THREADS
    enable_mkldnn: bool | None = None   # Paddle Inference only; None: on for a .pdmodel on the CPU
    precision: str = "fp32"
    use_tensorrt: bool = False
    gpu_id: int = 0


class ExtractorRuntime(ABC):
    """images [B,3,H,W] float32 -> patch embeddings [B,C,h,w] float32."""
    name: str = ""     # its --runtime value
    title: str = ""    # the runtime's own name, as the docs and the output spell it
    source: str = ""   # the file it runs

    def description(self) -> str:
        """The runtime and the file it runs, for the one line infer.py prints before scoring."""
        return f"{self.title} on {os.path.basename(self.source)}"

    @abstractmethod
    def __call__(self, images: np.ndarray) -> np.ndarray:
        ...


def runtime_error(runtime: str, path: str, err: Exception) -> str:
    """One line for a runtime that cannot load or run a file: its own last line, shortened."""
    return f"{runtime} cannot run '{path}': {last_line(err, 200)}"


def check_fp32(options: RuntimeOptions) -> None:
    if options.precision != "fp32":
        raise UserError(f"--precision {options.precision} is not supported: the memory-bank distances need fp32")
