"""Outputs never land inside a source package: train.py / export_model.py refuse such a folder in one line."""
from __future__ import annotations

import re
import subprocess

import pytest

from helpers import ROOT, run_in_process
from utils.io import source_package_of


def test_a_folder_inside_a_package_is_found() -> None:
    assert source_package_of(ROOT / "models") == ROOT / "models"
    assert source_package_of(ROOT / "models" / "bottle" / "stats.npz") == ROOT / "models"
    assert source_package_of(ROOT / "deploy" / "service" / "x") == ROOT / "deploy"


def test_folders_outside_the_packages_are_fine(tmp_path) -> None:
    for path in (ROOT / "output" / "models", ROOT, ROOT / "tests" / "x", ROOT / "data" / "demo", tmp_path / "models"):
        assert source_package_of(path) is None, path


def test_a_link_into_a_package_is_followed(tmp_path) -> None:
    (tmp_path / "link").symlink_to(ROOT / "models")
    assert source_package_of(tmp_path / "link" / "bottle") == ROOT / "models"


@pytest.mark.parametrize("argv", [
    ["train.py", "--data_path", "anywhere", "--save_path", "models"],
    ["train.py", "--update", "m.pdparams", "--data_path", "anywhere", "--save_path", "./engine/out"],
    ["export_model.py", "--model_path", "m.pdparams", "--save_dir", "models/bottle"],
])
def test_scripts_refuse_a_save_path_inside_a_package(argv, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    before = sorted(p.name for p in ROOT.iterdir()), sorted(p.name for p in (ROOT / "models").iterdir())
    done = run_in_process(*argv)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: --save_")
    assert "inside the source package" in done.stderr and "output/" in done.stderr
    after = sorted(p.name for p in ROOT.iterdir()), sorted(p.name for p in (ROOT / "models").iterdir())
    assert after == before


def test_converted_weights_and_outputs_are_ignored_by_git() -> None:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = ["mnv2.pdparams", "mobilenet_v2.pt", "output/models/bottle/model.pdiparams", "output/feedback/x.png"]
    done = subprocess.run(["git", "check-ignore", "--no-index", *ignored, "models/registry.py"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ignored


# Options that name a folder or file a documented command writes.
WRITTEN = re.compile(r"(?:--save_path|--save_dir|--models|--feedback_dir|--out|--export_dir|--dst)[ =]([^\s`\\|)]+)")
DOCUMENTED = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted(ROOT.glob("*.py")),
              *sorted((ROOT / "tools").glob("*")), *sorted((ROOT / "benchmarks").glob("*.py"))]


def test_no_documented_command_writes_into_a_source_package() -> None:
    # (Lines quoting the refusal itself, `error: ...`, are not commands.)
    inside = [f"{page.relative_to(ROOT)}: {target}" for page in DOCUMENTED if page.is_file()
              for line in page.read_text(encoding="utf-8").splitlines() if "error:" not in line
              for target in WRITTEN.findall(line) if source_package_of(ROOT / target) is not None]
    assert inside == []
    assert WRITTEN.findall("python serve.py --models models --feedback_dir feedback") == ["models", "feedback"]
