"""Hostile and malformed inputs through every entry script: one line on stderr, exit 2, no code run.

Small on purpose (each case is one script start): random bytes, truncated and mode-mixed images,
malformed model / stats files, pickles whose __reduce__ would write a marker file, deeply nested
fields, huge finite bank values, float32-overflowing options, named pipes among images.
"""
import json
import os
import pickle
import shutil

import numpy as np
import paddle
import pytest
from PIL import Image

from datasets.synthetic import write_corrupt_image
from helpers import FAST_TRAIN_ARGS, run_script, train_and_export


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
    return train_and_export(synthetic_root, tmp_path_factory.mktemp("fuzz"))


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
        "deep_meta": {"memory_bank": bank, "meta": json.dumps({**meta, "fit_stats": {"x": "M"}}).replace(
            '"M"', "[" * 900 + "]" * 900)},
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


def _with_deep_fit_stats(model_file, depth=3000):
    """The model file's pickle with fit_stats holding `depth` nested lists (written opcode by
    opcode: pickle.dumps of such a list recurses and fails itself)."""
    from utils.safe_pickle import load_plain_pickle

    raw = load_plain_pickle(model_file)
    raw["fit_stats"] = {"deep": "DEEP-MARKER"}
    data = pickle.dumps(raw, protocol=4)
    marker = b"\x8c\x0bDEEP-MARKER"          # SHORT_BINUNICODE of the 11-character marker
    assert data.count(marker) == 1
    return data.replace(marker, b"]" * depth + b"a" * (depth - 1))


