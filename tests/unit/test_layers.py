"""The import rules between the project's layers, read from the source (every import, also lazy ones).

    utils                       -> nothing of the project
    datasets, models            -> utils (and themselves)
    engine                      -> utils, datasets, models (models.runtimes too: the export check and
                                   the fit extraction run the inference runtimes); never deploy
    deploy                      -> utils, datasets.preprocess, the scoring side of models; never engine,
                                   fit code, calibration or metrics
    train/eval/export_model.py  -> engine (and predict.py deploy too), utils.runtime's process setup
    infer.py, serve.py          -> deploy, models.runtimes (the runtime options), utils.runtime's setup

infer.py's modules at run time are checked end to end in tests/e2e (helpers.modules_infer_loads).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from helpers import PROJECT_PACKAGES, ROOT, TRAINING_MODULES

ALLOWED = {
    "utils": {"utils"},
    "datasets": {"utils", "datasets"},
    "models": {"utils", "models"},
    "engine": {"utils", "datasets", "models", "engine"},
    "deploy": {"utils", "datasets", "models", "deploy"},
    # Every entry script's first statement is utils.runtime.prepare_process (before NumPy/Paddle load).
    "train.py": {"utils", "engine"},
    "eval.py": {"utils", "engine"},
    "export_model.py": {"utils", "engine"},
    "predict.py": {"utils", "engine", "deploy"},
    "infer.py": {"utils", "deploy", "models.runtimes"},
    "serve.py": {"utils", "deploy", "models.runtimes"},
}
# Modules deploy/ must never import, even though their packages are allowed: the one list of
# training-side modules, which tests/e2e also checks infer.py's loaded modules against.
DEPLOY_FORBIDDEN = tuple(sorted(TRAINING_MODULES))


def project_imports(source: str) -> set[str]:
    """Every project module a Python source imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from models.patchcore import fit` may name a module: count both spellings.
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(name for name in names if name.split(".")[0] in PROJECT_PACKAGES)
    return found


def violations(layer: str, source: str) -> list[str]:
    bad = []
    for module in sorted(project_imports(source)):
        if not any(module == allowed or module.startswith(allowed + ".") for allowed in ALLOWED[layer]):
            bad.append(f"{module} (layer {layer} may import only {sorted(ALLOWED[layer])})")
        elif layer == "deploy" and module.startswith(DEPLOY_FORBIDDEN):
            bad.append(f"{module} (training-side code in deploy)")
    return bad


def layer_files() -> list[tuple[str, Path]]:
    files = [(name, ROOT / name) for name in ALLOWED if name.endswith(".py")]
    for package in ("utils", "datasets", "models", "engine", "deploy"):
        files += [(package, path) for path in sorted((ROOT / package).rglob("*.py"))]
    return files


@pytest.mark.parametrize("layer,path", layer_files(), ids=lambda v: str(v.relative_to(ROOT)) if isinstance(v, Path) else v)
def test_layer_imports_only_what_is_below_it(layer, path):
    assert violations(layer, path.read_text()) == []


def test_the_rule_check_catches_violations():
    assert violations("models", "def f():\n    from engine.pipeline import fit\n")
    assert violations("utils", "import datasets.mvtec\n")
    assert violations("deploy", "from models.patchcore import fit\n")
    assert violations("deploy", "from utils.metrics import compute_metrics\n")
    assert violations("infer.py", "from engine.cli import run_cli\n")
    assert violations("infer.py", "from models.model_file import AnomalyModel\n")
    assert violations("engine", "from deploy.batch_scoring import run_inference\n")
    assert violations("engine", "from deploy.exported_model import load_exported_model\n")
    assert not violations("engine", "from models.runtimes import open_runtime\n")
    assert not violations("deploy", "from models.thresholds import Thresholds\nimport numpy\n")


LIBRARY_PACKAGES = ("utils", "datasets", "models", "engine", "deploy")


def patches_sys_path(source: str) -> bool:
    """Whether a source changes the import path (sys.path.insert/append/..., or assigns to it)."""
    for node in ast.walk(ast.parse(source)):
        target = node.func.value if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) else None
        targets = getattr(node, "targets", []) + [getattr(node, "target", None)]
        for candidate in [target, *targets]:
            while isinstance(candidate, ast.Subscript):
                candidate = candidate.value
            if (isinstance(candidate, ast.Attribute) and candidate.attr == "path"
                    and isinstance(candidate.value, ast.Name) and candidate.value.id == "sys"):
                return True
    return False


def test_library_modules_leave_the_import_path_alone():
    # Only entry scripts (the root scripts, tools/, benchmarks/) and tests may put the project root on
    # sys.path; an import of a library module changes no process-wide state of that kind.
    patched = [str(path.relative_to(ROOT)) for package in LIBRARY_PACKAGES
               for path in sorted((ROOT / package).rglob("*.py")) if patches_sys_path(path.read_text())]
    assert patched == []


def test_the_import_path_check_sees_a_patch():
    assert patches_sys_path("import sys\nsys.path.insert(0, '/x')\n")
    assert patches_sys_path("import sys\nsys.path[:0] = ['/x']\n")
    assert patches_sys_path("import sys\nsys.path += ['/x']\n")
    assert not patches_sys_path("import os\nos.path.join('a', 'b')\nimport sys\nprint(sys.path[0])\n")
