"""The runtime that runs is named as it is, not as it usually is: infer.py's first line, the demo."""
from __future__ import annotations

import re

import pytest

from helpers import ROOT
from models.runtimes.onnx_runtime import ONNXRuntime
from models.runtimes.openvino_runtime import OpenVINORuntime
from models.runtimes.paddle_inference import PaddleInferenceRuntime

RUNTIMES = (PaddleInferenceRuntime, OpenVINORuntime, ONNXRuntime)
TITLES = {runtime.title for runtime in RUNTIMES}


@pytest.mark.parametrize("runtime_class", RUNTIMES, ids=lambda c: c.name)
def test_every_runtime_describes_its_engine_and_file(runtime_class):
    runtime = runtime_class.__new__(runtime_class)   # the description needs no runtime loaded
    runtime.source, runtime.use_gpu, runtime.enable_mkldnn = "/x/export/model.pdmodel", False, True
    assert runtime.title and runtime.description().startswith(f"{runtime.title} on model.pdmodel")
    assert len(TITLES) == len(RUNTIMES)


def test_paddle_inference_says_where_it_runs():
    runtime = PaddleInferenceRuntime.__new__(PaddleInferenceRuntime)
    runtime.source, runtime.use_gpu, runtime.enable_mkldnn = "model.pdmodel", False, False
    assert runtime.description() == "Paddle Inference on model.pdmodel (CPU)"
    runtime.enable_mkldnn = True
    assert runtime.description().endswith("(CPU, oneDNN)")


def infer_steps(script: str) -> list[tuple[str, str]]:
    """(the label echoed before it, the command) of every infer.py call in a shell script."""
    steps, label, lines = [], "", script.replace("\\\n", " ").splitlines()
    for line in lines:
        if line.lstrip().startswith("echo "):
            label = line
        elif "infer.py" in line and not line.lstrip().startswith("#"):
            steps.append((label, line))
    return steps


def test_the_demo_names_no_engine_it_does_not_choose():
    # The demo runs infer.py with --runtime auto: which runtime runs depends on what is installed
    # (OpenVINO on most CPUs), so its label names none; infer.py's own first line does, and stays.
    steps = infer_steps((ROOT / "tools" / "demo.sh").read_text())
    assert steps
    for label, command in steps:
        chosen = re.search(r"--runtime\s+(\w+)", command)
        if not chosen or chosen.group(1) == "auto":
            assert not [title for title in TITLES if title in label], label
        assert "tail" not in command and "head" not in command, command   # keeps infer.py's runtime line


def test_the_label_check_sees_a_wrong_label():
    wrong = 'echo "== 4/5 Paddle Inference on the test images"\npython infer.py --model_file m \\\n    --stats s\n'
    (label, _), = infer_steps(wrong)
    assert "Paddle Inference" in label
