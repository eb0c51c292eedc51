"""Paddle Inference predictor for the exported feature extractor, and the export it belongs to."""
from __future__ import annotations

import os

import numpy as np
from paddle import inference

from models.runtimes.base import RuntimeOptions
from models.model_file import AnomalyModel, arrays_sha256
from models.scoring import ScoringOptions
from utils.config import DEFAULT_CPU_THREADS
from utils.errors import UserError, last_line
from utils.io import file_sha256
from utils.runtime import select_device


def scoring_options(runtime: RuntimeOptions, shared_cores: bool = False) -> ScoringOptions:
    """How a deploy process (infer.py, the Inferencer, serve.py) scores, from its runtime's options.

    On a GPU the memory-bank search runs there too (Paddle kNN), not in NumPy on the host. On the
    CPU the network runs in a static-graph engine (Paddle Inference, OpenVINO, ONNX Runtime) and
    not at the same time as the scorer, so the bank's tile products and the blur are shared by as
    many threads as the network's (at most the machine's cores). shared_cores: the process does
    other work while it scores (the service decodes the next uploads and takes concurrent
    requests), which already keeps the cores busy: one thread (serve.py at 4 clients, 448 px:
    0.77-0.87x the throughput with two; docs/results.md, High resolution). Processes that run
    Paddle's dynamic graph keep ScoringOptions' one thread too.
    """
    array_lib = select_device("gpu" if runtime.use_gpu else "cpu")
    if array_lib != "numpy" or shared_cores:
        return ScoringOptions(array_lib)
    return ScoringOptions(array_lib, product_threads=max(1, min(runtime.cpu_threads, os.cpu_count() or 1)))


def load_exported_model(stats_path: str, params_path: str, program_path: str | None = None,
                        onnx_path: str | None = None) -> AnomalyModel:
    """The model of a stats.npz, refused unless it was written by the same export as the program
    and parameters files, and its arrays are the ones exported.

    The tie is by content (SHA-256 recorded at export): another export whose program, parameters and
    arrays are byte-identical is the same model and is accepted. Stats files written before the
    program and arrays hashes existed are checked against the parameters only.
    """
    model, binding = AnomalyModel.load_stats(stats_path)
    for path, key in ((params_path, "params_sha256"), (program_path, "program_sha256"), (onnx_path, "onnx_sha256")):
        if path is None:
            continue
        if not os.path.isfile(path):
            raise UserError(f"file not found: {path}")
        if key in binding and binding[key] != file_sha256(path):
            raise UserError(f"stats file {stats_path} was not exported with {path}: "
                            f"use the stats.npz from the same export_model.py run")
    if onnx_path is not None and "onnx_sha256" not in binding:
        raise UserError(f"stats file {stats_path} was not exported with {onnx_path}: "
                        f"use the stats.npz from the same export_model.py run")
    if "params_sha256" not in binding:
        raise UserError(f"stats file {stats_path}: field 'params_sha256' is missing")
    if "arrays_sha256" in binding and binding["arrays_sha256"] != arrays_sha256(model.arrays):
        raise UserError(f"stats file {stats_path}: its arrays were changed after export")
    return model


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
