"""--aggregation unfold through the scripts: train, eval, export, infer == predict; bad settings refused."""
import numpy as np

from helpers import FAST_TRAIN_ARGS, check_deployment, infer_args, run_in_process, run_script
from models.model_file import AnomalyModel

UNFOLD_ARGS = (*FAST_TRAIN_ARGS, "--aggregation", "unfold", "--pretrain_embed_dim", "64", "--target_embed_dim", "48")


def _one_line_error(done, fragment):
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], done.stderr


def test_unfold_model_trains_exports_and_infer_matches_predict(synthetic_root, tmp_path):
    out = tmp_path / "unfold"
    done = run_script("train.py", "--data_path", str(synthetic_root), "--category", "part", "--eval", "--eval_PRO",
                      "--save_path", str(out), *UNFOLD_ARGS)
    assert done.returncode == 0, done.stderr
    model = AnomalyModel.load(out / "part.pdparams")
    settings = model.config.model
    assert (settings.aggregation, settings.pretrain_embed_dim, settings.target_embed_dim) == ("unfold", 64, 48)
    assert model.arrays["memory_bank"].shape[1] == 48
    # eval.py rebuilds the unfold extractor from the model file alone and reproduces the table.
    done = run_script("eval.py", "--data_path", str(synthetic_root), "--category", "part", "--eval_PRO",
                      "--save_path", str(out), "--no_progress")
    assert done.returncode == 0, done.stderr
    rows = [(out / name).read_text().splitlines()[1] for name in ("train_results.csv", "eval_results.csv")]
    assert rows[0].split(",")[:4] == rows[1].split(",")[:4]
    done = run_script("export_model.py", "--model_path", str(out / "part.pdparams"), "--save_dir", str(out / "infer"))
    assert done.returncode == 0, done.stderr
    with np.load(out / "infer" / "stats.npz") as stats:
        assert stats["memory_bank"].shape == model.arrays["memory_bank"].shape
    check_deployment(out / "infer", out / "part.pdparams", out / "train_results.csv", synthetic_root, "part", out,
                     "models.patchcore.scorer")

    # The unfold lengths are part of the exported parameters: an avgpool export's parameters (same
    # backbone weights) do not pass for this stats file.
    avg = tmp_path / "avgpool"
    assert run_script("train.py", "--data_path", str(synthetic_root), "--category", "part", "--save_path", str(avg),
                      *FAST_TRAIN_ARGS).returncode == 0
    assert run_script("export_model.py", "--model_path", str(avg / "part.pdparams"), "--save_dir",
                      str(avg / "infer")).returncode == 0
    image = next((synthetic_root / "part" / "test" / "good").iterdir())
    swapped = infer_args(avg / "infer", input_file=image, save_path=tmp_path / "x")
    swapped[swapped.index("--stats") + 1] = str(out / "infer" / "stats.npz")
    _one_line_error(run_script(*swapped), "was not exported with")


def test_unfold_settings_the_method_cannot_use_are_one_line_errors(synthetic_root, tmp_path):
    out = tmp_path / "out"
    common = ("train.py", "--data_path", str(synthetic_root), "--category", "part", "--save_path", str(out))
    # Refused while the options are read: in this process (a child process would only add Paddle's import).
    _one_line_error(run_in_process(*common, *UNFOLD_ARGS, "--method", "padim"), "padim has no local aggregation")
    _one_line_error(run_in_process(*common, *UNFOLD_ARGS, "--local_aggregation", "False"),
                    "cannot go with --local_aggregation False")
    _one_line_error(run_in_process(*common, *FAST_TRAIN_ARGS, "--aggregation", "unfold", "--pretrain_embed_dim", "0"),
                    "expected a positive integer")
    assert not out.exists()
