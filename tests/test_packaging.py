"""How agentlab is packaged: its distribution name, one version, imports without fork, pins.

The import name is ``agentlab``; the distribution is ``agentlab-nats``, because ``agentlab``
on PyPI is another project.
"""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import agentlab

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pip's vendored copy of the same parser
    from pip._vendor import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
DISTRIBUTION = "agentlab-nats"
DEV_TOOLS = ("mypy", "ruff", "import-linter", "pytest-xdist")


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _name(requirement: str) -> str:
    return Requirement(requirement).name.lower().replace("_", "-").replace(".", "-")


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            spec = str(req.specifier)
            assert spec.startswith("==") and "," not in spec, f"{path.name}: pin exactly: {line}"
            pins[_name(line)] = spec.removeprefix("==")
    return pins


def test_the_distribution_is_agentlab_nats_and_the_old_name_is_gone():
    assert _project()["name"] == DISTRIBUTION
    assert distribution(DISTRIBUTION).read_text("entry_points.txt")
    with pytest.raises(PackageNotFoundError):  # an old install would shadow the console script
        distribution("agentlab")


def test_the_version_is_written_once_in_agentlab_init():
    project = _project()
    assert "version" not in project and "version" in project.get("dynamic", [])
    hatch = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["version"]
    assert hatch == {"path": "agentlab/__init__.py"}
    assert version(DISTRIBUTION) == agentlab.__version__


_NO_FORK = """\
import asyncio, os
del os.fork, os.register_at_fork  # as on Windows (the stdlib's random needs both gone)
import agentlab
from agentlab.core.bridge import get_bridge
print(agentlab.__version__, get_bridge().run(asyncio.sleep(0, "bridge ok"), operation="probe"))
"""


def test_agentlab_imports_where_os_has_no_register_at_fork():
    done = subprocess.run([sys.executable, "-c", _NO_FORK], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [agentlab.__version__, "bridge", "ok"]


def test_constraints_pin_every_requirement_of_the_test_environment():
    project = _project()
    pins = _pins(ROOT / "constraints.txt")
    assert DISTRIBUTION not in pins and "agentlab" not in pins
    wanted = [*project["dependencies"], *project["optional-dependencies"]["test"],
              *project["optional-dependencies"]["lab"]]
    for requirement in map(Requirement, wanted):
        name = _name(str(requirement))
        assert name in pins, f"constraints.txt misses {requirement}: run `make constraints`"
        assert requirement.specifier.contains(pins[name], prereleases=True), \
            f"constraints.txt pins {name}=={pins[name]}, outside {requirement}: `make constraints`"
    test_extra = {_name(r) for r in project["optional-dependencies"]["test"]}
    assert set(DEV_TOOLS) <= test_extra


def test_binder_pins_the_versions_the_tests_run_with():
    constraints = _pins(ROOT / "constraints.txt")
    for name, pinned in _pins(ROOT / "binder" / "requirements.txt").items():
        assert constraints.get(name) == pinned, \
            f"binder/requirements.txt pins {name}=={pinned}, constraints.txt " \
            f"{constraints.get(name)}"


def test_binder_serves_the_dashboard_app_with_voila():
    """The README's second Binder link opens /voila/render/agentlab/programs/dashboard_app.ipynb:
    Voila's server extension must be in Binder's environment, the notebook in the package
    (tests/test_dashboard_app.py renders that path in Chromium)."""
    pins = _pins(ROOT / "binder" / "requirements.txt")
    assert "voila" in pins, "binder/requirements.txt must install voila (the dashboard link)"
    assert (ROOT / "agentlab" / "programs" / "dashboard_app.ipynb").is_file()
    from agentlab.programs.dashboard import APP_NOTEBOOK

    assert APP_NOTEBOOK == ROOT / "agentlab" / "programs" / "dashboard_app.ipynb"
