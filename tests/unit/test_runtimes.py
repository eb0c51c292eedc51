"""Runtime choice, the export check refusing a planted wrong conversion, and the engines' errors."""
import importlib.util
import re

import numpy as np
import pytest

from deploy.runtimes import ExportFiles, RuntimeOptions, installed_engines, open_runtime, resolve_backend
from engine.export_check import relative_difference
from models.feature_extractor import build_extractor
from models.model_file import AnomalyModel
from utils.config import Config, DataConfig, ModelConfig
from utils.errors import UserError


def _files(tmp_path, program="model.pdmodel", onnx=None):
    return ExportFiles(str(tmp_path / program), str(tmp_path / "model.pdiparams"), str(tmp_path / "stats.npz"),
                       None if onnx is None else str(tmp_path / onnx))


def test_auto_picks_paddle_on_gpu_or_when_a_paddle_setting_is_given(tmp_path):
    files = _files(tmp_path, onnx="model.onnx")
    assert resolve_backend(files, RuntimeOptions(use_gpu=True)) == "paddle"
    assert resolve_backend(files, RuntimeOptions(enable_mkldnn=False)) == "paddle"
    assert resolve_backend(files, RuntimeOptions(backend="onnxruntime", enable_mkldnn=True)) == "onnxruntime"
    first = installed_engines()[0]
    assert resolve_backend(files, RuntimeOptions()) == first


def test_auto_passes_over_engines_that_cannot_read_the_export(tmp_path, monkeypatch):
    import deploy.runtimes as runtimes

    monkeypatch.setattr(runtimes, "installed_engines", lambda: ("openvino", "onnxruntime"))
    with pytest.raises(UserError, match="no installed inference engine reads"):
        resolve_backend(_files(tmp_path, "model.json"), RuntimeOptions())
    assert resolve_backend(_files(tmp_path, "model.json", "model.onnx"), RuntimeOptions()) == "openvino"


@pytest.mark.parametrize("options, fragment", [
    (RuntimeOptions(backend="tensorrt"), "unknown backend 'tensorrt'"),
    (RuntimeOptions(backend="onnxruntime"), "needs the model.onnx"),
    (RuntimeOptions(backend="openvino", use_gpu=True), "--use_gpu runs on Paddle Inference only"),
    (RuntimeOptions(backend="openvino", precision="fp16"), "--precision fp16 is not supported"),
])
def test_bad_choices_are_one_line_errors(tmp_path, options, fragment):
    if options.backend in ("onnxruntime", "openvino") and importlib.util.find_spec(options.backend) is None:
        pytest.skip(f"{options.backend} is not installed")
    with pytest.raises(UserError, match=fragment.replace("(", r"\(")):
        open_runtime(_files(tmp_path, "model.json"), options)


@pytest.mark.parametrize("engine", ["openvino", "onnxruntime"])
def test_a_file_the_engine_cannot_read_is_one_line(tmp_path, engine):
    if importlib.util.find_spec(engine) is None:
        pytest.skip(f"{engine} is not installed")
    (tmp_path / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(UserError, match="cannot run") as err:
        open_runtime(_files(tmp_path, "model.json", "model.onnx"), RuntimeOptions(backend=engine))
    assert "\n" not in str(err.value)


def test_relative_difference_refuses_other_shapes_and_non_finite_outputs():
    ref = np.ones((2, 3), np.float32)
    assert relative_difference(ref, ref + np.float32(0.5) * np.eye(2, 3, dtype=np.float32)) == 0.5
    assert relative_difference(ref, np.ones((2, 4), np.float32)) == float("inf")
    assert relative_difference(ref, np.full((2, 3), np.nan, np.float32)) == float("inf")


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
print("RIGHT", *sorted(c.engine + "=" + format(c.max_rel_diff, ".2e") for c in result.checks))
export_module.convert_to_onnx = slightly_wrong
try:
    export_module.export(model, planted_dir, export_format="onnx")
except UserError as err:
    print("REFUSED", err)
"""


def test_export_refuses_a_planted_wrong_conversion_and_leaves_nothing(model_file, tmp_path):
    if importlib.util.find_spec("onnxruntime") is None and importlib.util.find_spec("openvino") is None:
        pytest.skip("no ONNX engine installed")
    from helpers import run_script

    done = run_script("-c", PLANTED_EXPORT, str(model_file), str(tmp_path / "right"), str(tmp_path / "planted"))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    right = next(line for line in lines if line.startswith("RIGHT")).split()[1:]
    # unfold with non-dividing lengths, converted right in every engine, .pdmodel and ONNX file alike.
    assert sorted({check.split("=")[0] for check in right}) == sorted(installed_engines())
    assert len(right) == len(installed_engines()) + ("openvino" in installed_engines())
    assert all(float(check.split("=")[1]) <= 1e-5 for check in right)
    refused = next(line for line in lines if line.startswith("REFUSED"))
    assert re.search(r"export refused: \w+ running model.onnx differs .* by 1.0\de-03", refused), refused
    assert sorted(p.name for p in (tmp_path / "right").iterdir()) == [
        "model.onnx", "model.pdiparams", "model.pdiparams.info", "model.pdmodel", "stats.npz"]
    assert list((tmp_path / "planted").iterdir()) == []
