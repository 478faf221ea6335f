"""mybinder.org launches the repository straight into notebooks/00-start-here.ipynb.

No container engine runs here, so the Binder build is simulated: a copy of the repository,
a fresh virtualenv with the Python of binder/runtime.txt, ``pip install -r
binder/requirements.txt``, ``binder/postBuild`` run by bash, then notebook 00 executed by a
kernel of that virtualenv started through ``binder/start``, as repo2docker starts the
session. Nothing from this test run's own environment leaks in: the kernel must import
agentlab from the copy and find nats-server in the new virtualenv.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pip's vendored copy of the same parser
    from pip._vendor import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
BINDER = ROOT / "binder"
START_NOTEBOOK = "notebooks/00-start-here.ipynb"
NOTEBOOK_LIMIT = 60.0  # seconds, as for every notebook of the course
BUILD_LIMIT = 180.0    # seconds for the whole simulated build and run


def _runtime() -> tuple[int, int]:
    match = re.fullmatch(r"python-(\d+)\.(\d+)", (BINDER / "runtime.txt").read_text().strip())
    assert match, "binder/runtime.txt must hold one line like python-3.11"
    return int(match.group(1)), int(match.group(2))


def _pins() -> dict[str, Requirement]:
    pins = {}
    for line in (BINDER / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            pins[req.name.lower().replace("_", "-")] = req
    return pins


# ---------------------------------------------------------------------------------------------
# the files


def test_runtime_is_a_python_agentlab_supports():
    major, minor = _runtime()
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert f"{major}.{minor}" in SpecifierSet(requires)


def test_requirements_pin_every_dependency_of_agentlab_and_a_kernel():
    pins = _pins()
    for name, req in pins.items():
        assert str(req.specifier).startswith("=="), f"pin {name} exactly: {req}"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for dependency in map(Requirement, project["dependencies"]):
        name = dependency.name.lower().replace("_", "-")
        assert name in pins, f"binder/requirements.txt misses {dependency}"
        pinned = str(pins[name].specifier).removeprefix("==")
        assert dependency.specifier.contains(pinned), f"{name}=={pinned} breaks {dependency}"
    assert "ipykernel" in pins, "the notebooks need a kernel in the Binder environment"


def test_postbuild_and_start_are_what_repo2docker_expects():
    for name in ("postBuild", "start"):
        script = BINDER / name
        assert os.access(script, os.X_OK), f"binder/{name} must be executable"
        assert script.read_text().startswith("#!/bin/bash\n")
    post = (BINDER / "postBuild").read_text()
    assert re.search(r"^set -e", post, re.M), "postBuild must stop at the first error"
    assert "pip install" in post and " -e ." in post
    code = [line for line in (BINDER / "start").read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]
    assert code[-1] == 'exec "$@"', "binder/start must end in exec \"$@\""


def test_the_readme_badge_opens_notebook_00():
    readme = (ROOT / "README.md").read_text()
    badge = re.search(r"\[!\[Binder: the course\]\(https://mybinder\.org/badge_logo\.svg\)\]"
                      r"\((\S+)\)", readme)
    assert badge, "README.md needs the mybinder.org badge"
    assert badge.group(1).startswith("https://mybinder.org/v2/gh/")
    assert badge.group(1).endswith(f"?urlpath=lab/tree/{START_NOTEBOOK}")
    assert (ROOT / START_NOTEBOOK).is_file()


def test_jetstream_limits_fit_a_binder_session():
    from agentlab.cluster import NodeConfig, node_config_paths

    def mb(size: str) -> float:
        number, unit = re.fullmatch(r"(\d+)([KMG])B?", size.upper()).groups()
        return int(number) * {"K": 1 / 1024, "M": 1, "G": 1024}[unit]

    nodes = [NodeConfig.read(p).settings["jetstream"] for p in node_config_paths()]
    memory = sum(mb(js["max_memory_store"]) for js in nodes)
    files = sum(mb(js["max_file_store"]) for js in nodes)
    # About 2 GB of memory for JupyterLab, the kernel and every server of a session.
    assert memory <= 512, f"the cluster's nodes may keep {memory:.0f} MB in memory"
    assert files <= 2048, f"the cluster's nodes may keep {files:.0f} MB on disk"
    import inspect

    import agentlab

    default = inspect.signature(agentlab.start).parameters["max_memory"].default
    assert mb(default) <= 256
    assert re.search(r'^export GOMEMLIMIT=', (BINDER / "start").read_text(), re.M)


# ---------------------------------------------------------------------------------------------
# the simulated build


def _base_python() -> str:
    wanted = _runtime()
    if sys.version_info[:2] == wanted:
        return getattr(sys, "_base_executable", sys.executable)
    found = shutil.which("python{}.{}".format(*wanted))
    if not found:
        pytest.skip("binder/runtime.txt asks for Python {}.{}, which is not installed "
                    "here".format(*wanted))
    return found


_NOT_COPIED = shutil.ignore_patterns(".git", ".venv", "venv", "__pycache__", ".pytest_cache",
                                     ".hypothesis", ".ruff_cache", "*.egg-info", "build",
                                     "dist", ".ipynb_checkpoints", "node_modules")

_PROBE = """\
import os, sys, shutil, agentlab
from agentlab.cluster import config_dir
from agentlab import find_nats_server
print("BINDER_PROBE", json.dumps({"python": sys.executable, "agentlab": agentlab.__file__,
      "nats_server": str(find_nats_server()), "gomemlimit": os.environ.get("GOMEMLIMIT"),
      "nats_url": os.environ.get("AGENTLAB_NATS_URL"), "configs": str(config_dir())}))
