"""train.py under `python -m paddle.distributed.launch` with 2 CPU workers (gloo): the model file must
equal the single-process one (same seed, same images)."""
import sys

import numpy as np
import pytest

from models.model_file import AnomalyModel
from tests.helpers import FAST_TRAIN_ARGS, ROOT, run_script


def launch(*args: str, log_dir) -> "subprocess.CompletedProcess[str]":  # noqa: F821
    return launch_script("train.py", *args, log_dir=log_dir)


def launch_script(script: str, *args: str, log_dir) -> "subprocess.CompletedProcess[str]":  # noqa: F821
    return run_script("-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", str(log_dir),
                      script, *args, cwd=ROOT)


@pytest.mark.parametrize("method", ["coreset", "padim"])
def test_two_workers_fit_the_single_process_model(synthetic_root, tmp_path, method):
    common = ["--data_path", str(synthetic_root), "--category", "fabric", "--method", method, *FAST_TRAIN_ARGS,
              "--batch_size", "3", "--no_progress"]
    single = run_script("train.py", *common, "--save_path", str(tmp_path / "one"))
    assert single.returncode == 0, single.stderr
    done = launch(*common, "--save_path", str(tmp_path / "two"), log_dir=tmp_path / "log")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    one = AnomalyModel.load(str(tmp_path / "one" / "fabric.pdparams"))
    two = AnomalyModel.load(str(tmp_path / "two" / "fabric.pdparams"))
    assert two.fit_stats["world_size"] == 2 and one.fit_stats["world_size"] == 1
    assert two.fit_stats["rank0_images"] + two.fit_stats["rank1_images"] == one.fit_stats["train_images"]
    for name, array in one.arrays.items():
        if method == "coreset":
            np.testing.assert_array_equal(two.arrays[name], array)        # bitwise
        else:
            np.testing.assert_allclose(two.arrays[name], array, rtol=1e-5, atol=1e-6)
    for key in ("image_threshold", "pixel_threshold", "pixel_max"):
        assert two.calibration[key] == pytest.approx(one.calibration[key], rel=1e-5)
    # Only rank 0 writes: one model, one table.
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["fabric.pdparams", "train_results.csv"]


def test_a_failing_worker_ends_the_run_with_one_line(tmp_path):
    done = launch("--data_path", str(tmp_path / "missing"), "--category", "x", *FAST_TRAIN_ARGS,
                  "--save_path", str(tmp_path / "out"), log_dir=tmp_path / "log")
    # The launcher stops the other worker once one has failed, and reports whichever exit it saw
    # first (2 from a worker, or the stopped one's signal), so only "failed" is certain.
    assert done.returncode != 0
    logs = [p.read_text() for p in sorted((tmp_path / "log").glob("workerlog.*"))]
    assert logs and not any("Traceback" in log for log in logs)
    assert any("error: data path not found" in log for log in logs)


def test_a_worker_failing_mid_round_ends_the_run_with_one_line(synthetic_root, tmp_path):
    # Worker 1 fails at its second collective of the selection (its first round of candidates):
    # every log ends in one line, none in a traceback, and the run fails.
    script = tmp_path / "train_failing.py"
    script.write_text(
        "import os, runpy, sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "import models.patchcore.coreset.sharded as sharded\n"
        "from utils.errors import UserError\n"
        "exchange = sharded.CountedExchange.__call__\n"
        "def failing(self, array):\n"
        "    if os.environ['PADDLE_TRAINER_ID'] == '1' and self.calls == 1:\n"
        "        raise UserError('worker 1 failed mid-round (injected)')\n"
        "    return exchange(self, array)\n"
        "sharded.CountedExchange.__call__ = failing\n"
        "sys.argv[0] = 'train.py'\n"
        "runpy.run_path('train.py', run_name='__main__')\n")
    done = launch_script(str(script), "--data_path", str(synthetic_root), "--category", "fabric", *FAST_TRAIN_ARGS,
                         "--save_path", str(tmp_path / "out"), log_dir=tmp_path / "log")
    assert done.returncode != 0
    logs = [p.read_text() for p in sorted((tmp_path / "log").glob("workerlog.*"))]
    assert len(logs) == 2 and not any("Traceback" in log for log in logs), logs
    assert "error: worker 1 failed mid-round (injected)" in logs[1]
    assert not (tmp_path / "out" / "fabric.pdparams").exists()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))


def test_a_stopped_worker_prints_no_stack_and_a_failing_one_exits_at_once(tmp_path):
    # What the launcher does once a worker fails: it stops the other one (SIGTERM), which must not
    # print Paddle's C++ stack; and the failing worker leaves without the interpreter's teardown, so
    # it cannot be caught half-way by that signal either.
    import os
    import subprocess

    script = tmp_path / "worker.py"
    script.write_text("import os, signal, sys, time\n"
                      f"sys.path.insert(0, {str(ROOT)!r})\n"
                      "from engine.distributed import quiet_launched_worker\n"
                      "quiet_launched_worker()  # as train.py does\n"
                      "import paddle\n"
                      "paddle.ones([2]).numpy()\n"
                      "time.sleep(3)  # both workers are set up by now\n"
                      "if os.environ['PADDLE_TRAINER_ID'] == '1':\n"
                      "    os.kill(os.getpid(), signal.SIGTERM)\n"
                      "time.sleep(30)\n")
    done = run_script("-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", str(tmp_path / "log"),
                      str(script), cwd=ROOT)
    assert done.returncode != 0
    logs = [p.read_text() for p in sorted((tmp_path / "log").glob("workerlog.*"))]
    assert len(logs) == 2 and not any("Traceback" in log for log in logs), logs

    env = dict(os.environ, PADDLE_TRAINERS_NUM="2", PADDLE_TRAINER_ID="1", PYTHONWARNINGS="ignore")
    failed = subprocess.run([sys.executable, "-c", "import atexit, engine.cli; from utils.errors import fail; "
                             "atexit.register(print, 'teardown ran'); fail('x')"],
                            cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert failed.returncode == 2 and failed.stderr.strip().endswith("error: x") and "teardown" not in failed.stdout
