"""Ctrl-C early in infer.py and train.py --update: `error: interrupted` and exit 130, every time.

Early means during the imports, where Paddle's native module used to turn the KeyboardInterrupt
into "Can not import paddle core" and an ImportError traceback (exit 1). The tries are spread over
0.6 s from the end of Python's own start-up; each script is bounded by a timeout.
"""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import ROOT, infer_args, train_and_export


def _delays():
    """8 tries over 0.6 s, from when our handler can first be in place: Python's own start-up (site-
    packages, 0.1 s or more on a loaded machine) comes before any project code, so it is measured."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import utils.errors"], cwd=ROOT, check=True, timeout=60)
    return 1.5 * (time.perf_counter() - start) + np.linspace(0.0, 0.6, 8)


@pytest.fixture(scope="module")
def exported(synthetic_root, tmp_path_factory):
    return train_and_export(synthetic_root, tmp_path_factory.mktemp("interrupts"))


def _interrupted_after(delay, args):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    process = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    try:
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    return process.returncode, stderr.strip()


def _check_all_interrupted(args):
    delays = _delays()
    outcomes = {round(float(d), 2): _interrupted_after(d, args) for d in delays}
    bad = {d: o for d, o in outcomes.items() if o != (130, "error: interrupted") and not _before_our_code(*o)}
    assert not bad, bad
    assert sum(o[0] == 130 for o in outcomes.values()) >= len(delays) // 2, outcomes


def _before_our_code(returncode, stderr):
    """Python's own default (killed by SIGINT after a KeyboardInterrupt traceback) is what a Ctrl-C
    gets while the machine is so loaded that Python is still starting: no handler of ours exists
    yet. Once it does, no outcome but 130 is possible, and Paddle's import never started."""
    return returncode == -signal.SIGINT and stderr.endswith("KeyboardInterrupt") and "paddle" not in stderr


def test_early_interrupt_of_infer(exported, synthetic_root, tmp_path):
    _check_all_interrupted(infer_args(exported / "export", input_file=synthetic_root / "part" / "test",
                                      save_path=tmp_path / "out"))


def test_early_interrupt_of_update(exported, synthetic_root, tmp_path):
    _check_all_interrupted(("train.py", "--update", str(exported / "models" / "part.pdparams"), "--data_path",
                            str(synthetic_root / "part" / "train" / "good"), "--save_path", str(tmp_path / "out"),
                            "--no_progress"))
