"""Static-graph export of a trained model's extractor, plus its deployment stats file."""
from __future__ import annotations

import os
import shutil
import tempfile

import paddle

from engine.pipeline import rebuild_extractor
from models.model_file import AnomalyModel
from utils.io import file_sha256, output_lock, remove_stale_temporaries, temp_prefix

STATS_FILE = "stats.npz"


def export(model_path: str, save_dir: str, pretrained: str | None = None) -> list[str]:
    """Write model.pdmodel (or model.json) + model.pdiparams + stats.npz into save_dir."""
    model = AnomalyModel.load(model_path)
    extractor = rebuild_extractor(model, pretrained)
    height, width = model.config.data.crop_hw
    spec = [paddle.static.InputSpec([None, 3, height, width], "float32", "images")]
    with output_lock(save_dir):
        # Everything is written into a scratch folder first and moved in only once complete.
        remove_stale_temporaries(save_dir)
        scratch = tempfile.mkdtemp(dir=save_dir, prefix=temp_prefix("export"))
        try:
            static = paddle.jit.to_static(extractor, input_spec=spec, full_graph=True)
            paddle.jit.save(static, os.path.join(scratch, "model"))
            params = os.path.join(scratch, "model.pdiparams")
            program = next(os.path.join(scratch, f"model{ext}") for ext in (".pdmodel", ".json")
                           if os.path.isfile(os.path.join(scratch, f"model{ext}")))
            model.save_stats(os.path.join(scratch, STATS_FILE),
                             {"program_sha256": file_sha256(program), "params_sha256": file_sha256(params)})
            written = []
            for name in sorted(os.listdir(scratch)):
                target = os.path.join(save_dir, name)
                os.replace(os.path.join(scratch, name), target)
                written.append(target)
            return written
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
