"""Importing the library changes no process-wide state: environment variables, signal handlers,
sys.excepthook / unraisablehook, Pillow's decompression-bomb limit, the import path or the
warning filters stay as they were. The entry scripts set what they need themselves
(utils.runtime.prepare_process), first thing."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import ROOT

LIBRARY_PACKAGES = ("utils", "datasets", "models", "engine", "deploy")

# Runs in a fresh interpreter: argv[1] the project root, argv[2] the modules to import (JSON). The
# third-party packages the project imports are loaded first, so that only the project's own
# import-time effects show (Paddle's C++ signal handlers and environment are Paddle's business).
CHILD = r'''
import ast, importlib, json, os, pathlib, signal, sys, warnings
root, modules = pathlib.Path(sys.argv[1]), json.loads(sys.argv[2])
project = {"utils", "datasets", "models", "engine", "deploy", "tools"}
third_party = set()
for path in root.glob("[!.]*/**/*.py"):
    if path.parts[len(root.parts)] in project:
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            third_party.update(n for n in names if n.split(".")[0] not in project | set(sys.stdlib_module_names))
for name in sorted(third_party):
    try:
        importlib.import_module(name)
    except Exception:
        pass
from PIL import Image

def state():
    signals = {}
    for sig in signal.Signals:
        try:
            signals[sig.name] = repr(signal.getsignal(sig))
        except (OSError, ValueError):
            pass
    return {"environ": dict(os.environ), "signals": signals, "excepthook": repr(sys.excepthook),
            "unraisablehook": repr(sys.unraisablehook), "max_image_pixels": Image.MAX_IMAGE_PIXELS,
            "sys.path": list(sys.path), "warning filters": [repr(f) for f in warnings.filters]}

sys.path.insert(0, str(root))
before = state()
skipped = []
for module in modules:
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as err:          # an optional runtime this machine lacks
        if err.name.split(".")[0] in project:
            raise
        skipped.append(module)
after = state()
changed = {key: {"before": before[key], "after": after[key]} for key in before if before[key] != after[key]}
for key in ("environ", "signals"):
    if key in changed:
        b, a = changed[key]["before"], changed[key]["after"]
        changed[key] = {name: [b.get(name), a.get(name)] for name in set(b) | set(a) if b.get(name) != a.get(name)}
print(json.dumps({"changed": changed, "skipped": skipped, "imported": len(modules) - len(skipped)}))
'''


def library_modules() -> list[str]:
    names = []
    for package in LIBRARY_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def import_effects(modules: list[str], root=ROOT) -> dict:
    """What importing `modules` (from `root`) in a fresh interpreter changed: {"changed": {...}, ...}."""
    done = subprocess.run([sys.executable, "-c", CHILD, str(root), json.dumps(modules)], capture_output=True,
                          text=True, timeout=300, cwd="/")
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow   # imports Paddle and every runtime: 8 s
def test_importing_the_library_changes_no_process_wide_state():
    effects = import_effects(library_modules())
    assert effects["imported"] == len(library_modules()) - len(effects["skipped"]) > 80
    assert effects["changed"] == {}


PROBE = """
import os, signal, sys, warnings
from PIL import Image
os.environ["{name}"] = "1"
signal.signal(signal.SIGTERM, lambda *_: None)
sys.excepthook = lambda *_: None
Image.MAX_IMAGE_PIXELS = None
sys.path.append("/nowhere")
warnings.filterwarnings("ignore", message="probe")
"""


def test_the_check_sees_every_kind_of_change(tmp_path):
    name = "PATCHCORE_IMPORT_PROBE"
    (tmp_path / "quiet_probe.py").write_text("import os\nVALUE = os.environ.get('HOME')\n")
    (tmp_path / "noisy_probe.py").write_text(PROBE.format(name=name))
    assert import_effects(["quiet_probe"], tmp_path)["changed"] == {}
    changed = import_effects(["noisy_probe"], tmp_path)["changed"]
    assert set(changed) == {"environ", "signals", "excepthook", "max_image_pixels", "sys.path", "warning filters"}
    assert changed["environ"] == {name: [None, "1"]} and set(changed["signals"]) == {"SIGTERM"}


def test_the_entry_scripts_set_up_their_process_first():
    # What no import does any more, each entry script does as its first statement (before NumPy and
    # Paddle load, whose thread pools read the environment once).
    for script in ("train.py", "eval.py", "predict.py", "export_model.py", "infer.py", "serve.py"):
        source = (ROOT / script).read_text()
        first_project_import = min(source.index(f"from {p}.") for p in ("engine", "deploy") if f"from {p}." in source)
        assert source.index("prepare_process()") < first_project_import, script
