"""Every inference runtime against predict.py, avgpool, unfold and PaDiM: export --format onnx_full
verifies itself, infer.py --runtime X scores as the dynamic graph does (1e-5 scores, 1e-4 maps), and
model_full.onnx scores with ONNX Runtime and NumPy alone (the docs example)."""
import csv
import importlib.util
import re
import sys

import pytest

from helpers import FAST_TRAIN_ARGS, infer_args, run_script
from tools.compare_outputs import load_outputs, relative_differences

AGGREGATIONS = {"avgpool": (), "unfold": ("--aggregation", "unfold", "--pretrain_embed_dim", "40",
                                          "--target_embed_dim", "24"), "padim": ("--method", "padim", "--k", "40")}
RUNTIME_PACKAGES = {"paddle": "paddle", "openvino": "openvino", "onnxruntime": "onnxruntime"}


@pytest.fixture(scope="module", params=sorted(AGGREGATIONS))
def exported(request, synthetic_root, tmp_path_factory):
    """(export folder, predict.py's outputs on the test images, test folder) of one aggregation."""
    out = tmp_path_factory.mktemp(request.param)
    # MobileNetV2: its layer2/layer3 lengths (32*9, 64*9) do not divide the unfold lengths.
    args = [a for a in FAST_TRAIN_ARGS if a != "resnet18"]
    args[args.index("--arch") + 1:args.index("--arch") + 1] = ["mobilenet_v2"]
    done = run_script("train.py", "--data_path", str(synthetic_root), "--category", "part", "--save_path",
                      str(out), *args, *AGGREGATIONS[request.param])
    assert done.returncode == 0, done.stderr
    test_dir = synthetic_root / "part" / "test"
    done = run_script("export_model.py", "--model_path", str(out / "part.pdparams"), "--save_dir", str(out / "infer"),
                      "--format", "onnx_full", "--check_image", str(test_dir))
    assert done.returncode == 0, done.stderr
    # The check table names every installed runtime and file, each within the limit, each with the
    # verdicts of the 2 seeded inputs and the 7 test images equal to the dynamic graph's.
    checks = [line.split() for line in done.stdout.splitlines()[1:] if not line.startswith("wrote ")]
    installed = {e for e, p in RUNTIME_PACKAGES.items() if importlib.util.find_spec(p)}
    assert {c[0] for c in checks} == installed and all(float(c[1]) <= 1e-4 for c in checks)
    assert all(int(c[2]) == 2 + 7 for c in checks)
    assert sum(c[-1] == "model_full.onnx" for c in checks) == len(installed & {"openvino", "onnxruntime"})
    done = run_script("predict.py", str(test_dir), "--model_path", str(out / "part.pdparams"), "--save_path",
                      str(out / "predict"), "--save_maps", "--no_pictures")
    assert done.returncode == 0, done.stderr
    return out / "infer", load_outputs(str(out / "predict" / "anomaly_maps.npz")), test_dir


# One infer.py run per runtime and model (each costs seconds): batch 3 over 7 images checks batching
# and a short last batch; auto is what a user gets without flags.
@pytest.mark.parametrize("runtime, batch_size", [("auto", 1), ("paddle", 3), ("openvino", 3), ("onnxruntime", 3)])
def test_every_backend_scores_as_predict(exported, runtime, batch_size, tmp_path):
    if runtime in RUNTIME_PACKAGES and importlib.util.find_spec(RUNTIME_PACKAGES[runtime]) is None:
        pytest.skip(f"{runtime} is not installed")
    folder, dynamic, test_dir = exported
    done = run_script(*infer_args(folder, input_file=test_dir, runtime=runtime, batch_size=batch_size,
                                  save_path=tmp_path / "out", cpu_threads=1, enable_benchmark=True),
                      "--save_maps", "--no_pictures")
    assert done.returncode == 0, done.stderr
    want = {"auto": "openvino" if importlib.util.find_spec("openvino") else "paddle"}.get(runtime, runtime)
    assert f"runtime: {want}\n" in done.stdout
    # The first line names the runtime that ran, whatever --runtime asked for.
    titles = {"paddle": "Paddle Inference", "openvino": "OpenVINO", "onnxruntime": "ONNX Runtime"}
    first = done.stdout.splitlines()[0]
    assert first.startswith(f"runtime: {titles[want]} on ") and first.endswith(f"(--runtime {runtime})"), first
    diffs = relative_differences(dynamic, load_outputs(str(tmp_path / "out" / "anomaly_maps.npz")))
    assert diffs["image_score_max_rel_diff"] <= 1e-5 and diffs["anomaly_map_max_rel_diff"] <= 1e-4, diffs
    # the same verdict for every image as predict.py
    assert _verdicts(tmp_path / "out") == _verdicts(folder.parent / "predict")


def _verdicts(folder):
    with open(folder / "results.csv") as f:
        return {row["image"]: row["decision"] for row in csv.DictReader(f)}


def test_onnx_file_is_bound_to_its_stats(exported, tmp_path):
    import shutil

    folder, _, test_dir = exported
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    (copy / "model.onnx").write_bytes((copy / "model.onnx").read_bytes() + b"\0")
    done = run_script(*infer_args(copy, input_file=test_dir, runtime="onnxruntime", save_path=tmp_path / "x"))
    assert done.returncode != 0
    assert done.stderr.strip().count("\n") == 0 and "was not exported with" in done.stderr, done.stderr


def test_full_model_scores_with_onnxruntime_and_numpy_alone(exported, tmp_path):
    if importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("onnxruntime is not installed")
    from helpers import ROOT

    folder, dynamic, test_dir = exported
    # The example users copy: the python block of docs/deployment.md's ONNX Runtime section.
    section = (ROOT / "docs" / "deployment.md").read_text().split("## Scoring with ONNX Runtime and NumPy alone", 1)[1]
    example = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    # After the example: which modules it loaded (run outside the repo, so the project is not importable).
    check = ("\nimport sys as _s\nprint('LOADED', sorted({m.split('.')[0] for m in _s.modules} & "
             "{'paddle', 'utils', 'datasets', 'models', 'runtime', 'deploy', 'tools'}))\n")
    image = sorted((test_dir / "scratch").iterdir())[0]
    import subprocess

    done = subprocess.run([sys.executable, "-c", example + check, str(folder / "model_full.onnx"), str(image), "64",
                           "64"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "LOADED []" in done.stdout
    score = float(re.search(r"score (\S+)", done.stdout).group(1))
    expected = float(dynamic["image_scores"][list(dynamic["images"]).index(str(image))])
    assert abs(score - expected) <= 1e-5 * abs(expected) + 1e-7, (score, expected)
    assert re.search(r"(anomalous|normal) defect_area", done.stdout)
