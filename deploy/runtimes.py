"""Extractor runtimes: the exported program run by one inference engine, images -> patch embeddings.

Every runtime is an ExtractorRuntime (one base class, one call); `open_runtime` picks and builds one
from the export's files and the options. Everything after the embeddings (memory-bank scoring,
decisions) is the same whatever the runtime.
"""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from utils.errors import UserError

STATS_FILE = "stats.npz"
BACKENDS = ("auto", "paddle")


@dataclass(frozen=True)
class RuntimeOptions:
    """How to run the extractor; fields a backend has no use for are ignored by it."""
    backend: str = "auto"
    use_gpu: bool = False
    cpu_threads: int = 2
    enable_mkldnn: bool | None = None   # Paddle Inference only; None: the backend's default
    precision: str = "fp32"
    use_tensorrt: bool = False
    gpu_id: int = 0


@dataclass(frozen=True)
class ExportFiles:
    """The files export_model.py writes for one model."""
    program: str
    params: str
    stats: str

    @classmethod
    def in_folder(cls, folder: str) -> "ExportFiles":
        """The export in `folder` (model.pdmodel or model.json, model.pdiparams, stats.npz)."""
        if not os.path.isdir(folder):
            raise UserError(f"export folder not found: {folder}")
        programs = [os.path.join(folder, f"model{ext}") for ext in (".pdmodel", ".json")]
        program = next((p for p in programs if os.path.isfile(p)), programs[0])
        return cls(program, os.path.join(folder, "model.pdiparams"), os.path.join(folder, STATS_FILE))


class ExtractorRuntime(ABC):
    """images [B,3,H,W] float32 -> patch embeddings [B,C,h,w] float32."""
    name: str = ""

    @abstractmethod
    def __call__(self, images: np.ndarray) -> np.ndarray:
        ...


class PaddleInferenceRuntime(ExtractorRuntime):
    """The program through paddle.inference (see deploy.predictor.FeaturePredictor)."""
    name = "paddle"

    def __init__(self, files: ExportFiles, options: RuntimeOptions):
        from deploy.predictor import FeaturePredictor

        self.predictor = FeaturePredictor(files.program, files.params, options.use_gpu, bool(options.enable_mkldnn),
                                          options.cpu_threads, options.precision, options.use_tensorrt,
                                          options.gpu_id)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.predictor(images)


def open_runtime(files: ExportFiles, options: RuntimeOptions) -> ExtractorRuntime:
    """The runtime `options.backend` names; "auto": the fastest one installed for the device."""
    if options.backend not in BACKENDS:
        raise UserError(f"unknown backend '{options.backend}': choose one of {', '.join(BACKENDS)}")
    return PaddleInferenceRuntime(files, options)
