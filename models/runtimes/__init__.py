"""Extractor runtimes: the exported program run by one inference runtime, images -> patch embeddings.

Every runtime is an ExtractorRuntime (one base class, one call); `open_runtime` picks and builds one
from the export's files and the options. Everything after the embeddings (memory-bank scoring,
decisions) is the same whatever the runtime. One module per runtime: paddle_inference, openvino_runtime,
onnx_runtime; each imports its runtime only when opened.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

from models.runtimes.base import ExtractorRuntime, RuntimeOptions
from utils.errors import UserError

STATS_FILE = "stats.npz"
ONNX_FILE = "model.onnx"
# The runtimes, fastest first on a CPU (bottle MobileNetV2, batch 1: OpenVINO 6.7 ms/img, Paddle
# Inference with oneDNN 12.5, ONNX Runtime 13.7): "auto" takes the first one installed that can
# read the export.
RUNTIMES = ("openvino", "paddle", "onnxruntime")
RUNTIME_CHOICES = ("auto", *RUNTIMES)
_RUNTIME_PACKAGES = {"paddle": "paddle", "openvino": "openvino", "onnxruntime": "onnxruntime"}

__all__ = ["RUNTIME_CHOICES", "RUNTIMES", "ExportFiles", "ExtractorRuntime", "RuntimeOptions", "installed_runtimes",
           "open_runtime", "resolve_runtime"]


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


def installed_runtimes() -> tuple[str, ...]:
    """The runtimes whose Python package is installed (found, not imported: importing costs seconds)."""
    return tuple(e for e in RUNTIMES if importlib.util.find_spec(_RUNTIME_PACKAGES[e]) is not None)


def resolve_runtime(files: ExportFiles, options: RuntimeOptions) -> str:
    """The runtime `options.runtime` names; for "auto", Paddle Inference on a GPU or with
    enable_mkldnn set, else the fastest
    installed runtime that can read the export (OpenVINO reads the .pdmodel or the ONNX file,
    ONNX Runtime only the ONNX file)."""
    if options.runtime not in RUNTIME_CHOICES:
        raise UserError(f"unknown runtime '{options.runtime}': choose one of {', '.join(RUNTIME_CHOICES)}")
    if options.runtime != "auto":
        return options.runtime
    if options.use_gpu or options.enable_mkldnn is not None:
        # A Paddle Inference setting asked for (as TIPC's grid does) means Paddle Inference.
        return "paddle"
    for name in installed_runtimes():
        if name == "openvino" and (files.program.endswith(".pdmodel") or files.onnx):
            return name
        if name == "paddle" or (name == "onnxruntime" and files.onnx):
            return name
    raise UserError(f"no installed inference runtime reads {files.program}: pip install paddlepaddle, or export "
                    f"with --format onnx for OpenVINO / ONNX Runtime")


def open_runtime(files: ExportFiles, options: RuntimeOptions) -> ExtractorRuntime:
    """The runtime `options.runtime` names; "auto": the fastest one installed for the device."""
    name = resolve_runtime(files, options)
    if name != "paddle" and options.use_gpu:
        raise UserError(f"--use_gpu runs on Paddle Inference only: use --runtime paddle or auto, not {name}")
    if importlib.util.find_spec(_RUNTIME_PACKAGES[name]) is None:
        raise UserError(f"--runtime {name}: the package '{_RUNTIME_PACKAGES[name]}' is not installed "
                        f"(pip install {_RUNTIME_PACKAGES[name]})")
    if name == "paddle":
        from models.runtimes.paddle_inference import PaddleInferenceRuntime as runtime_class
    elif name == "openvino":
        from models.runtimes.openvino_runtime import OpenVINORuntime as runtime_class
    else:
        from models.runtimes.onnx_runtime import ONNXRuntime as runtime_class
    return runtime_class(files, options)
