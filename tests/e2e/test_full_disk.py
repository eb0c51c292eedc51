"""A disk that fills during an evaluation with figures: one line naming the file, and the
category's folder keeps its previous files, all of them (issue 25 item 7)."""
from __future__ import annotations

import errno

import pytest

import engine.evaluation as evaluation
from engine.settings import RunSettings
from engine.trainer import evaluate_saved
from tests.helpers import FAST_TRAIN_ARGS, run_script
from utils.errors import UserError


def _snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_full_disk_during_figures_leaves_the_previous_outputs(synthetic_root, tmp_path, monkeypatch):
    out = tmp_path / "out"
    done = run_script("train.py", "--data_path", str(synthetic_root), "--category", "all", *FAST_TRAIN_ARGS,
                      "--save_path", str(out), "--eval")
    assert done.returncode == 0, done.stderr
    run = RunSettings(data_path=str(synthetic_root), save_path=str(out), figures=True, progress=False)
    evaluate_saved(run)                                  # an earlier run's figures and tables
    before = _snapshot(out)
    assert any(name.startswith("pics/part/") for name in before)
    written = []
    real = evaluation.save_figure

    def fills_up(path, *args, **kwargs):
        if len(written) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(path)
        real(path, *args, **kwargs)

    monkeypatch.setattr(evaluation, "save_figure", fills_up)
    with pytest.raises(UserError, match=r"^could not write .*/pics/fabric/.*\.png: No space left on device$"):
        evaluate_saved(run)
    assert _snapshot(out) == before                      # nothing new, nothing half-written, no temporaries