""".replace("import os,", "import json, os,")


@pytest.mark.timeout(BUILD_LIMIT + 60)
def test_a_fresh_binder_build_runs_notebook_00(tmp_path, monkeypatch):
    started = time.monotonic()
    repo = tmp_path / "repo"
    shutil.copytree(ROOT, repo, ignore=_NOT_COPIED, symlinks=True)
    env_dir = tmp_path / "binder-env"
    subprocess.run([_base_python(), "-m", "venv", str(env_dir)], check=True, timeout=120)
    python = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items()
           if k not in ("AGENTLAB_NATS_URL", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"

    def run(*args: str) -> None:
        done = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True,
                              timeout=BUILD_LIMIT)
        assert done.returncode == 0, f"{args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"

    # repo2docker: the requirements first, then postBuild in the repository's root.
    run(str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "-r", "binder/requirements.txt")
    run("bash", "-e", "binder/postBuild")
    built = time.monotonic() - started

    # The session: binder/start, then the kernel of that environment.
    kernels = tmp_path / "jupyter" / "kernels" / "binder-python"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": ["bash", str(repo / "binder" / "start"), str(python), "-m",
                 "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Binder simulation", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))

    nb = nbformat.read(repo / START_NOTEBOOK, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(_PROBE))
    client = NotebookClient(nb, timeout=NOTEBOOK_LIMIT, kernel_name="binder-python",
                            resources={"metadata": {"path": str(repo / "notebooks")}})
    ran_at = time.monotonic()
    client.execute(env={k: v for k, v in env.items() if k != "GOMEMLIMIT"})
    seconds = time.monotonic() - ran_at
    print(f"\nbinder build {built:.1f} s, notebook 00 {seconds:.1f} s")

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    errors = [(o.get("ename"), o.get("evalue")) for o in outputs if o.output_type == "error"]
    assert not errors, errors
    stdout = "".join(o.get("text", "") for o in outputs
                     if o.output_type == "stream" and o.get("name") == "stdout")
    stderr = "".join(o.get("text", "") for o in outputs
                     if o.output_type == "stream" and o.get("name") == "stderr")
    assert "Traceback" not in stderr, stderr
    probe = json.loads(re.search(r"^BINDER_PROBE (.+)$", stdout, re.M).group(1))
    assert Path(probe["python"]).parent == env_dir / "bin"
    assert Path(probe["agentlab"]).is_relative_to(repo), "agentlab must come from the checkout"
    assert Path(probe["nats_server"]).is_relative_to(env_dir)
    assert Path(probe["configs"]) == repo / "deploy" / "nats"
    assert probe["gomemlimit"] == "256MiB", "binder/start did not run before the kernel"
    assert probe["nats_url"] is None
    assert "Ready." in stdout and "✗" not in stdout
    assert seconds < NOTEBOOK_LIMIT
    assert time.monotonic() - started < BUILD_LIMIT
