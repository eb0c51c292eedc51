"""The exported model as deploy loads it: its stats file tied to the program and parameters beside it,
and the array library its scorer runs on."""
from __future__ import annotations

import os

from models.model_file import AnomalyModel, arrays_sha256
from models.runtimes.base import RuntimeOptions
from models.scoring import ScoringOptions
from utils.errors import UserError
from utils.io import file_sha256
from utils.runtime import select_device


def scoring_options(options: RuntimeOptions, runtime_name: str, shared_cores: bool = False) -> ScoringOptions:
    """How a deploy process (infer.py, the Inferencer, serve.py) scores, from its runtime's options
    and the runtime that runs the network (models.runtimes.resolve_runtime: "auto" resolved).

    On a GPU the memory-bank search runs there too (Paddle kNN), not in NumPy on the host. On the
    CPU the network runs in a static-graph runtime and not at the same time as the scorer, so with
    OpenVINO and ONNX Runtime the bank's tile products are shared by as many threads as the
    network's (at most the machine's cores). Two exceptions score on one thread:
    - Paddle Inference: its OpenMP threads stay awake between layers (KMP_BLOCKTIME) and the
      thread decoding the next image needs the other core; with two scoring threads the scoring
      was no faster and the reader fell behind (bottle 448, 83 images, alternated: 42.3-50.2 ms per
      image with one thread against 45.4-52.6 with two; docs/results.md, High resolution);
    - shared_cores: the process does other work while it scores (the service decodes the next
      uploads and takes concurrent requests), which already keeps the cores busy (serve.py at 4
      clients, 448 px: 0.77-0.87x the throughput with two).
    Processes that run Paddle's dynamic graph keep ScoringOptions' one thread too.
    """
    array_lib = select_device("gpu" if options.use_gpu else "cpu")
    if array_lib != "numpy" or shared_cores or runtime_name == "paddle":
        return ScoringOptions(array_lib)
    return ScoringOptions(array_lib, product_threads=max(1, min(options.cpu_threads, os.cpu_count() or 1)))


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
