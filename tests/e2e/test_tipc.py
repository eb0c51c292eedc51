"""TIPC lite chain (test_tipc/): prepare.sh, then test_train_inference_python.sh, as a user runs them.

Each chain runs in a copy of the repository under a temporary folder, so the working tree's own
test_tipc/data and test_tipc/output are never touched. The copy's config keeps the shipped train
and export lines but a smaller inference grid (oneDNN on and off, one thread count, one batch size)
to stay fast; the full grid is what `bash test_tipc/test_train_inference_python.sh ...` runs.
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT, shared_dir

CONFIG = "test_tipc/configs/PatchCore/train_infer_python.txt"
MODE = "lite_train_lite_infer"
# Not copied: VCS data, caches and every generated folder (top-level data/ and output/ too).
SKIP_ANYWHERE = {".git", "__pycache__", ".pytest_cache", ".benchmarks", ".venv", "output", "logs"}
SKIP_AT = {Path("."): {"data"}, Path("test_tipc"): {"data", "output"}}

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="the TIPC scripts need bash")


def copy_repo(dst: Path) -> Path:
    def ignore(folder, names):
        rel = Path(folder).resolve().relative_to(ROOT)
        return {n for n in names if n in SKIP_ANYWHERE or n.endswith(".egg-info")} | (SKIP_AT.get(rel, set()) & set(names))

    shutil.copytree(ROOT, dst, ignore=ignore, symlinks=True)
    return dst


def set_config_line(repo: Path, section_line_prefix: str, new_line: str, section: str = "infer_params") -> None:
    """Replace the first line starting with `section_line_prefix` inside `section` of the copy's config."""
    path = repo / CONFIG
    lines = path.read_text().splitlines()
    in_section = False
    for i, line in enumerate(lines):
        if line.startswith("===="):
            in_section = f"={section}=" in line
        elif in_section and line.startswith(section_line_prefix):
            lines[i] = new_line
            path.write_text("\n".join(lines) + "\n")
            return
    raise AssertionError(f"no line {section_line_prefix!r} in {section} of {path}")


def tipc_env(shared: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("MVTEC_ROOT", "PATCHCORE_WEIGHTS", "CUDA_VISIBLE_DEVICES")}
    env.update(PATCHCORE_SHARED=str(shared), TIPC_PYTHON=sys.executable, PYTHONWARNINGS="ignore")
    return env


def run_bash(repo: Path, script: str, env: dict, mode: str = MODE) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", f"test_tipc/{script}", CONFIG, mode], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=900)


def status_lines(repo: Path) -> list[str]:
    return (repo / "test_tipc" / "output" / MODE / "results_python.log").read_text().splitlines()


def check_successful_chain(repo: Path, done: subprocess.CompletedProcess) -> list[str]:
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = status_lines(repo)
    assert lines and all(line.startswith("Run successfully with command - PatchCore - ") for line in lines), lines
    assert "\x1b" not in "".join(lines)                      # no colour codes in the results log
    train = [line for line in lines if " train.py " in line]
    export = [line for line in lines if " export_model.py " in line]
    infer = [line for line in lines if " infer.py " in line]
    assert len(train) == 1 and len(export) == 1 and len(infer) >= 1 and len(lines) == 2 + len(infer)
    assert "--pretrained=" in train[0]
    out = repo / "test_tipc" / "output" / MODE
    for line in infer:
        log = Path(repo, line.rsplit(" - ", 1)[1])
        assert log.parent == out and re.fullmatch(
            r"python_infer_cpu_usemkldnn_(True|False)_threads_\d+_precision_fp32_batchsize_\d+\.log", log.name)
        text = log.read_text()
        assert "----------------------- benchmark -----------------------" in text, text
        assert "device: cpu" in text and "precision: fp32" in text
        assert (out / "norm_train_gpus_-1_autocast_null" / log.stem / "results.json").is_file()
    return lines


def small_grid(repo: Path) -> None:
    set_config_line(repo, "--cpu_threads:", "--cpu_threads:1")
    set_config_line(repo, "--batch_size:", "--batch_size:2")
    set_config_line(repo, "--enable_mkldnn:", "--enable_mkldnn:True|False")


