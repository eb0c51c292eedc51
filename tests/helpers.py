"""Helpers shared by the test modules (tests never import one another)."""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

from tools.compare_outputs import load_outputs, metrics_of, relative_differences

ROOT = Path(__file__).resolve().parents[1]
PROJECT_PACKAGES = ("utils", "datasets", "models", "engine", "deploy", "tools")

# Small and fast: random-init ResNet18 on 64x64 images.
FAST_TRAIN_ARGS = ("--arch", "resnet18", "--pretrained", "none", "--resize", "64", "--crop_size", "64",
                   "--k", "25", "--no_progress")


def arch_cases(archs) -> list:
    """Parametrize values for `archs`; Wide-ResNet50 (70M parameters, seconds to build) is marked slow."""
    import pytest

    return [pytest.param(arch, marks=pytest.mark.slow) if arch == "wide_resnet50_2" else arch for arch in archs]


def shared_dir() -> Path:
    """../shared beside the repo (read-only data and weights); PATCHCORE_SHARED overrides it."""
    return Path(os.environ.get("PATCHCORE_SHARED", ROOT.parent / "shared"))


def run_script(*args: str, cwd: Path = ROOT, show_warnings: bool = False,
               timeout: float = 600) -> "subprocess.CompletedProcess[str]":
    """Run an entry script the way a user does; returns the completed process (raises only on timeout).
    Python's warnings are off unless `show_warnings` (a user's shell has them on)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    env.update({} if show_warnings else {"PYTHONWARNINGS": "ignore"})
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=timeout)


def run_in_process(script: str, *args: str) -> "subprocess.CompletedProcess[str]":
    """Run an entry script (relative to the project root) in this interpreter, as `python script args`
    would: its exit code, stdout and stderr. For argument handling and one-line errors, where a child
    process (which imports Paddle again, seconds each) proves nothing more."""
    argv, sys.argv = sys.argv, [script, *args]
    out, err = io.StringIO(), io.StringIO()
    code: int = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            runpy.run_path(str(ROOT / script), run_name="__main__")
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else int(exit.code is not None)
    finally:
        sys.argv = argv
    return subprocess.CompletedProcess([script, *args], code, out.getvalue(), err.getvalue())


def train_and_export(data_root: Path, out: Path, category: str = "part") -> Path:
    """A fast model of `category` in out/models and its export in out/export; returns `out`."""
    done = run_script("train.py", "--data_path", str(data_root), "--category", category, "--save_path",
                      str(out / "models"), *FAST_TRAIN_ARGS)
    assert done.returncode == 0, done.stderr
    done = run_script("export_model.py", "--model_path", str(out / "models" / f"{category}.pdparams"), "--save_dir",
                      str(out / "export"))
    assert done.returncode == 0, done.stderr
    return out


def infer_args(folder, **extra):
    args = ["infer.py", "--model_file", str(folder / "model.pdmodel"), "--params_file", str(folder / "model.pdiparams"),
            "--stats", str(folder / "stats.npz")]
    for key, value in extra.items():
        args += [f"--{key}", str(value)]
    return args


def check_infer_matches_predict(export_dir, model_file, train_table, data_root, category, out):
    """infer.py (oneDNN off and on) agrees with predict.py to 1e-4 and reproduces train.py's metrics."""
    test_dir = data_root / category / "test"
    outputs = {}
    for mkldnn in ("False", "True"):
        done = run_script(*infer_args(export_dir, input_file=test_dir, enable_mkldnn=mkldnn, batch_size=3,
                                      save_path=out / f"infer_{mkldnn}"), "--save_maps")
        assert done.returncode == 0, done.stderr
        outputs[mkldnn] = load_outputs(str(out / f"infer_{mkldnn}" / "anomaly_maps.npz"))
    done = run_script("predict.py", str(test_dir), "--model_path", str(model_file), "--save_path",
                      str(out / "predict"), "--save_maps")
    assert done.returncode == 0, done.stderr
    assert "anomalous" in done.stdout
    dynamic = load_outputs(str(out / "predict" / "anomaly_maps.npz"))
    for static in outputs.values():
        diffs = relative_differences(dynamic, static)
        assert diffs["image_score_max_rel_diff"] < 1e-4 and diffs["anomaly_map_max_rel_diff"] < 1e-4
    # Metrics from infer.py's outputs are those train.py --eval reported.
    with open(train_table) as f:
        row = next(r for r in csv.DictReader(f) if r["category"] == category)
    metrics = metrics_of(outputs["True"], str(data_root), category, with_pro=True)
    for name in ("Image_AUROC", "Pixel_AUROC", "PRO_score"):
        assert f"{metrics[name]:.4f}" == row[name]
    results = json.loads((out / "infer_True" / "results.json").read_text())
    assert len(results) == len(dynamic["images"])
    assert all(0.0 <= r["normalized_score"] <= 1.0 for r in results)
    assert len(list((out / "predict").glob("*.png"))) == len(results)


# Modules only training needs; infer.py must load none of them, whatever the method (all of engine/
# is training-side too). The static import rules are checked in tests/unit/test_layers.py.
TRAINING_MODULES = {"models.patchcore.fit", "models.patchcore.sampling",
                    "models.patchcore.coreset", "models.padim.fit", "models.calibration",
                    "models.feature_extractor", "models.backbones", "datasets.mvtec", "datasets.synthetic",
                    "utils.metrics", "models.memory_estimate"}


def training_modules_in(loaded: set[str]) -> set[str]:
    """The training-side modules among `loaded`."""
    return {m for m in loaded if m in TRAINING_MODULES or m.split(".")[0] == "engine"}


def check_infer_loads_no_training_code(export_dir, image, save_path, scorer_module):
    """infer.py scores `image` with the method's scorer and the predictor, and loads no training module."""
    code = (
        "import runpy, sys\n"
        f"PROJECT_PACKAGES = {PROJECT_PACKAGES!r}\n"
        f"sys.argv = {infer_args(export_dir, input_file=image, save_path=save_path)!r}\n"
        "try:\n    runpy.run_path('infer.py', run_name='__main__')\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in PROJECT_PACKAGES)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    loaded = set(done.stdout.strip().splitlines()[-1].split())
    assert scorer_module in loaded and "deploy.exported_model" in loaded
    assert not training_modules_in(loaded)


def check_deployment(export_dir, model_file, train_table, data_root, category, out, scorer_module):
    """Both deployment checks for one exported model: infer == predict == eval, and a lean infer.py."""
    check_infer_matches_predict(export_dir, model_file, train_table, data_root, category, out)
    image = next((data_root / category / "test" / "good").iterdir())
    check_infer_loads_no_training_code(export_dir, image, out / "lean", scorer_module)
