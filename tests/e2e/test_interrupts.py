"""Ctrl-C early in infer.py and train.py --update: `error: interrupted` and exit 130, every time.

Early means during the imports, where Paddle's native module used to turn the KeyboardInterrupt
into "Can not import paddle core" and an ImportError traceback (exit 1). The tries are spread over
the first 0.6 s; each script is bounded by a timeout.
"""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import ROOT, infer_args, train_and_export

# Python itself (site-packages) starts in about 0.1 s on the loaded test machine: before the entry
# script runs no handler of ours can be in place, so the tries start after that.
DELAYS = np.linspace(0.15, 0.6, 8)


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
    outcomes = {round(float(d), 2): _interrupted_after(d, args) for d in DELAYS}
    # A try may finish before its Ctrl-C on a fast machine; every interrupted one must be one line.
    bad = {d: o for d, o in outcomes.items() if o != (130, "error: interrupted") and o[0] != 0}
    assert not bad, bad
    assert sum(o[0] == 130 for o in outcomes.values()) >= len(DELAYS) // 2, outcomes


def test_early_interrupt_of_infer(exported, synthetic_root, tmp_path):
    _check_all_interrupted(infer_args(exported / "export", input_file=synthetic_root / "part" / "test",
                                      save_path=tmp_path / "out"))


def test_early_interrupt_of_update(exported, synthetic_root, tmp_path):
    _check_all_interrupted(("train.py", "--update", str(exported / "models" / "part.pdparams"), "--data_path",
                            str(synthetic_root / "part" / "train" / "good"), "--save_path", str(tmp_path / "out"),
                            "--no_progress"))
