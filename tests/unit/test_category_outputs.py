"""A category's outputs are written as one unit: a full disk part way leaves the old files, all of
them, and the error names the file (issue 25 item 7); figures of an earlier run do not stay (item 10)."""
from __future__ import annotations

import errno

import pytest

from engine.outputs import CategoryOutputs
from utils.errors import UserError


def _old_run(folder):
    (folder / "pics" / "part").mkdir(parents=True)
    (folder / "pics" / "part" / "old_figure.png").write_text("old")
    (folder / "part.pdparams").write_text("old model")
    (folder / "part_test_scores.csv").write_text("old scores")


def _full_disk(path):
    path.write_text("half")
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_failed_write_leaves_every_old_file_and_names_the_file(tmp_path):
    _old_run(tmp_path)
    with pytest.raises(UserError) as caught:
        with CategoryOutputs(str(tmp_path), "part") as outputs:
            outputs.write("part_test_scores.csv", lambda p: p.write_text("new scores"))
            figures = outputs.figures_folder()
            outputs.staged_file(figures, "new_figure.png", lambda p: p.write_text("new"))
            outputs.write("part.pdparams", _full_disk)
            outputs.publish()
    assert str(caught.value) == f"could not write {tmp_path / 'part.pdparams'}: No space left on device"
    assert (tmp_path / "part.pdparams").read_text() == "old model"
    assert (tmp_path / "part_test_scores.csv").read_text() == "old scores"
    assert sorted(p.name for p in (tmp_path / "pics" / "part").iterdir()) == ["old_figure.png"]
    leftovers = [p for p in tmp_path.rglob(".*")]
    assert leftovers == []


def test_a_figure_that_cannot_be_written_is_named(tmp_path):
    with pytest.raises(UserError, match=r"could not write .*pics/part/a\.png: No space left"):
        with CategoryOutputs(str(tmp_path), "part") as outputs:
            outputs.staged_file(outputs.figures_folder(), "a.png", _full_disk)
    assert not (tmp_path / "pics" / "part").exists()


def test_publish_replaces_the_figures_folder_whole(tmp_path):
    _old_run(tmp_path)
    with CategoryOutputs(str(tmp_path), "part") as outputs:
        outputs.write("part.pdparams", lambda p: p.write_text("new model"))
        outputs.staged_file(outputs.figures_folder(), "new_figure.png", lambda p: p.write_text("new"))
        outputs.publish()
    assert (tmp_path / "part.pdparams").read_text() == "new model"
    assert sorted(p.name for p in (tmp_path / "pics" / "part").iterdir()) == ["new_figure.png"]
    assert [p for p in tmp_path.rglob(".*")] == []
