"""The exported Paddle program through Paddle Inference (CPU with or without oneDNN, or GPU)."""
from __future__ import annotations

import numpy as np

from models.runtimes.base import ExtractorRuntime, RuntimeOptions


def mkldnn_default(program: str, options: RuntimeOptions) -> bool:
    """oneDNN unless told otherwise, on the CPU and for a classic .pdmodel: 3x faster there (bottle
    ResNet18 33.7 against 133 ms/img). A PIR .json program stays without it: some of its ops have
    no oneDNN kernel for every attribute."""
    if options.enable_mkldnn is not None:
        return options.enable_mkldnn
    return not options.use_gpu and program.endswith(".pdmodel")


class PaddleInferenceRuntime(ExtractorRuntime):
    """The program through paddle.inference (see deploy.exported_model.FeaturePredictor)."""
    name = "paddle"
    title = "Paddle Inference"

    def __init__(self, files, options: RuntimeOptions):
        from deploy.exported_model import FeaturePredictor

        self.enable_mkldnn = mkldnn_default(files.program, options)
        self.use_gpu = options.use_gpu
        self.source = files.program
        self.predictor = FeaturePredictor(files.program, files.params, options.use_gpu, self.enable_mkldnn,
                                          options.cpu_threads, options.precision, options.use_tensorrt,
                                          options.gpu_id)

    def description(self) -> str:
        device = "GPU" if self.use_gpu else "CPU, oneDNN" if self.enable_mkldnn else "CPU"
        return f"{super().description()} ({device})"

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.predictor(images)
