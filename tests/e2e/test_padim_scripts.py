"""PaDiM through the scripts: train, eval, export, infer."""
import numpy as np
import pytest

from helpers import FAST_TRAIN_ARGS, check_deployment, run_in_process, run_script
from models.model_file import AnomalyModel
from models.registry import PADIM_LAYERS

PADIM_ARGS = (*FAST_TRAIN_ARGS, "--method", "padim")   # --k 25: 25 of resnet18's 448 channels


@pytest.fixture(scope="module")
def padim_runs(synthetic_root, tmp_path_factory):
    """Two identical padim trainings of 'part' (a, b); a is also evaluated and exported."""
    out = tmp_path_factory.mktemp("padim")
    for name in ("a", "b"):
        done = run_script("train.py", "--data_path", str(synthetic_root), "--category", "part", "--eval",
                          "--eval_PRO", "--save_path", str(out / name), *PADIM_ARGS)
        assert done.returncode == 0, done.stderr
        assert "channels" in done.stdout
    done = run_script("export_model.py", "--model_path", str(out / "a" / "part.pdparams"), "--save_dir",
                      str(out / "a_infer"))
    assert done.returncode == 0, done.stderr
    return out


def test_same_seed_gives_identical_models_and_numbers(padim_runs):
    a, b = (AnomalyModel.load(padim_runs / name / "part.pdparams") for name in ("a", "b"))
    assert a.config.model.method == "padim" and a.config.model.layers == PADIM_LAYERS
    assert a.arrays["mean"].shape == (16 * 16, 25) and a.arrays["inv_covariance"].shape == (16 * 16, 25, 25)
    for name in ("mean", "inv_covariance"):
        np.testing.assert_array_equal(a.arrays[name], b.arrays[name])
    assert (padim_runs / "a" / "part_test_scores.csv").read_text() == \
           (padim_runs / "b" / "part_test_scores.csv").read_text()
    metrics = [[line.split(",")[:4] for line in (padim_runs / name / "train_results.csv").read_text().splitlines()]
               for name in ("a", "b")]
    assert metrics[0] == metrics[1]     # fit_seconds, the next column, is the only one that may differ


def test_eval_reads_the_method_from_the_model_file(padim_runs, synthetic_root):
    done = run_script("eval.py", "--data_path", str(synthetic_root), "--category", "part", "--eval_PRO",
                      "--save_path", str(padim_runs / "a"), "--no_progress")
    assert done.returncode == 0, done.stderr
    trained, evaluated = ((padim_runs / "a" / f"{t}_results.csv").read_text().splitlines() for t in ("train", "eval"))
    # Same metrics; train's table adds fit_seconds and channels after them.
    assert [line.split(",")[:4] for line in trained] == [line.split(",")[:4] for line in evaluated]


def test_infer_agrees_with_predict_and_eval_and_loads_no_training_code(padim_runs, synthetic_root):
    check_deployment(padim_runs / "a_infer", padim_runs / "a" / "part.pdparams", padim_runs / "a" / "train_results.csv",
                     synthetic_root, "part", padim_runs, "models.padim.scorer")


def test_bad_channel_count_is_a_one_line_error(synthetic_root, tmp_path):
    # Refused while the options are read: in this process (a child process would only add Paddle's import).
    done = run_in_process("train.py", "--data_path", str(synthetic_root), "--category", "part",
                          "--save_path", str(tmp_path / "out"), *PADIM_ARGS, "--k", "2.5")
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0 and len(lines) == 1 and "--k must be a whole number of channels" in lines[0]

