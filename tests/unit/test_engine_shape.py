"""engine/ stays in small pieces: no function takes more than 6 parameters or runs over 60 lines.

Run with -s to see every function's counts.
"""
from __future__ import annotations

import ast

from helpers import ROOT

MAX_PARAMETERS = 6
MAX_LINES = 60


def engine_functions() -> list[tuple[str, int, int]]:
    """(file:function, parameters, lines) of every function and method in engine/*.py."""
    found = []
    for path in sorted((ROOT / "engine").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found.append((f"{path.name}:{node.name}", *function_shape(node)))
    return found


def function_shape(node: ast.FunctionDef) -> tuple[int, int]:
    """(parameters but self/cls, *args and **kwargs counting one each; lines including the decorator-less def)."""
    a = node.args
    names = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs if p.arg not in ("self", "cls")]
    return len(names) + (a.vararg is not None) + (a.kwarg is not None), node.end_lineno - node.lineno + 1


def test_engine_functions_are_small():
    found = engine_functions()
    assert len(found) > 20          # the walk sees engine's functions
    for name, count, lines in sorted(found, key=lambda f: (-f[2], f[0])):
        print(f"{name:50s} {count:2d} parameters {lines:3d} lines")
    too_many = [f for f in found if f[1] > MAX_PARAMETERS]
    too_long = [f for f in found if f[2] > MAX_LINES]
    assert not too_many, f"more than {MAX_PARAMETERS} parameters: {too_many}"
    assert not too_long, f"longer than {MAX_LINES} lines: {too_long}"


def test_the_counter_sees_every_kind_of_parameter_and_every_line():
    source = "class A:\n    def f(self, a, /, b, *rest, c, **extra):\n        x = 1\n\n        return x\n"
    method = ast.parse(source).body[0].body[0]
    assert function_shape(method) == (5, 4)
