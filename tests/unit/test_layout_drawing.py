"""README.md's layout drawing against the imports: every arrow it draws is an import the code makes,
and every import the code makes is drawn. The drawing is read, not copied here: a renamed or new
package is checked as soon as the drawing names it."""
from __future__ import annotations

import re

import pytest

from helpers import ROOT
from test_layers import ALLOWED, layer_files, project_imports

NAME = re.compile(r"^[\w.]+(/|\.py)$")
TARGET = re.compile(r"\b[a-z_]+(?:\.[a-z_]+)*\b")


def layout_block(readme: str) -> str:
    """The fenced block under '## Layout'."""
    section = readme.split("\n## Layout\n", 1)[1]
    return section.split("```", 2)[1]


def drawn_arrows(block: str) -> dict[str, set[str]]:
    """{layer: the modules it is drawn to import} for every drawn entry; an entry without an arrow
    is drawn to import nothing. Entries start at column 0 (indented lines continue them); an entry
    may hold several `names -> targets` parts separated by ';'."""
    entries: list[str] = []
    for line in block.splitlines():
        if line.strip():
            if line[0].isspace() and entries:
                entries[-1] += " " + line.strip()
            else:
                entries.append(line.strip())
    arrows: dict[str, set[str]] = {}
    for entry in entries:
        # A ';' starts a new part only before `names ->` (elsewhere it is the description's own).
        for part in re.split(r";\s+(?=(?:[\w.]+(?:/|\.py)\s+)+->)", entry):
            left, arrow, right = part.partition("->")
            names = []
            for token in left.split():
                if not NAME.match(token):
                    break
                names.append(token.rstrip("/"))
            for name in names:
                arrows[name] = set(TARGET.findall(right)) if arrow else set()
    return arrows


def real_imports() -> dict[str, set[str]]:
    """{layer: every project module its files import outside itself}."""
    found: dict[str, set[str]] = {}
    for layer, path in layer_files():
        found.setdefault(layer, set()).update(
            m for m in project_imports(path.read_text()) if m.split(".")[0] != layer)
    return found


def drift(drawn: dict[str, set[str]], real: dict[str, set[str]]) -> list[str]:
    problems = []
    for layer, modules in real.items():
        if layer not in drawn:
            problems.append(f"{layer} is not in the drawing")
            continue
        targets = drawn[layer]
        for module in sorted(modules):
            if not any(module == t or module.startswith(t + ".") for t in targets):
                problems.append(f"{layer} imports {module}, not drawn")
        for target in sorted(targets):
            if not any(m == target or m.startswith(target + ".") for m in modules):
                problems.append(f"{layer} -> {target} is drawn, but no module of {layer} imports it")
    return problems


def test_the_drawing_matches_the_imports():
    drawn = drawn_arrows(layout_block((ROOT / "README.md").read_text(encoding="utf-8")))
    assert drift(drawn, real_imports()) == []


def test_the_drawing_keeps_to_the_declared_layers():
    drawn = drawn_arrows(layout_block((ROOT / "README.md").read_text(encoding="utf-8")))
    for layer in ALLOWED:
        for target in drawn[layer]:
            assert any(target == allowed or target.startswith(allowed + ".") for allowed in ALLOWED[layer])


def test_the_reader_sees_a_drifted_drawing():
    block = ("\nutils/   bottom, no other project import\nmodels/  registry, backbones,\n"
             "         knn; padim/ (fit)   -> utils\nengine/  fit -> utils, models\n"
             "a.py b.py -> engine;  c.py -> engine, deploy\n")
    drawn = drawn_arrows(block)
    assert drawn == {"utils": set(), "models": {"utils"}, "engine": {"utils", "models"}, "a.py": {"engine"},
                     "b.py": {"engine"}, "c.py": {"engine", "deploy"}}
    real = {"utils": set(), "models": {"utils.config"}, "engine": {"utils.io", "models.knn", "deploy.batch_scoring"},
            "a.py": {"engine.cli", "utils.runtime"}, "b.py": {"engine.cli"}, "c.py": {"engine.cli"}}
    assert drift(drawn, real) == ["engine imports deploy.batch_scoring, not drawn", "a.py imports utils.runtime, not drawn",
                                  "c.py -> deploy is drawn, but no module of c.py imports it"]


@pytest.mark.parametrize("text", ["## Layout\n\nno block here\n"])
def test_a_readme_without_the_drawing_fails_loudly(text):
    with pytest.raises(IndexError):
        layout_block(text)
