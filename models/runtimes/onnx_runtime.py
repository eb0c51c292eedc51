"""The ONNX file (export_model.py --format onnx) through ONNX Runtime on the CPU."""
from __future__ import annotations

import numpy as np

from models.runtimes.base import ExtractorRuntime, RuntimeOptions, check_fp32, runtime_error
from utils.errors import UserError


class ONNXRuntime(ExtractorRuntime):
    name = "onnxruntime"
    title = "ONNX Runtime"

    def __init__(self, files, options: RuntimeOptions):
        import onnxruntime

        if not files.onnx:
            raise UserError(f"--runtime onnxruntime needs the model.onnx beside {files.program}: "
                            f"export with export_model.py --format onnx")
        check_fp32(options)
        self.source = files.onnx
        settings = onnxruntime.SessionOptions()
        settings.intra_op_num_threads = int(options.cpu_threads)
        settings.inter_op_num_threads = 1
        settings.log_severity_level = 3   # no warnings about unused initialisers on every load
        try:
            self.session = onnxruntime.InferenceSession(self.source, settings, providers=["CPUExecutionProvider"])
        except Exception as err:
            raise UserError(runtime_error("ONNX Runtime", self.source, err)) from None
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, images: np.ndarray) -> np.ndarray:
        try:
            return self.session.run(None, {self.input_name: np.ascontiguousarray(images, dtype=np.float32)})[0]
        except Exception as err:
            raise UserError(runtime_error("ONNX Runtime", self.source, err)) from None
