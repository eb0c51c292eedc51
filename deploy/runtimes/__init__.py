"""Extractor runtimes: the exported program run by one inference engine, images -> patch embeddings.

Every runtime is an ExtractorRuntime (one base class, one call); `open_runtime` picks and builds one
from the export's files and the options. Everything after the embeddings (memory-bank scoring,
decisions) is the same whatever the runtime. One module per engine: paddle_inference, openvino_engine,
onnxruntime_engine; each imports its engine only when opened.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

from deploy.runtimes.base import ExtractorRuntime, RuntimeOptions
from utils.errors import UserError

STATS_FILE = "stats.npz"
ONNX_FILE = "model.onnx"
# The engines, fastest first on a CPU (bottle MobileNetV2, batch 1: OpenVINO 6.7 ms/img, Paddle
# Inference with oneDNN 12.5, ONNX Runtime 13.7): "auto" takes the first one installed that can
# read the export.
ENGINES = ("openvino", "paddle", "onnxruntime")
BACKENDS = ("auto", *ENGINES)
_ENGINE_PACKAGES = {"paddle": "paddle", "openvino": "openvino", "onnxruntime": "onnxruntime"}

__all__ = ["BACKENDS", "ENGINES", "ExportFiles", "ExtractorRuntime", "RuntimeOptions", "installed_engines",
           "open_runtime", "resolve_backend"]


@dataclass(frozen=True)
class ExportFiles:
    """The files export_model.py writes for one model; `onnx` is None where it wrote no ONNX file."""
    program: str
    params: str
    stats: str
    onnx: str | None = None

    @classmethod
    def in_folder(cls, folder: str) -> "ExportFiles":
        """The export in `folder` (model.pdmodel or model.json, model.pdiparams, stats.npz, model.onnx)."""
        if not os.path.isdir(folder):
            raise UserError(f"export folder not found: {folder}")
        programs = [os.path.join(folder, f"model{ext}") for ext in (".pdmodel", ".json")]
        program = next((p for p in programs if os.path.isfile(p)), programs[0])
        return cls(program, os.path.join(folder, "model.pdiparams"), os.path.join(folder, STATS_FILE),
                   _existing(os.path.join(folder, ONNX_FILE)))

    @classmethod
    def of_program(cls, program: str, params: str, stats: str) -> "ExportFiles":
        """infer.py's --model_file/--params_file/--stats; the model.onnx beside the program, if any."""
        return cls(program, params, stats, _existing(os.path.join(os.path.dirname(program) or ".", ONNX_FILE)))


def _existing(path: str) -> str | None:
    return path if os.path.isfile(path) else None


def installed_engines() -> tuple[str, ...]:
    """The engines whose Python package is installed (found, not imported: importing costs seconds)."""
    return tuple(e for e in ENGINES if importlib.util.find_spec(_ENGINE_PACKAGES[e]) is not None)


def resolve_backend(files: ExportFiles, options: RuntimeOptions) -> str:
    """The engine `options.backend` names; for "auto", Paddle Inference on a GPU or with
    enable_mkldnn set, else the fastest
    installed engine that can read the export (OpenVINO reads the .pdmodel or the ONNX file,
    ONNX Runtime only the ONNX file)."""
    if options.backend not in BACKENDS:
        raise UserError(f"unknown backend '{options.backend}': choose one of {', '.join(BACKENDS)}")
    if options.backend != "auto":
        return options.backend
    if options.use_gpu or options.enable_mkldnn is not None:
        # A Paddle Inference setting asked for (as TIPC's grid does) means Paddle Inference.
        return "paddle"
    for engine in installed_engines():
        if engine == "openvino" and (files.program.endswith(".pdmodel") or files.onnx):
            return engine
        if engine == "paddle" or (engine == "onnxruntime" and files.onnx):
            return engine
    raise UserError(f"no installed inference engine reads {files.program}: pip install paddlepaddle, or export "
                    f"with --format onnx for OpenVINO / ONNX Runtime")


def open_runtime(files: ExportFiles, options: RuntimeOptions) -> ExtractorRuntime:
    """The runtime `options.backend` names; "auto": the fastest one installed for the device."""
    engine = resolve_backend(files, options)
    if engine != "paddle" and options.use_gpu:
        raise UserError(f"--use_gpu runs on Paddle Inference only: use --backend paddle or auto, not {engine}")
    if importlib.util.find_spec(_ENGINE_PACKAGES[engine]) is None:
        raise UserError(f"--backend {engine}: the package '{_ENGINE_PACKAGES[engine]}' is not installed "
                        f"(pip install {_ENGINE_PACKAGES[engine]})")
    if engine == "paddle":
        from deploy.runtimes.paddle_inference import PaddleInferenceRuntime as runtime
    elif engine == "openvino":
        from deploy.runtimes.openvino_engine import OpenVINORuntime as runtime
    else:
        from deploy.runtimes.onnxruntime_engine import ONNXRuntime as runtime
    return runtime(files, options)
