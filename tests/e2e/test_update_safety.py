"""train.py --update as users run it: concurrent updates, launched workers, options the model fixes,
the held-out threshold rule (issue 25 items 1, 2, 10)."""
from __future__ import annotations

import os

import numpy as np
import pytest

import engine.updater as updater
from engine.settings import RunSettings
from models.model_file import AnomalyModel
from tests.helpers import FAST_TRAIN_ARGS, run_script
from utils.errors import UserError


@pytest.fixture(scope="module")
def trained(synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("base")
    done = run_script("train.py", "--data_path", str(synthetic_root), "--category", "fabric", *FAST_TRAIN_ARGS,
                      "--val_ratio", "0.25", "--save_path", str(out))
    assert done.returncode == 0, done.stderr
    return out / "fabric.pdparams"


def _copy(model_file, folder):
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "fabric.pdparams"
    target.write_bytes(model_file.read_bytes())
    return target


def _settings(root, out):
    return RunSettings(data_path=str(root), save_path=str(out), category=None, progress=False)


def test_the_model_is_read_under_the_output_lock(trained, synthetic_root, tmp_path, monkeypatch):
    """The lost update came from reading the model before the lock: a second update then wrote a
    model made from the same old one. Now the read happens with the folder locked."""
    model_file = _copy(trained, tmp_path / "out")
    seen = []
    read = updater.ReadModel.read

    def spy(path):
        seen.append((tmp_path / "out" / ".lock").exists())
        return read(path)

    monkeypatch.setattr(updater.ReadModel, "read", staticmethod(spy))
    updater.update(str(model_file), _settings(synthetic_root, tmp_path / "out"))
    assert seen == [True]
    assert AnomalyModel.load(str(model_file)).fit_stats["updates"] == 1


def test_a_model_rewritten_during_the_update_is_not_overwritten(trained, synthetic_root, tmp_path, monkeypatch):
    """Another run (here: injected between read and save) writes the model file meanwhile: the update
    refuses in one line instead of silently dropping that run's work."""
    model_file = _copy(trained, tmp_path / "models")
    other = AnomalyModel.load(str(model_file))
    other.fit_stats["updates"] = 7.0
    extend = updater.extend_model

    def extend_then_rewrite(*args):
        extend(*args)
        other.save(str(model_file))         # what a concurrent writer leaves

    monkeypatch.setattr(updater, "extend_model", extend_then_rewrite)
    with pytest.raises(UserError, match="changed while this update ran"):
        updater.update(str(model_file), _settings(synthetic_root, tmp_path / "models"))
    assert AnomalyModel.load(str(model_file)).fit_stats["updates"] == 7.0
    assert sorted(os.listdir(tmp_path / "models")) == ["fabric.pdparams"]      # no temporaries left


def test_update_under_the_distributed_launcher_is_refused_up_front(trained, synthetic_root, tmp_path):
    model_file = _copy(trained, tmp_path / "out")
    before = model_file.read_bytes()
    env = dict(os.environ, PADDLE_TRAINERS_NUM="2", PADDLE_TRAINER_ID="0")
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "train.py", "--update", str(model_file), "--data_path",
                           str(synthetic_root), "--save_path", str(tmp_path / "out"), "--no_progress"],
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))), env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: --update runs in one process"), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert model_file.read_bytes() == before


@pytest.mark.parametrize("option", [("--arch", "mobilenet_v2"), ("--method", "padim"), ("--k", "10"),
                                    ("--aggregation", "unfold"), ("--resize", "96")])
def test_update_refuses_options_that_differ_from_the_model(trained, synthetic_root, tmp_path, option):
    model_file = _copy(trained, tmp_path / "out")
    before = model_file.read_bytes()
    done = run_script("train.py", "--update", str(model_file), "--data_path", str(synthetic_root),
                      "--save_path", str(tmp_path / "out"), "--no_progress", *option)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"error: {option[0]} "), done.stderr
    assert "differs from the model's" in lines[0]
    assert model_file.read_bytes() == before


def test_update_accepts_options_equal_to_the_model_s(trained, synthetic_root, tmp_path):
    model_file = _copy(trained, tmp_path / "out")
    done = run_script("train.py", "--update", str(model_file), "--data_path", str(synthetic_root),
                      "--save_path", str(tmp_path / "out"), "--no_progress", "--arch", "resnet18",
                      "--method", "coreset", "--k", "25", "--resize", "64")
    assert done.returncode == 0, done.stderr


def test_an_update_never_lowers_the_held_out_threshold(trained, synthetic_root, tmp_path, monkeypatch):
    """Few new images could place the held-out quantile below an old held-out good image's score
    (a known-good part flagged); the rule keeps at least the previous threshold."""
    model_file = _copy(trained, tmp_path / "out")
    old = AnomalyModel.load(str(model_file)).calibration
    import engine.calibration_rule as rule
    real = rule.calibrate_held_out

    def low(*args):
        placed = real(*args)
        return dict(placed, image_threshold=old["image_threshold"] / 10, pixel_threshold=old["pixel_threshold"] / 10)

    monkeypatch.setattr(rule, "calibrate_held_out", low)
    updater.update(str(model_file), _settings(synthetic_root, tmp_path / "out"))
    new = AnomalyModel.load(str(model_file)).calibration
    assert new["image_threshold"] == old["image_threshold"] and new["pixel_threshold"] == old["pixel_threshold"]
    assert "held-out" in new["image_rule"] and "kept at the previous threshold" in new["image_rule"]
    assert np.isfinite(new["image_max"])
