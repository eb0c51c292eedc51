"""train.py / eval.py end to end on generated data, as a user runs them."""
import csv
import shutil

import numpy as np
import paddle
import pytest

from datasets.synthetic import subset_category, write_corrupt_image
from helpers import FAST_TRAIN_ARGS, run_script, shared_dir


def read_rows(path):
    with open(path) as f:
        return {row["category"]: row for row in csv.DictReader(f)}


def test_train_then_eval_reproduces_the_table(synthetic_root, tmp_path):
    out = tmp_path / "out"
    done = run_script("train.py", "--data_path", str(synthetic_root), "--category", "all", "--eval", "--eval_PRO",
                      "--save_path", str(out), *FAST_TRAIN_ARGS)
    assert done.returncode == 0, done.stderr
    assert "Image_AUROC" in done.stdout and "mean" in done.stdout
    trained = read_rows(out / "train_results.csv")
    assert set(trained) == {"fabric", "part", "mean"}
    assert sorted(p.name for p in out.glob("*.pdparams")) == ["fabric.pdparams", "part.pdparams"]
    for row in trained.values():
        assert 0.0 <= float(row["Image_AUROC"]) <= 1.0 and 0.0 <= float(row["PRO_score"]) <= 1.0

    done = run_script("eval.py", "--data_path", str(synthetic_root), "--category", "all", "--eval_PRO",
                      "--save_path", str(out), "--save_pic", "--no_progress")
    assert done.returncode == 0, done.stderr
    evaluated = read_rows(out / "eval_results.csv")
    for category in ("fabric", "part", "mean"):
        for metric in ("Image_AUROC", "Pixel_AUROC", "PRO_score"):
            assert evaluated[category][metric] == trained[category][metric]
    # One figure per test image: 3 good + 2 defects x 2 images.
    assert len(list((out / "pics" / "part").glob("*.png"))) == 7


def test_same_seed_same_model_and_numbers(synthetic_root, tmp_path):
    runs = []
    for name in ("a", "b"):
        done = run_script("train.py", "--data_path", str(synthetic_root), "--category", "part", "--eval",
                          "--save_path", str(tmp_path / name), *FAST_TRAIN_ARGS)
        assert done.returncode == 0, done.stderr
        runs.append(paddle.load(str(tmp_path / name / "part.pdparams"), return_numpy=True))
        runs[-1]["table"] = (tmp_path / name / "part_test_scores.csv").read_text()
    np.testing.assert_array_equal(runs[0]["arrays"]["memory_bank"], runs[1]["arrays"]["memory_bank"])
    assert runs[0]["table"] == runs[1]["table"]


def _fails_with_one_line(done, *fragments):
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_bad_input_is_one_line_and_writes_nothing(synthetic_root, tmp_path):
    out = tmp_path / "out"
    _fails_with_one_line(run_script("train.py", "--data_path", str(tmp_path / "missing"), "--save_path", str(out),
                                    *FAST_TRAIN_ARGS), "data path not found")
    _fails_with_one_line(run_script("train.py", "--data_path", str(synthetic_root), "--category", "bottle",
                                    "--save_path", str(out), *FAST_TRAIN_ARGS), "unknown category 'bottle'")
    broken = tmp_path / "broken"
    shutil.copytree(synthetic_root / "part", broken / "part")
    shutil.rmtree(broken / "part" / "train")
    _fails_with_one_line(run_script("train.py", "--data_path", str(broken), "--category", "part",
                                    "--save_path", str(out), *FAST_TRAIN_ARGS), "no training images")
    corrupt = tmp_path / "corrupt"
    shutil.copytree(synthetic_root / "part", corrupt / "part")
    write_corrupt_image(corrupt / "part" / "train" / "good" / "003.png")
    _fails_with_one_line(run_script("train.py", "--data_path", str(corrupt), "--category", "part",
                                    "--save_path", str(out), *FAST_TRAIN_ARGS), "cannot decode image", "003.png")
    assert not out.exists() or not any(out.iterdir())


def test_eval_refuses_a_model_of_another_arch_or_missing(synthetic_root, tmp_path):
    out = tmp_path / "out"
    assert run_script("train.py", "--data_path", str(synthetic_root), "--category", "part", "--save_path", str(out),
                      *FAST_TRAIN_ARGS).returncode == 0
    _fails_with_one_line(run_script("eval.py", "--data_path", str(synthetic_root), "--category", "part",
                                    "--save_path", str(out), "--arch", "mobilenet_v2"),
                         "trained with --arch resnet18, not mobilenet_v2")
    _fails_with_one_line(run_script("eval.py", "--data_path", str(synthetic_root), "--category", "fabric",
                                    "--save_path", str(out)), "no trained model")
    (out / "part.pdparams").write_bytes(b"garbage")
    _fails_with_one_line(run_script("eval.py", "--data_path", str(synthetic_root), "--category", "part",
                                    "--save_path", str(out)), "cannot read model file")


def test_real_bottle_subset_with_imagenet_features(converted_mobilenet, tmp_path):
    bottle = shared_dir() / "data" / "mvtec" / "bottle"
    if not bottle.is_dir():
        pytest.skip("MVTec bottle not present (../shared/data/mvtec/bottle)")
    root = tmp_path / "mvtec"
    subset_category(bottle, root, n_train=20, n_test_per_class=4, seed=0)
    done = run_script("train.py", "--data_path", str(root), "--category", "bottle", "--arch", "mobilenet_v2",
                      "--pretrained", str(converted_mobilenet), "--k", "10", "--eval", "--eval_PRO",
                      "--save_path", str(tmp_path / "out"), "--no_progress")
    assert done.returncode == 0, done.stderr
    row = read_rows(tmp_path / "out" / "train_results.csv")["bottle"]
    # Real ImageNet features separate real defects even with 20 training images.
    assert float(row["Image_AUROC"]) >= 0.95
    assert float(row["Pixel_AUROC"]) >= 0.9
