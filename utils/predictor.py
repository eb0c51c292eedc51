"""Paddle Inference predictor for the exported feature extractor."""
from __future__ import annotations

import hashlib
import os

import numpy as np
from paddle import inference

from utils.errors import PatchCoreError


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


class FeaturePredictor:
    """images [B,3,H,W] float32 -> patch embedding [B,C,h,w], through paddle.inference."""

    def __init__(self, model_file: str, params_file: str, use_gpu: bool = False, enable_mkldnn: bool = False,
                 cpu_threads: int = 1, precision: str = "fp32", use_tensorrt: bool = False, gpu_id: int = 0):
        for path in (model_file, params_file):
            if not os.path.isfile(path):
                raise PatchCoreError(f"file not found: {path}")
        if precision != "fp32":
            raise PatchCoreError(f"--precision {precision} is not supported: the memory-bank distances need fp32")
        if use_tensorrt and not use_gpu:
            raise PatchCoreError("--use_tensorrt needs --use_gpu")
        config = inference.Config(model_file, params_file)
        if use_gpu:
            import paddle

            if not paddle.device.is_compiled_with_cuda():
                raise PatchCoreError("--use_gpu: this Paddle build has no CUDA support (install paddlepaddle-gpu)")
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
            raise PatchCoreError(f"cannot load the exported model '{model_file}': "
                                 f"{str(err).strip().splitlines()[-1][:160]}") from None
        self.input = self.predictor.get_input_handle(self.predictor.get_input_names()[0])
        self.output = self.predictor.get_output_handle(self.predictor.get_output_names()[0])

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = np.ascontiguousarray(images, dtype=np.float32)
        self.input.reshape(list(images.shape))
        self.input.copy_from_cpu(images)
        try:
            self.predictor.run()
        except Exception as err:   # e.g. PIR programs under oneDNN hit unimplemented attributes
            raise PatchCoreError(f"the predictor failed: {str(err).strip().splitlines()[-1][:200]}") from None
        return self.output.copy_to_cpu()
