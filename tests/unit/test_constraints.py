"""constraints.txt pins every requirement (and what they pull in) to one tested version; CI installs
with it. Refreshed by tools/refresh_constraints.sh (docs/guide.md, Tests and CI)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib import metadata

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from helpers import ROOT

REFRESH = "run bash tools/refresh_constraints.sh"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)$")


def requirements() -> list[Requirement]:
    lines = (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
    return [Requirement(line.split("#")[0]) for line in lines if line.split("#")[0].strip()]


def pins(text: str | None = None) -> dict[str, Version]:
    """constraints.txt as {canonical name: version}; a line that is not `name==version` fails."""
    if text is None:
        text = (ROOT / "constraints.txt").read_text(encoding="utf-8")
    found: dict[str, Version] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = PIN.match(line.strip())
        assert match, f"constraints.txt: {line!r} is not name==version"
        name = canonicalize_name(match.group(1))
        assert name not in found, f"constraints.txt pins {name} twice"
        found[name] = Version(match.group(2))
    return found


def unpinned_requirements(pinned: dict[str, Version]) -> list[str]:
    """Requirements without a pin, or whose pin is outside the requirement's range."""
    bad = []
    for requirement in requirements():
        version = pinned.get(canonicalize_name(requirement.name))
        if version is None or not requirement.specifier.contains(version, prereleases=True):
            bad.append(f"{requirement} (pinned: {version})")
    return bad


def test_every_requirement_is_pinned_within_its_range() -> None:
    bad = unpinned_requirements(pins())
    assert not bad, f"{REFRESH}: " + ", ".join(bad)


def test_a_requirement_without_a_pin_is_seen() -> None:
    pinned = pins()
    del pinned["numpy"]
    assert any(line.startswith("numpy") for line in unpinned_requirements(pinned))
    with pytest.raises(AssertionError, match="not name==version"):
        pins("numpy>=1.24\n")


def test_ci_installs_with_the_constraints() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "pip install --quiet -r requirements.txt -c constraints.txt" in ci
    # README's first command stays the plain one.
    assert "pip install -r requirements.txt " in (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.skipif(os.environ.get("CI") != "true", reason="CI's environment is installed from the constraints")
def test_ci_environment_has_the_pinned_versions() -> None:
    installed = {canonicalize_name(d.metadata["Name"]): Version(d.version) for d in metadata.distributions()}
    differ = [f"{name}=={version} (installed: {installed.get(name)})" for name, version in pins().items()
              if installed.get(name) != version]
    assert not differ, ", ".join(differ)


def test_fastapi_test_client_imports_without_a_warning() -> None:
    # Starlette's TestClient warns when it finds httpx but not httpx2; the pinned set has both.
    if os.environ.get("CI") != "true":
        try:
            metadata.version("httpx2")
        except metadata.PackageNotFoundError:
            pytest.skip(f"httpx2 is not installed here: pip install -r requirements.txt -c constraints.txt")
    done = subprocess.run([sys.executable, "-W", "error", "-c", "import fastapi.testclient"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr.strip().splitlines()[-1:]
