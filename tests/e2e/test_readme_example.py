"""The README's Python API example runs as printed and scores defective parts above good ones."""
from __future__ import annotations

import os
import re
import subprocess
import sys

from helpers import ROOT


def readme_python_example() -> str:
    blocks = re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(encoding="utf-8"), flags=re.S | re.M)
    assert len(blocks) == 1, "the README should hold one Python example"
    return blocks[0]


def test_readme_python_example_runs(tmp_path) -> None:
    from datasets.synthetic import generate_category

    # What tools/demo.sh and tools/make_demo_data.py write, in a folder of the test's own.
    generate_category(tmp_path / "data" / "demo", "synthetic_bottle", kind="object")
    script = tmp_path / "example.py"
    script.write_text(readme_python_example(), encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONWARNINGS="ignore")
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "New Executor" not in done.stderr      # prepare_process() first: Paddle's own log lines stay quiet
    # After train()'s table: one line per test image, "score normalised decision path".
    rows = re.findall(r"^ *(\d+\.\d+) (\d\.\d+) (normal|anomalous) +(\S+)$", done.stdout, flags=re.M)
    scores = {path: float(score) for score, _, _, path in rows}
    assert len(scores) == 20                       # 5 good + 3 defect types x 5 test images
    good = [s for p, s in scores.items() if "/good/" in p]
    defective = [s for p, s in scores.items() if "/good/" not in p]
    assert len(good) == 5 and min(defective) > max(good)
