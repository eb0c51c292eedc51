"""Runtime choice and the runtimes' errors (the export check against a planted wrong conversion: tests/e2e)."""
import importlib.util

import numpy as np
import pytest

from engine.export_check import relative_difference
from models.runtimes import ExportFiles, RuntimeOptions, installed_runtimes, open_runtime, resolve_runtime
from utils.errors import UserError


def _files(tmp_path, program="model.pdmodel", onnx=None):
    return ExportFiles(str(tmp_path / program), str(tmp_path / "model.pdiparams"), str(tmp_path / "stats.npz"),
                       None if onnx is None else str(tmp_path / onnx))


def test_auto_picks_paddle_on_gpu_or_when_a_paddle_setting_is_given(tmp_path):
    files = _files(tmp_path, onnx="model.onnx")
    assert resolve_runtime(files, RuntimeOptions(use_gpu=True)) == "paddle"
    assert resolve_runtime(files, RuntimeOptions(enable_mkldnn=False)) == "paddle"
    assert resolve_runtime(files, RuntimeOptions(runtime="onnxruntime", enable_mkldnn=True)) == "onnxruntime"
    first = installed_runtimes()[0]
    assert resolve_runtime(files, RuntimeOptions()) == first


def test_auto_passes_over_runtimes_that_cannot_read_the_export(tmp_path, monkeypatch):
    import models.runtimes as runtimes

    monkeypatch.setattr(runtimes, "installed_runtimes", lambda: ("openvino", "onnxruntime"))
    with pytest.raises(UserError, match="no installed inference runtime reads"):
        resolve_runtime(_files(tmp_path, "model.json"), RuntimeOptions())
    assert resolve_runtime(_files(tmp_path, "model.json", "model.onnx"), RuntimeOptions()) == "openvino"


@pytest.mark.parametrize("options, fragment", [
    (RuntimeOptions(runtime="tensorrt"), "unknown runtime 'tensorrt'"),
    (RuntimeOptions(runtime="onnxruntime"), "needs the model.onnx"),
    (RuntimeOptions(runtime="openvino", use_gpu=True), "--use_gpu runs on Paddle Inference only"),
    (RuntimeOptions(runtime="openvino", precision="fp16"), "--precision fp16 is not supported"),
])
def test_bad_choices_are_one_line_errors(tmp_path, options, fragment):
    if options.runtime in ("onnxruntime", "openvino") and importlib.util.find_spec(options.runtime) is None:
        pytest.skip(f"{options.runtime} is not installed")
    with pytest.raises(UserError, match=fragment.replace("(", r"\(")):
        open_runtime(_files(tmp_path, "model.json"), options)


@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
def test_a_file_the_runtime_cannot_read_is_one_line(tmp_path, runtime):
    if importlib.util.find_spec(runtime) is None:
        pytest.skip(f"{runtime} is not installed")
    (tmp_path / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(UserError, match="cannot run") as err:
        open_runtime(_files(tmp_path, "model.json", "model.onnx"), RuntimeOptions(runtime=runtime))
    assert "\n" not in str(err.value)


def test_relative_difference_refuses_other_shapes_and_non_finite_outputs():
    ref = np.ones((2, 3), np.float32)
    assert relative_difference(ref, ref + np.float32(0.5) * np.eye(2, 3, dtype=np.float32)) == 0.5
    assert relative_difference(ref, np.ones((2, 4), np.float32)) == float("inf")
    assert relative_difference(ref, np.full((2, 3), np.nan, np.float32)) == float("inf")


@pytest.mark.parametrize("flag", ["--runtime", "--backend"])
def test_runtime_option_keeps_its_old_name(flag, monkeypatch):
    # --backend was the option's name before the glossary: command lines written for it still run.
    import argparse

    from deploy.cli import add_predictor_args

    parser = argparse.ArgumentParser()
    add_predictor_args(parser)
    args = parser.parse_args(["--model_file", "m.pdmodel", "--params_file", "m.pdiparams", "--stats", "s.npz",
                              flag, "openvino"])
    assert args.runtime == "openvino"
