"""The exported Paddle program through Paddle Inference (CPU with or without oneDNN, or GPU)."""
from __future__ import annotations

import os

import numpy as np

from models.runtimes.base import ExtractorRuntime, RuntimeOptions
from utils.config import DEFAULT_CPU_THREADS
from utils.errors import UserError, last_line


def mkldnn_default(program: str, options: RuntimeOptions) -> bool:
    """oneDNN unless told otherwise, on the CPU and for a classic .pdmodel: 3x faster there (bottle
    ResNet18 33.7 against 133 ms/img). A PIR .json program stays without it: some of its ops have
    no oneDNN kernel for every attribute."""
    if options.enable_mkldnn is not None:
        return options.enable_mkldnn
    return not options.use_gpu and program.endswith(".pdmodel")


class PaddleInferenceRuntime(ExtractorRuntime):
    """The program through paddle.inference (see FeaturePredictor)."""
    name = "paddle"
    title = "Paddle Inference"

    def __init__(self, files, options: RuntimeOptions):
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


class FeaturePredictor:
    """images [B,3,H,W] float32 -> patch embedding [B,C,h,w], through paddle.inference."""

    def __init__(self, model_file: str, params_file: str, use_gpu: bool = False, enable_mkldnn: bool = False,
                 cpu_threads: int = DEFAULT_CPU_THREADS, precision: str = "fp32", use_tensorrt: bool = False, gpu_id: int = 0):
        for path in (model_file, params_file):
            if not os.path.isfile(path):
                raise UserError(f"file not found: {path}")
        if precision != "fp32":
            raise UserError(f"--precision {precision} is not supported: the memory-bank distances need fp32")
        if use_tensorrt and not use_gpu:
            raise UserError("--use_tensorrt needs --use_gpu")
        from paddle import inference   # imported when opened: importing Paddle costs seconds

        config = inference.Config(model_file, params_file)
        if use_gpu:
            import paddle

            if not paddle.device.is_compiled_with_cuda():
                raise UserError("--use_gpu: this Paddle build has no CUDA support (install paddlepaddle-gpu)")
            config.enable_use_gpu(500, gpu_id)
            if use_tensorrt:
                config.enable_tensorrt_engine(workspace_size=1 << 30, max_batch_size=1, min_subgraph_size=3,
                                              precision_mode=inference.PrecisionType.Float32,
                                              use_static=False, use_calib_mode=False)
        else:
            config.disable_gpu()
            config.set_cpu_math_library_num_threads(cpu_threads)
            if enable_mkldnn:
                config.enable_mkldnn()
            else:
                config.disable_mkldnn()
        if model_file.endswith(".json"):
            # A PIR program (export_model.py --program json) needs the PIR executor.
            config.enable_new_ir(True)
            config.enable_new_executor(True)
        config.switch_ir_optim(True)
        config.enable_memory_optim()
        config.disable_glog_info()
        try:
            self.predictor = inference.create_predictor(config)
        except Exception as err:
            raise UserError(f"cannot load the exported model '{model_file}': "
                                 f"{last_line(err)}") from None
        self.input = self.predictor.get_input_handle(self.predictor.get_input_names()[0])
        self.output = self.predictor.get_output_handle(self.predictor.get_output_names()[0])

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = np.ascontiguousarray(images, dtype=np.float32)
        self.input.reshape(list(images.shape))
        self.input.copy_from_cpu(images)
        try:
            self.predictor.run()
        except Exception as err:   # e.g. PIR programs under oneDNN hit unimplemented attributes
            raise UserError(f"the predictor failed: {last_line(err, 200)}") from None
        return self.output.copy_to_cpu()
