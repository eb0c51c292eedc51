"""The export through OpenVINO on the CPU: it reads the classic .pdmodel itself, else the ONNX file."""
from __future__ import annotations

import os

import numpy as np

from models.runtimes.base import ExtractorRuntime, RuntimeOptions, check_fp32, runtime_error
from utils.errors import UserError


def openvino_source(files) -> str:
    """The file OpenVINO reads: the .pdmodel (fastest), else model.onnx (it cannot read PIR .json)."""
    if files.program.endswith(".pdmodel") and os.path.isfile(files.program):
        return files.program
    if files.onnx:
        return files.onnx
    raise UserError(f"OpenVINO reads a .pdmodel or an ONNX file, and there is neither beside {files.program}: "
                    f"export with export_model.py --format onnx")


class OpenVINORuntime(ExtractorRuntime):
    name = "openvino"
    title = "OpenVINO"

    def __init__(self, files, options: RuntimeOptions):
        import openvino

        check_fp32(options)
        self.source = openvino_source(files)
        # f32 said outright: on CPUs with bfloat16 units OpenVINO otherwise computes in bf16
        # (relative error 6e-3 on a MobileNetV2 embedding, far beyond the 1e-4 that scores allow).
        config = {"INFERENCE_NUM_THREADS": int(options.cpu_threads), "INFERENCE_PRECISION_HINT": "f32"}
        try:
            core = openvino.Core()
            self.model = core.compile_model(core.read_model(self.source), "CPU", config)
        except Exception as err:   # OpenVINO raises plain RuntimeErrors with C++ text
            raise UserError(runtime_error("OpenVINO", self.source, err)) from None
        self.request = self.model.create_infer_request()

    def __call__(self, images: np.ndarray) -> np.ndarray:
        try:
            outputs = self.request.infer([np.ascontiguousarray(images, dtype=np.float32)])
        except Exception as err:
            raise UserError(runtime_error("OpenVINO", self.source, err)) from None
        # The request reuses its output buffer for the next call.
        return np.array(outputs[self.model.output(0)], dtype=np.float32, copy=True)