def test_lite_chain_without_shared_uses_synthetic_data_and_random_init(tmp_path):
    """A fresh machine: no ../shared, so a synthetic category and a randomly initialised backbone."""
    repo = copy_repo(tmp_path / "repo")
    small_grid(repo)
    env = tipc_env(tmp_path / "no_shared_here")
    prepared = run_bash(repo, "prepare.sh", env)
    assert prepared.returncode == 0, prepared.stdout + prepared.stderr
    assert "synthetic" in prepared.stdout
    assert (repo / "test_tipc" / "data" / "pretrained.txt").read_text().strip() == "none"
    category = repo / "test_tipc" / "data" / "mvtec" / "bottle"
    assert len(list((category / "train" / "good").iterdir())) == 20
    assert sorted(p.name for p in (category / "test").iterdir()) == ["good", "hole", "scratch", "stain"]

    again = run_bash(repo, "prepare.sh", env)                # idempotent: nothing is rebuilt
    assert again.returncode == 0 and "is up to date" in again.stdout, again.stdout + again.stderr

    done = run_bash(repo, "test_train_inference_python.sh", env)
    lines = check_successful_chain(repo, done)
    assert sum(" infer.py " in line for line in lines) == 2
    assert "--pretrained=none" in lines[0]

    # A failing step is reported as such, the steps depending on it are skipped, the exit code is 1.
    set_config_line(repo, "norm_train:", "norm_train:train.py --no_such_option", section="train_params")
    failed = run_bash(repo, "test_train_inference_python.sh", env)
    assert failed.returncode == 1
    lines = status_lines(repo)
    assert len(lines) == 1 and lines[0].startswith("Run failed with command - PatchCore - ") and "train.py" in lines[0]


@pytest.mark.skipif(not (shared_dir() / "data" / "mvtec" / "bottle").is_dir()
                    or not (shared_dir() / "weights" / "mobilenet_v2_imagenet_torch.pt").is_file(),
                    reason="needs ../shared (MVTec bottle and the MobileNetV2 weights)")
def test_lite_chain_with_shared_uses_bottle_subset_and_converted_weights(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    small_grid(repo)
    env = tipc_env(shared_dir().resolve())
    prepared = run_bash(repo, "prepare.sh", env)
    assert prepared.returncode == 0, prepared.stdout + prepared.stderr
    assert (repo / "test_tipc" / "data" / "pretrained.txt").read_text().strip() == \
        "./test_tipc/data/weights/mobilenet_v2.pdparams"
    category = repo / "test_tipc" / "data" / "mvtec" / "bottle"
    train = list((category / "train" / "good").iterdir())
    assert len(train) == 20 and all(p.is_symlink() for p in train)  # symlinks: the source is only read
    assert sorted(p.name for p in (category / "test").iterdir()) == \
        ["broken_large", "broken_small", "contamination", "good"]
    assert all(len(list(d.iterdir())) == 3 for d in (category / "test").iterdir())

    done = run_bash(repo, "test_train_inference_python.sh", env)
    lines = check_successful_chain(repo, done)
    assert "--pretrained=./test_tipc/data/weights/mobilenet_v2.pdparams" in lines[0]


@pytest.mark.parametrize("script", ["prepare.sh", "test_train_inference_python.sh"])
def test_other_modes_are_refused(script):
    done = run_bash(ROOT, script, tipc_env(shared_dir()), mode="whole_train_whole_infer")
    assert done.returncode == 1
    assert "not supported" in done.stderr


def test_config_parsing_helpers(tmp_path):
    script = r"""
        source test_tipc/common_func.sh
        func_parser_key '--batch_size:lite_train_lite_infer=4|whole_train_whole_infer=8'
        func_parser_params '--batch_size:lite_train_lite_infer=4|whole_train_whole_infer=8' lite_train_lite_infer
        func_parser_params '--batch_size:lite_train_lite_infer=4' whole_infer
        func_parser_value 'train_infer_img_dir:./a:b'
        echo "[$(func_set_params --k null)][$(func_set_params null 3)][$(func_set_params --k 'a b')]"
        func_flag_value 'train.py --data_path ./x --category=bottle' --category
        func_flag_value 'train.py --data_path ./x --category=bottle' --data_path
        func_squeeze 'a    b  c '
        lines=(); func_read_section test_tipc/configs/PatchCore/train_infer_python.txt infer_params lines
        echo "${lines[13]}"
        status_check 0 'python3 x.py' "$LOG" PatchCore step.log
        status_check 3 'python3 y.py' "$LOG" PatchCore
    """
    log = tmp_path / "results_python.log"
    done = subprocess.run(["bash", "-u", "-c", script], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, LOG=str(log)))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:9] == [
        "--batch_size", "4", "null", "./a:b", r"[][][--k=a\ b]", "bottle", "./x", "a b c", "inference:infer.py --no_pictures"]
    assert log.read_text().splitlines() == [
        "Run successfully with command - PatchCore - python3 x.py - step.log",
        "Run failed with command - PatchCore - python3 y.py"]
