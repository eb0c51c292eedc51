"""export_model.py -> infer.py (Paddle Inference) against predict.py (dynamic graph)."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import FAST_TRAIN_ARGS, ROOT, run_script
from datasets.synthetic import write_corrupt_image
from tools.compare_outputs import load_outputs, metrics_of, relative_differences


@pytest.fixture(scope="module")
def exported(synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("deploy")
    for category, seed in (("part", "0"), ("fabric", "1")):
        done = run_script("train.py", "--data_path", str(synthetic_root), "--category", category, "--eval",
                          "--eval_PRO", "--save_path", str(out / category), *FAST_TRAIN_ARGS[:-1], "--seed", seed,
                          "--no_progress")
        assert done.returncode == 0, done.stderr
        done = run_script("export_model.py", "--model_path", str(out / category / f"{category}.pdparams"),
                          "--save_dir", str(out / f"{category}_infer"))
        assert done.returncode == 0, done.stderr
    return out


def infer_args(folder, **extra):
    args = ["infer.py", "--model_file", str(folder / "model.pdmodel"), "--params_file", str(folder / "model.pdiparams"),
            "--stats", str(folder / "stats.npz")]
    for key, value in extra.items():
        args += [f"--{key}", str(value)]
    return args


def test_export_writes_pdmodel_and_stats(exported):
    names = sorted(p.name for p in (exported / "part_infer").iterdir())
    assert {"model.pdmodel", "model.pdiparams", "stats.npz"} <= set(names)
    assert not any(n.startswith(".") for n in names)


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
    import csv
    with open(train_table) as f:
        row = next(r for r in csv.DictReader(f) if r["category"] == category)
    metrics = metrics_of(outputs["True"], str(data_root), category, with_pro=True)
    for name in ("Image_AUROC", "Pixel_AUROC", "PRO_score"):
        assert f"{metrics[name]:.4f}" == row[name]
    results = json.loads((out / "infer_True" / "results.json").read_text())
    assert len(results) == len(dynamic["images"])
    assert all(0.0 <= r["normalized_score"] <= 1.0 for r in results)
    assert len(list((out / "predict").glob("*.png"))) == len(results)


def test_infer_agrees_with_predict_and_eval(exported, synthetic_root):
    check_infer_matches_predict(exported / "part_infer", exported / "part" / "part.pdparams",
                                exported / "part" / "train_results.csv", synthetic_root, "part", exported)


# Modules only training needs; infer.py must load none of them, whatever the method.
TRAINING_MODULES = {"models.patchcore", "models.feature_extractor", "models.backbones", "models.sampling",
                    "models.padim_fit", "models.calibration", "datasets.mvtec", "utils.engine", "utils.metrics",
                    "utils.export"}


def modules_infer_loads(export_dir, image, save_path):
    """The project modules infer.py has imported after scoring `image` with `export_dir`."""
    code = (
        "import runpy, sys\n"
        f"sys.argv = {infer_args(export_dir, input_file=image, save_path=save_path)!r}\n"
        "try:\n    runpy.run_path('infer.py', run_name='__main__')\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in ('models', 'datasets', 'utils', 'tools'))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return set(done.stdout.strip().splitlines()[-1].split())


def test_infer_imports_no_training_code(exported, synthetic_root):
    image = next((synthetic_root / "part" / "test" / "good").iterdir())
    loaded = modules_infer_loads(exported / "part_infer", image, exported / "lean")
    assert "models.scorer" in loaded and not loaded & TRAINING_MODULES


def _one_line_error(done, fragment):
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], done.stderr


def test_infer_bad_input(exported, synthetic_root, tmp_path):
    part, fabric = exported / "part_infer", exported / "fabric_infer"
    image = next((synthetic_root / "part" / "test" / "good").iterdir())
    swapped = infer_args(part, input_file=image, save_path=tmp_path / "x")
    swapped[swapped.index("--stats") + 1] = str(fabric / "stats.npz")
    _one_line_error(run_script(*swapped), "was not exported with")
    _one_line_error(run_script(*infer_args(part, input_file=tmp_path / "nothing", save_path=tmp_path / "x")),
                    "input not found")
    (tmp_path / "empty").mkdir()
    _one_line_error(run_script(*infer_args(part, input_file=tmp_path / "empty", save_path=tmp_path / "x")),
                    "no images")
    bad = write_corrupt_image(tmp_path / "bad.png")
    _one_line_error(run_script(*infer_args(part, input_file=bad, save_path=tmp_path / "x")), "cannot decode image")
    missing = infer_args(part, input_file=image, save_path=tmp_path / "x")
    missing[missing.index("--stats") + 1] = str(tmp_path / "none.npz")
    _one_line_error(run_script(*missing), "stats file not found")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    missing[missing.index("--stats") + 1] = str(tmp_path / "junk.npz")
    _one_line_error(run_script(*missing), "cannot read stats file")
    assert not (tmp_path / "x").exists()
    _one_line_error(run_script("predict.py", str(image), "--model_path", str(tmp_path / "none.pdparams")),
                    "model file not found")
