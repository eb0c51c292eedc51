"""The exported Paddle program as an ONNX graph, through paddle2onnx, offline and in a child process."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from utils.errors import UserError
from utils.runtime import QUIET_PADDLE_LOGS

# The lowest opset asked for; paddle2onnx raises it where an op needs a later one.
ONNX_OPSET = 13

# paddle2onnx keeps state between conversions in one process (its program translator and parameter
# loading): a second conversion in the same process was seen to produce a graph with garbage
# outputs (1e22 relative error, caught by the export check). A fresh interpreter per conversion
# avoids that, and keeps its C++ progress lines off the user's terminal.
# Its optimiser stays off: the default one (polygraphy) pip-installs packages on first use, and an
# export must not need the network.
_CONVERT = """
import sys
import paddle2onnx
program, params, target, opset = sys.argv[1:]
model = paddle2onnx.export(program, params, save_file=None, opset_version=int(opset), auto_upgrade_opset=True,
                           enable_onnx_checker=True, enable_optimize=True, optimize_tool="None")
with open(target, "wb") as f:
    f.write(model)
"""


def convert_to_onnx(program: str, params: str) -> bytes:
    """The ONNX model (serialised) of a Paddle inference program and its parameters."""
    with tempfile.TemporaryDirectory() as scratch:
        target = os.path.join(scratch, "model.onnx")
        env = dict(os.environ, **QUIET_PADDLE_LOGS, PYTHONWARNINGS="ignore")
        done = subprocess.run([sys.executable, "-c", _CONVERT, program, params, target, str(ONNX_OPSET)],
                              capture_output=True, text=True, env=env)
        if done.returncode != 0 or not os.path.isfile(target) or os.path.getsize(target) == 0:
            lines = (done.stderr or done.stdout).strip().splitlines() or ["it produced no model"]
            raise UserError(f"paddle2onnx cannot convert {program}: {lines[-1][:160]}")
        with open(target, "rb") as f:
            return f.read()
