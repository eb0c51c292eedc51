"""`SCRIPT -h` answers without importing Paddle (it takes seconds to load): the entry scripts import
the training or deployment code only after their arguments are parsed."""
from __future__ import annotations

import subprocess
import sys

from helpers import ROOT

SCRIPTS = ("train.py", "eval.py", "predict.py", "export_model.py", "infer.py", "serve.py")

# One fresh interpreter runs every script's -h in turn and prints, per script, whether -h printed the
# usage and exited 0, and whether Paddle is loaded by then (the first script that loads it is named).
PROBE = """
import contextlib, io, runpy, sys
for script in sys.argv[1:]:
    sys.argv = [script, "-h"]
    out = io.StringIO()
    code = "no exit"
    with contextlib.redirect_stdout(out):
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as exit:
            code = exit.code
    print(script, code, "usage:" in out.getvalue(), "paddle" in sys.modules)
"""


def test_every_script_answers_help_without_loading_paddle() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE, *SCRIPTS], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split() for line in done.stdout.splitlines()]
    assert [row[0] for row in rows] == list(SCRIPTS), done.stdout
    for script, code, printed_usage, paddle_loaded in rows:
        assert code in ("0", "None") and printed_usage == "True", f"{script} -h: exit {code}"
        assert paddle_loaded == "False", f"{script} -h imported paddle"


def test_the_probe_sees_paddle_when_a_script_loads_it(tmp_path) -> None:
    # The check above can fail: a script that imports paddle before parsing is reported.
    script = tmp_path / "loads_paddle.py"
    # (A stand-in module: importing the real Paddle would cost the seconds this file saves.)
    script.write_text("import argparse, sys, types\nsys.modules['paddle'] = types.ModuleType('paddle')\n"
                      "argparse.ArgumentParser().parse_args()\n")
    done = subprocess.run([sys.executable, "-c", PROBE, str(script)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.stdout.split()[-1] == "True", done.stdout + done.stderr[-2000:]
