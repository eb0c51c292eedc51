"""export_model.py -> infer.py (Paddle Inference) against predict.py (dynamic graph)."""
import pytest

from datasets.synthetic import write_corrupt_image
from helpers import FAST_TRAIN_ARGS, check_deployment, infer_args, run_script


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


def test_export_writes_pdmodel_and_stats(exported):
    names = sorted(p.name for p in (exported / "part_infer").iterdir())
    assert {"model.pdmodel", "model.pdiparams", "stats.npz"} <= set(names)
    assert not any(n.startswith(".") for n in names)


def test_infer_agrees_with_predict_and_eval_and_loads_no_training_code(exported, synthetic_root):
    check_deployment(exported / "part_infer", exported / "part" / "part.pdparams", exported / "part" / "train_results.csv",
                     synthetic_root, "part", exported, "models.patchcore.scorer")


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
    # A bad image is reported (and has its row in the results); alone, it is the only line.
    _one_line_error(run_script(*infer_args(part, input_file=bad, save_path=tmp_path / "bad")), "cannot decode image")
    missing = infer_args(part, input_file=image, save_path=tmp_path / "x")
    missing[missing.index("--stats") + 1] = str(tmp_path / "none.npz")
    _one_line_error(run_script(*missing), "stats file not found")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    missing[missing.index("--stats") + 1] = str(tmp_path / "junk.npz")
    _one_line_error(run_script(*missing), "cannot read stats file")
    assert not (tmp_path / "x").exists()
    _one_line_error(run_script("predict.py", str(image), "--model_path", str(tmp_path / "none.pdparams")),
                    "model file not found")


def test_infer_streams_past_a_bad_image_and_keeps_same_named_figures_apart(exported, synthetic_root, tmp_path):
    import csv
    import shutil

    good = sorted((synthetic_root / "part" / "test" / "good").iterdir())[:2]
    for folder in ("a", "b"):
        (tmp_path / "in" / folder / "good").mkdir(parents=True)
        shutil.copy(good[0], tmp_path / "in" / folder / "good" / "x.png")
    shutil.copy(good[1], tmp_path / "in" / "a" / "good" / "z.png")
    write_corrupt_image(tmp_path / "in" / "a" / "good" / "y.png", truncated=True)
    out = tmp_path / "out"
    done = run_script(*infer_args(exported / "part_infer", input_file=tmp_path / "in", save_path=out, batch_size=2),
                      "--save_maps")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2 and "y.png" in lines[0] and "1 of 4 images" in lines[1], done.stderr
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["decision"] == "error" for r in rows] == [False, True, False, False]
    assert all(r["image_score"] for r in rows if r["decision"] != "error")
    assert sorted(p.name for p in out.iterdir()) == ["anomaly_maps.npz", "b_good_x.png", "good_x.png", "good_z.png",
                                                     "results.csv", "results.json"]
