"""What a method is and does lives in its record (models/registry.py) and its package
(models/patchcore/, models/padim/): no other module branches on a method's name."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from helpers import ROOT
from models.registry import METHOD_ALIASES, METHODS, check_config, method_spec
from models.shapes import array_shape_problem, embedding_width
from utils.config import Config, DataConfig, ModelConfig

# The homes of method knowledge; everything else asks them.
METHOD_HOMES = ("models/registry.py", "models/patchcore/", "models/padim/")
SOURCE_DIRS = ("utils", "datasets", "models", "engine", "deploy", "tools", "benchmarks")


def method_name_branches(source: str) -> list[int]:
    """Lines comparing something with a method's name or alias (== != in, alone or in a tuple)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare):
            continue
        parts = [node.left, *node.comparators]
        names = [e for p in parts for e in (p.elts if isinstance(p, (ast.Tuple, ast.List, ast.Set)) else [p])]
        if any(isinstance(e, ast.Constant) and e.value in METHOD_ALIASES for e in names):
            lines.append(node.lineno)
    return lines


def checked_files() -> list[Path]:
    files = sorted(ROOT.glob("*.py"))
    for folder in SOURCE_DIRS:
        files += sorted((ROOT / folder).rglob("*.py"))
    return [f for f in files if not str(f.relative_to(ROOT)).startswith(METHOD_HOMES)]


def test_no_module_outside_the_registry_branches_on_a_method_name():
    found = {str(f.relative_to(ROOT)): method_name_branches(f.read_text()) for f in checked_files()}
    assert {name: lines for name, lines in found.items() if lines} == {}


@pytest.mark.parametrize("source", ['if model.method == "padim":\n    pass\n',
                                    'x = 1 if cfg.method != "patchcore" else 2\n',
                                    'ok = m.method in ("coreset", "padim")\n',
                                    'ok = "padim" == name\n'])
def test_the_branch_check_sees_a_comparison(source):
    assert method_name_branches(source) == [1 if source.startswith(("if", "x", "ok")) else 0]


def test_the_branch_check_ignores_other_comparisons():
    assert method_name_branches('if request.method == "GET":\n    pass\nif m.method in METHODS:\n    pass\n') == []


def _config(method: str, **model) -> Config:
    spec = method_spec(method)
    return Config(DataConfig(resize=64, crop_size=64),
                  ModelConfig(method=spec.name, arch="resnet18", **{**spec.defaults("resnet18"), **model}))


def test_the_records_answer_what_the_modules_used_to_branch_on():
    patchcore, padim = METHODS["patchcore"], METHODS["padim"]
    assert padim.k_counts_channels and not patchcore.k_counts_channels
    assert patchcore.bank_budget and not padim.bank_budget
    assert padim.image_score_from_map and not patchcore.image_score_from_map
    assert [len(shape) for shape in padim.array_shapes] == [2, 3] and padim.array_ranks == (2, 3)
    # PaDiM's width is --k channels; PatchCore's the stages' channels (128 + 256) or the unfold's target.
    assert embedding_width(_config("padim", k=20.0)) == 20
    assert embedding_width(_config("patchcore")) == 384
    assert embedding_width(_config("patchcore", aggregation="unfold", target_embed_dim=50)) == 50


def test_a_method_settings_range_is_checked_by_its_record():
    check_config(_config("padim", k=200.0))              # a channel count: more than 100 is fine
    with pytest.raises(ValueError, match="^k must be a whole number of channels"):
        check_config(_config("padim", k=2.5))
    with pytest.raises(ValueError, match="^k must be a percentage"):
        check_config(_config("patchcore", k=200.0))
    with pytest.raises(ValueError, match="^bank_size must be 0 for padim"):
        check_config(_config("padim", bank_size=10))


def test_array_shapes_come_from_the_record():
    config = _config("padim", k=20.0)
    assert array_shape_problem(config, (16, 16), {"mean": (256, 20), "inv_covariance": (256, 20, 20)}) is None
    assert "inv_covariance" in array_shape_problem(config, (16, 16), {"mean": (256, 20), "inv_covariance": (256, 21, 21)})
    small_bank = array_shape_problem(_config("patchcore"), (8, 8), {"memory_bank": (3, 384)})
    assert small_bank and "fewer than the 9" in small_bank
    assert array_shape_problem(_config("patchcore", image_score="max"), (8, 8), {"memory_bank": (3, 384)}) is None


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_function_a_record_names_exists_in_its_method_package(method):
    # The records name their functions as "module:function" so that a deployment never imports fit
    # code; a typo there would surface only when the function is first asked for.
    spec = METHODS[method]
    for field in ("scorer", "fit", "update", "own_image_out", "fit_bytes"):
        reference = getattr(spec, field)
        assert reference.startswith(f"models.{method}."), (field, reference)
        module, _, name = reference.partition(":")
        assert callable(getattr(__import__(module, fromlist=[name]), name)), (field, reference)
