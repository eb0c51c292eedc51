"""The export check refuses a planted wrong conversion in every installed runtime and leaves nothing
behind (a whole export through all runtimes in a child process: end-to-end, not a unit)."""
import importlib.util
import re

import numpy as np
import pytest

from models.feature_extractor import build_extractor
from models.model_file import AnomalyModel
from models.runtimes import installed_runtimes
from utils.config import Config, DataConfig, ModelConfig


@pytest.fixture
def model_file(tmp_path):
    config = Config(model=ModelConfig(arch="mobilenet_v2", pretrained="none", aggregation="unfold",
                                      pretrain_embed_dim=40, target_embed_dim=24),
                    data=DataConfig(resize=64, crop_size=64))
    extractor = build_extractor(config.model)
    model = AnomalyModel(config, "part", {"memory_bank": np.ones((16, 24), np.float32)}, extractor.fingerprint(), (8, 8))
    model.save(tmp_path / "part.pdparams")
    return tmp_path / "part.pdparams"


# Run in a child process: the classic program (paddle's PIR flag is read at import) and a planted
# converter: the right graph with its output scaled by 1.001, a drift no shape check would see.
PLANTED_EXPORT = """
import os, sys
os.environ["FLAGS_enable_pir_api"] = "0"
import numpy as np, onnx
from onnx import helper, numpy_helper
import engine.export as export_module
from utils.errors import UserError

right = export_module.convert_to_onnx

def slightly_wrong(program, params):
    graph = onnx.load_from_string(right(program, params))
    output = graph.graph.output[0]
    scaled = output.name + "_planted"
    graph.graph.initializer.append(numpy_helper.from_array(np.array(1.001, np.float32), "planted_scale"))
    for node in graph.graph.node:
        node.output[:] = [scaled if name == output.name else name for name in node.output]
    graph.graph.node.append(helper.make_node("Mul", [scaled, "planted_scale"], [output.name]))
    return graph.SerializeToString()

model, right_dir, planted_dir = sys.argv[1:]
result = export_module.export(model, right_dir, export_format="onnx")
print("RIGHT", *sorted(c.runtime + "=" + format(c.max_rel_diff, ".2e") for c in result.checks))
export_module.convert_to_onnx = slightly_wrong
try:
    export_module.export(model, planted_dir, export_format="onnx")
except UserError as err:
    print("REFUSED", err)
"""


def test_export_refuses_a_planted_wrong_conversion_and_leaves_nothing(model_file, tmp_path):
    if importlib.util.find_spec("onnxruntime") is None and importlib.util.find_spec("openvino") is None:
        pytest.skip("no ONNX runtime installed")
    from helpers import run_script

    done = run_script("-c", PLANTED_EXPORT, str(model_file), str(tmp_path / "right"), str(tmp_path / "planted"))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    right = next(line for line in lines if line.startswith("RIGHT")).split()[1:]
    # unfold with non-dividing lengths, converted right in every runtime, .pdmodel and ONNX file alike.
    assert sorted({check.split("=")[0] for check in right}) == sorted(installed_runtimes())
    assert len(right) == len(installed_runtimes()) + ("openvino" in installed_runtimes())
    assert all(float(check.split("=")[1]) <= 1e-5 for check in right)
    refused = next(line for line in lines if line.startswith("REFUSED"))
    assert re.search(r"export refused: \w+ running model.onnx differs .* by 1.0\de-03", refused), refused
    assert sorted(p.name for p in (tmp_path / "right").iterdir()) == [
        "model.onnx", "model.pdiparams", "model.pdiparams.info", "model.pdmodel", "stats.npz"]
    assert list((tmp_path / "planted").iterdir()) == []
