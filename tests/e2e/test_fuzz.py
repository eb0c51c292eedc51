"""Hostile and malformed inputs through every entry script: one line on stderr, exit 2, no code run.

Small on purpose (each case is one script start): random bytes, truncated and mode-mixed images,
malformed model / stats files, pickles whose __reduce__ would write a marker file.
"""
import json
import pickle
import shutil

import numpy as np
import paddle
import pytest
from PIL import Image

from datasets.synthetic import write_corrupt_image
from helpers import FAST_TRAIN_ARGS, run_script


class _Hostile:
    """Unpickling this runs `touch marker`: the file must never appear."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os
        return os.system, (f"touch {self.marker}",)


def _one_line_exit_2(done, fragment=""):
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], done.stderr


@pytest.fixture(scope="module")
def trained(synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("fuzz")
    done = run_script("train.py", "--data_path", str(synthetic_root), "--category", "part", "--save_path",
                      str(out / "models"), *FAST_TRAIN_ARGS)
    assert done.returncode == 0, done.stderr
    done = run_script("export_model.py", "--model_path", str(out / "models" / "part.pdparams"), "--save_dir",
                      str(out / "export"))
    assert done.returncode == 0, done.stderr
    return out


def test_hostile_pickles_run_no_code(trained, synthetic_root, tmp_path):
    marker = tmp_path / "marker"
    models = tmp_path / "models"
    models.mkdir()
    hostile = models / "part.pdparams"
    hostile.write_bytes(pickle.dumps({"format": "patchcore-paddle/2", "x": _Hostile(marker)}, protocol=4))
    runs = {
        "eval": ("eval.py", "--data_path", str(synthetic_root), "--category", "part", "--model_dir", str(models),
                 "--save_path", str(tmp_path / "out")),
        "predict": ("predict.py", str(synthetic_root / "part" / "test" / "good"), "--model_path", str(hostile),
                    "--save_path", str(tmp_path / "out")),
        "export": ("export_model.py", "--model_path", str(hostile), "--save_dir", str(tmp_path / "out")),
        "weights": ("train.py", "--data_path", str(synthetic_root), "--category", "part", "--save_path",
                    str(tmp_path / "out"), *FAST_TRAIN_ARGS[:3], str(hostile), *FAST_TRAIN_ARGS[4:]),
    }
    for args in runs.values():
        _one_line_exit_2(run_script(*args), "refusing")
    assert not marker.exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def _model_dict(trained):
    from utils.safe_pickle import load_plain_pickle
    return load_plain_pickle(trained / "models" / "part.pdparams")


def test_malformed_model_files(trained, tmp_path):
    rng = np.random.default_rng(0)
    good = _model_dict(trained)
    cases = {
        "random": rng.bytes(2000),
        "truncated": (trained / "models" / "part.pdparams").read_bytes()[:3000],
        "no_config": {k: v for k, v in good.items() if k != "config"},
        "nan_bank": {**good, "arrays": {"memory_bank": np.full((4, 8), np.nan, np.float32)}},
        "flat_bank": {**good, "arrays": {"memory_bank": np.ones(8, np.float32)}},
    }
    for name, content in cases.items():
        path = tmp_path / f"{name}.pdparams"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            paddle.save(content, str(path))
        done = run_script("predict.py", str(path), "--model_path", str(path), "--save_path", str(tmp_path / "o"))
        _one_line_exit_2(done, str(path))


def test_malformed_stats_files(trained, tmp_path):
    export = trained / "export"
    with np.load(export / "stats.npz") as data:
        meta = json.loads(str(data["meta"]))
        bank = data["memory_bank"]
    cases = {
        "random": None,
        "no_category": {"memory_bank": bank, "meta": json.dumps({k: v for k, v in meta.items() if k != "category"})},
        "nan_bank": {"memory_bank": np.where(np.arange(bank.size).reshape(bank.shape) == 3, np.nan, bank),
                     "meta": json.dumps(meta)},
        "empty_bank": {"memory_bank": bank[:0], "meta": json.dumps(meta)},
        "object_member": {"memory_bank": np.array([None], dtype=object), "meta": json.dumps(meta)},
    }
    for name, members in cases.items():
        path = tmp_path / f"{name}.npz"
        if members is None:
            path.write_bytes(np.random.default_rng(1).bytes(3000))
        else:
            np.savez(path, **{k: np.array(v) if isinstance(v, str) else v for k, v in members.items()})
        done = run_script("infer.py", "--model_file", str(export / "model.pdmodel"), "--params_file",
                          str(export / "model.pdiparams"), "--stats", str(path), "--input_file",
                          str(tmp_path), "--save_path", str(tmp_path / "o"))
        _one_line_exit_2(done, str(path))
    assert not (tmp_path / "o").exists()


def test_random_bytes_among_training_images(synthetic_root, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synthetic_root / "part", data / "part")
    (data / "part" / "train" / "good" / "zz.png").write_bytes(np.random.default_rng(3).bytes(300))
    done = run_script("train.py", "--data_path", str(data), "--category", "part", "--save_path", str(tmp_path / "o"),
                      *FAST_TRAIN_ARGS)
    _one_line_exit_2(done, "zz.png")
    assert not (tmp_path / "o" / "part.pdparams").exists()


def test_bad_and_mode_mixed_images(trained, synthetic_root, tmp_path):
    model = trained / "models" / "part.pdparams"
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "random.png").write_bytes(np.random.default_rng(2).bytes(500))
    _one_line_exit_2(run_script("predict.py", str(folder / "random.png"), "--model_path", str(model), "--save_path",
                                str(tmp_path / "o1")), "random.png")
    source = np.asarray(Image.open(next((synthetic_root / "part" / "test" / "good").iterdir())).convert("RGB"))
    gray = source.mean(axis=2).round().astype(np.uint8)
    Image.fromarray(gray.astype(np.uint16) * 257).save(folder / "g16.png")
    Image.fromarray(gray).save(folder / "g8.png")
    Image.fromarray(source).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(source).convert("P").save(folder / "palette.png")
    Image.fromarray(source).convert("RGBA").save(folder / "rgba.png")
    write_corrupt_image(folder / "truncated.png", truncated=True)
    done = run_script("predict.py", str(folder), "--model_path", str(model), "--save_path", str(tmp_path / "o2"),
                      "--no_pictures")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    rows = {r["image"].rsplit("/", 1)[1]: r for r in json.loads((tmp_path / "o2" / "results.json").read_text())}
    assert {n for n, r in rows.items() if r["decision"] == "error"} == {"random.png", "truncated.png"}
    # The 16-bit image and its 8-bit version score the same (to 1e-3 relative).
    assert rows["g16.png"]["image_score"] == pytest.approx(rows["g8.png"]["image_score"], rel=1e-3)
    shutil.rmtree(folder)
