"""Static-graph export of a trained model's extractor (Paddle program, and ONNX on request), plus
its deployment stats file; every written program is verified before anything is moved in."""
from __future__ import annotations

import os
import shutil
import tempfile
from typing import NamedTuple

import paddle

from engine.export_check import RuntimeCheck, verify_export, verify_full_model
from engine.onnx_conversion import convert_to_onnx
from engine.onnx_full import full_model
from engine.pipeline import rebuild_extractor
from models.model_file import AnomalyModel
from models.runtimes import ONNX_FILE, STATS_FILE, ExportFiles
from utils.io import file_sha256, output_lock, remove_stale_temporaries, temp_prefix

# paddle: model.pdmodel (or .json) + model.pdiparams + stats.npz, as always. onnx: model.onnx too
# (the Paddle program is always written: OpenVINO reads it fastest, and Paddle Inference needs it).
# onnx_full: also model_full.onnx, extractor and scoring in one graph (engine.onnx_full).
FORMATS = ("paddle", "onnx", "onnx_full")
FULL_ONNX_FILE = "model_full.onnx"


class ExportResult(NamedTuple):
    written: list[str]
    checks: list[RuntimeCheck]


def export(model_path: str, save_dir: str, pretrained: str | None = None, export_format: str = "paddle",
           check_image: str | None = None) -> ExportResult:
    """Write the export into save_dir, verified in every installed runtime (see engine.export_check)."""
    model = AnomalyModel.load(model_path)
    extractor = rebuild_extractor(model, pretrained)
    height, width = model.config.data.crop_hw
    spec = [paddle.static.InputSpec([None, 3, height, width], "float32", "images")]
    with output_lock(save_dir):
        # Everything is written into a scratch folder first and moved in only once complete and checked.
        remove_stale_temporaries(save_dir)
        scratch = tempfile.mkdtemp(dir=save_dir, prefix=temp_prefix("export"))
        try:
            static = paddle.jit.to_static(extractor, input_spec=spec, full_graph=True)
            paddle.jit.save(static, os.path.join(scratch, "model"))
            files = ExportFiles.in_folder(scratch)
            binding = {"program_sha256": file_sha256(files.program), "params_sha256": file_sha256(files.params)}
            if export_format in ("onnx", "onnx_full"):
                onnx_path = os.path.join(scratch, ONNX_FILE)
                with open(onnx_path, "wb") as f:
                    f.write(convert_to_onnx(files.program, files.params))
                files = ExportFiles.in_folder(scratch)
                binding["onnx_sha256"] = file_sha256(onnx_path)
            checks = verify_export(model, extractor, files, check_image)
            if export_format == "onnx_full":
                # Checked after the extractor graph it is built on.
                full_path = os.path.join(scratch, FULL_ONNX_FILE)
                with open(onnx_path, "rb") as f, open(full_path, "wb") as out:
                    out.write(full_model(f.read(), model))
                binding["onnx_full_sha256"] = file_sha256(full_path)
                checks += verify_full_model(model, extractor, full_path, model.config.data, check_image)
            model.save_stats(os.path.join(scratch, STATS_FILE), binding)
            written = []
            for name in sorted(os.listdir(scratch)):
                target = os.path.join(save_dir, name)
                os.replace(os.path.join(scratch, name), target)
                written.append(target)
            return ExportResult(written, checks)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