def test_deeply_nested_model_fields(trained, synthetic_root, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    deep = models / "part.pdparams"
    deep.write_bytes(_with_deep_fit_stats(trained / "models" / "part.pdparams"))
    good = synthetic_root / "part" / "train" / "good"
    runs = [("predict.py", str(good), "--model_path", str(deep), "--save_path", str(tmp_path / "o1")),
            ("export_model.py", "--model_path", str(deep), "--save_dir", str(tmp_path / "o2")),
            ("train.py", "--update", str(deep), "--data_path", str(good), "--save_path", str(tmp_path / "o3"),
             "--no_progress")]
    for args in runs:
        _one_line_exit_2(run_script(*args), "nest more than")


def test_huge_finite_bank_values_are_refused(trained, tmp_path):
    raw = _model_dict(trained)
    bank = raw["arrays"]["memory_bank"].copy()
    bank[0, 0] = 2.4e38          # finite in float32, but its squared distances are not
    path = tmp_path / "huge.pdparams"
    paddle.save({**raw, "arrays": {"memory_bank": bank}}, str(path))
    done = run_script("predict.py", str(trained / "export"), "--model_path", str(path), "--save_path",
                      str(tmp_path / "o"), show_warnings=True)
    _one_line_exit_2(done, "too large to score")
    export = trained / "export"
    with np.load(export / "stats.npz") as data:
        members = {name: data[name] for name in data.files}
    members["memory_bank"] = members["memory_bank"].copy()
    members["memory_bank"][1, 2] = -1e30
    np.savez(tmp_path / "stats.npz", **members)
    done = run_script("infer.py", "--model_file", str(export / "model.pdmodel"), "--params_file",
                      str(export / "model.pdiparams"), "--stats", str(tmp_path / "stats.npz"), "--input_file",
                      str(tmp_path), "--save_path", str(tmp_path / "o"), show_warnings=True)
    _one_line_exit_2(done, "too large to score")


def test_float32_overflowing_options(trained, tmp_path):
    export = trained / "export"
    base = ("infer.py", "--model_file", str(export / "model.pdmodel"), "--params_file", str(export / "model.pdiparams"),
            "--stats", str(export / "stats.npz"), "--input_file", str(tmp_path), "--save_path", str(tmp_path / "o"))
    for option, value in (("--pixel_threshold", "1e39"), ("--image_threshold", "-4e38")):
        _one_line_exit_2(run_script(*base, f"{option}={value}", show_warnings=True), option)


def _make_fifo(path):
    os.mkfifo(path)
    return path


def test_named_pipes_among_images_never_block(trained, synthetic_root, tmp_path):
    """A FIFO named like an image is skipped with a warning (folders) or refused (named directly),
    and the run finishes: timeouts bound each script, so a regression fails instead of hanging."""
    model = trained / "models" / "part.pdparams"
    images = tmp_path / "images"
    shutil.copytree(synthetic_root / "part" / "test" / "good", images)
    fifo = _make_fifo(images / "pipe.png")
    done = run_script("predict.py", str(images), "--model_path", str(model), "--save_path", str(tmp_path / "o1"),
                      "--no_pictures", timeout=120)
    assert done.returncode == 0, done.stderr
    assert "skipping" in done.stderr and "pipe.png" in done.stderr
    assert len(json.loads((tmp_path / "o1" / "results.json").read_text())) == 3
    export = trained / "export"
    done = run_script("infer.py", "--model_file", str(export / "model.pdmodel"), "--params_file",
                      str(export / "model.pdiparams"), "--stats", str(export / "stats.npz"), "--input_file",
                      str(fifo), "--save_path", str(tmp_path / "o2"), timeout=120)
    _one_line_exit_2(done, "not a regular file")
    data = tmp_path / "data"
    shutil.copytree(synthetic_root / "part", data / "part")
    _make_fifo(data / "part" / "train" / "good" / "pipe.png")
    done = run_script("train.py", "--data_path", str(data), "--category", "part", "--save_path", str(tmp_path / "o3"),
                      *FAST_TRAIN_ARGS, timeout=180)
    assert done.returncode == 0 and "skipping" in done.stderr, done.stderr
    assert (tmp_path / "o3" / "part.pdparams").exists()


def test_awkward_names_and_oversized_images_print_no_raw_warnings(trained, synthetic_root, tmp_path):
    """Tab / CJK file names (missing glyphs in the figure title) and an image between Pillow's
    warning and error limits: one-line messages only, with Python's warnings switched on."""
    from datasets.preprocess import MAX_IMAGE_PIXELS
    images = tmp_path / "images"
    images.mkdir()
    source = next((synthetic_root / "part" / "test" / "good").iterdir())
    for name in ("tab\there.png", "测试 画像.png"):
        shutil.copy(source, images / name)
    side = int((1.5 * MAX_IMAGE_PIXELS) ** 0.5)          # 1.5x the limit: Pillow alone only warns
    Image.new("L", (side, side)).save(images / "huge.png")
    done = run_script("predict.py", str(images), "--model_path", str(trained / "models" / "part.pdparams"),
                      "--save_path", str(tmp_path / "o"), show_warnings=True)
    assert done.returncode == 2 and "Warning" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    rows = {r["image"].rsplit("/", 1)[1]: r for r in json.loads((tmp_path / "o" / "results.json").read_text())}
    assert rows["huge.png"]["decision"] == "error" and "too large" in rows["huge.png"]["error"]
    assert {rows[n]["decision"] for n in ("tab\there.png", "测试 画像.png")} <= {"normal", "anomalous"}
    assert len(list((tmp_path / "o").glob("*.png"))) == 2


def test_memory_blowing_geometry_is_refused_before_the_first_batch(synthetic_root, tmp_path):
    """--resize 20000: refused from the settings in one line, before any image is decoded. The
    address space is capped so that a regression fails here rather than exhausting the machine."""
    import resource
    import subprocess
    import sys

    from helpers import ROOT

    def cap_memory():
        resource.setrlimit(resource.RLIMIT_AS, (12 * 2**30, 12 * 2**30))

    args = [sys.executable, "train.py", "--data_path", str(synthetic_root), "--category", "part", "--save_path",
            str(tmp_path / "o"), *FAST_TRAIN_ARGS]
    size = args.index("--resize")
    args[size + 1] = args[size + 3] = "20000"
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300, preexec_fn=cap_memory)
    _one_line_exit_2(done, "20000x20000 images")
    assert "memory is available" in done.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_a_crafted_tiff_and_a_non_utf8_name_cost_nothing_else(trained, synthetic_root, tmp_path):
    """Pillow's TypeError on the TIFF is that image's error row; the name b'bad\\xff\\xfe.png' is
    scored and written backslash-escaped (results.csv, results.json, the printed table)."""
    from datasets.synthetic import write_crafted_tiff

    folder = tmp_path / "images"
    folder.mkdir()
    write_crafted_tiff(folder / "crafted.tif")
    good = next((synthetic_root / "part" / "test" / "good").iterdir())
    shutil.copy(good, os.fsencode(folder) + b"/bad\xff\xfe.png")
    shutil.copy(good, folder / "ok.png")
    done = run_script("predict.py", str(folder), "--model_path", str(trained / "models" / "part.pdparams"),
                      "--save_path", str(tmp_path / "o"))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    rows = {r["image"].rsplit("/", 1)[1]: r for r in json.loads((tmp_path / "o" / "results.json").read_text("utf-8"))}
    assert set(rows) == {"crafted.tif", r"bad\xff\xfe.png", "ok.png"}
    assert rows["crafted.tif"]["decision"] == "error" and "cannot decode image" in rows["crafted.tif"]["error"]
    assert rows[r"bad\xff\xfe.png"]["image_score"] == pytest.approx(rows["ok.png"]["image_score"])
    assert r"bad\xff\xfe.png" in (tmp_path / "o" / "results.csv").read_text("utf-8") and r"bad\xff\xfe.png" in done.stdout
    assert len(list((tmp_path / "o").glob("*.png"))) == 2


def test_a_crop_the_exported_program_cannot_take_is_refused_before_any_output(trained, synthetic_root, tmp_path):
    """An old stats file (no settings hash) whose crop was edited from 64 to 72: the feature grid
    still looks plausible (9 vs 8), the program's input is 64x64. Refused in one line, no
    results.partial.* left behind."""
    export = trained / "export"
    with np.load(export / "stats.npz") as data:
        members = {name: data[name] for name in data.files}
    meta = json.loads(str(members["meta"]))
    del meta["settings_sha256"]
    meta["config"]["data"].update(resize=72, crop_size=72)
    np.savez(tmp_path / "stats.npz", **{**members, "meta": np.array(json.dumps(meta))})
    done = run_script("infer.py", "--model_file", str(export / "model.pdmodel"), "--params_file",
                      str(export / "model.pdiparams"), "--stats", str(tmp_path / "stats.npz"), "--input_file",
                      str(synthetic_root / "part" / "test" / "good"), "--save_path", str(tmp_path / "o"))
    assert done.returncode == 2 and done.stderr.count("error:") == 1 and "Traceback" not in done.stderr, done.stderr
    assert "72" in done.stderr.splitlines()[-1], done.stderr     # the runtime names the 72x72 input it cannot take
    assert done.stderr.splitlines()[0].startswith("warning:") and len(done.stderr.splitlines()) == 2
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
