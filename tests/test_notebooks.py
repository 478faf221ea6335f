"""The course in notebooks/ runs top to bottom, unattended, in a fresh kernel, in under 60 s.

Every course notebook (notebooks/index.ipynb and the numbered ones) is executed with nbclient
in a real ipykernel running this venv's Python: first each on an embedded server of its own
(the default), then each against a separately started server given by AGENTLAB_NATS_URL,
unchanged and one after another, so later notebooks meet the streams and consumers that
earlier ones left behind. Any error output fails, and so does a traceback on stderr. On its
own server, each numbered lesson must also display a live view whose content changes while it
runs, and no view may name a consumer by its generated name where its participant is known.

The committed files are checked too: outputs stripped, learning goals and navigation links
at the top, links that lead to files that exist, an exercise with a solution that runs.
Outputs are the convention's one rule for every notebook in the repository (the course, the
dashboard, the app `agentlab dashboard` serves, the test notebooks): committed without
outputs or widget state. The course site (`make docs`) carries the outputs instead, each
live view's final snapshot among them; tests/test_docs.py checks the site.

An exercise that checks itself (agentlab.course) is read by its verdicts: run unattended, the
exercise's cells still hold the learner's placeholder, so their check says "not done yet";
the solution's cell passes its check; no check anywhere says "failed". (tests/
test_course_checks.py gives each exercise a wrong answer, which must fail with a hint.)
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import nbformat
import pytest
from nbclient import NotebookClient

from agentlab.course import CHECK_MIME
from helpers import credentials_env, this_venv_kernel

ROOT = Path(__file__).resolve().parent.parent
COURSE = ROOT / "notebooks"
# index plus "NN-name": ignores stray copies such as the screenshot tool's temporary
# "screenshot-<pid>-00-start-here.ipynb", which it writes next to the original.
COURSE_NAME = re.compile(r"^(index|\d\d-[a-z0-9-]+)\.ipynb$")
NOTEBOOKS = sorted(p for p in COURSE.glob("*.ipynb") if COURSE_NAME.match(p.name))
NUMBERED = [p for p in NOTEBOOKS if p.name[0].isdigit()]
TIME_LIMIT = 60.0  # seconds per notebook, kernel start included (the course promise)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")

# jupyter_client runs a kernelspec whose argv[0] is one of these with sys.executable instead.
_PYTHON_ALIASES = {"python", f"python{sys.version_info[0]}",
                   "python{}.{}".format(*sys.version_info[:2])}


def _ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


# ---------------------------------------------------------------------------------------------
# the kernel: this venv's Python (as in test_notebook_asyncio_run.py)


@pytest.fixture
def kernel_name(tmp_path, monkeypatch) -> str:
    """A kernelspec that runs this interpreter (see helpers.this_venv_kernel)."""
    return this_venv_kernel(tmp_path, monkeypatch, "agentlab-course-python")


def _kernel_env(nats_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "AGENTLAB_NATS_URL"}
    if nats_url:
        env["AGENTLAB_NATS_URL"] = nats_url
        env.update(credentials_env(nats_url))  # the server admits only its login
    return env


# ---------------------------------------------------------------------------------------------
# running a notebook

# agentlab.start() with or without arguments (tenants=..., cluster=3), at the start of a line.
_STARTS_LAB = re.compile(r"^\s*\w+\s*=\s*agentlab\.start\(", re.MULTILINE)
_PROBE_KERNEL = 'import sys\nprint("KERNEL_PYTHON", sys.executable)'
_PROBE_LAB = '_course_lab = lab\nprint("LAB_STARTED", lab.url, lab.embedded)'
_PROBE_END = ('import agentlab as _agentlab\n'
              'print("LAB_AT_END", _agentlab.current_lab() is None,\n'
              '      _course_lab.is_closed if "_course_lab" in globals() else None,\n'
              '      _course_lab.server.is_running if "_course_lab" in globals()'
              ' and _course_lab.server else None)')


# The kernel's records of its live views (agentlab.widgets.view_records: the widget's model
# id, how often its HTML changed, how many different contents it showed, clocks aside) and,
# for each view of an observer, the generated consumer names its flow, topology or consumers
# table still shows although the observer knows their participant.
_PROBE_VIEWS = '''
import json as _json
from agentlab.widgets import get_pump as _get_pump, view_records as _view_records
_generated = []
for _view in _get_pump().views + [_v for _v in globals().values()
                                  if hasattr(_v, "observer") and hasattr(_v, "record")]:
    _obs = getattr(_view, "observer", None)
    if _obs is None:
        continue
    _owned = set(_obs.recorder.owners)
    _shown = set(_obs.flow(limit=500).lifelines()) | {n for _, n in _obs.topology().nodes}
    _shown |= {r.name for r in _obs.state().consumer_rows()} - set(_obs.state().owners)
    _generated += sorted(_owned & _shown)
print("VIEW_RECORDS", _json.dumps([r.as_dict() for r in _view_records()]))
print("GENERATED_NAMES", _json.dumps(sorted(set(_generated))))
'''


def _instrument(nb: nbformat.NotebookNode) -> None:
    """Add, in memory only, cells that report the kernel's Python, its live views and how the
    lab ended."""
    start = next((i for i, c in enumerate(nb.cells)
                  if c.cell_type == "code" and _STARTS_LAB.search(c.source)), None)
    if start is not None:
        nb.cells.insert(start + 1, nbformat.v4.new_code_cell(_PROBE_LAB))
    nb.cells.insert(0, nbformat.v4.new_code_cell(_PROBE_KERNEL))
    nb.cells.append(nbformat.v4.new_code_cell(_PROBE_VIEWS))
    nb.cells.append(nbformat.v4.new_code_cell(_PROBE_END))


# Notebooks that need an optional extra: on Python 3.10 the Synadia SDKs do not install.
NEEDS = {"11-other-agents-other-languages.ipynb": "synadia_ai",
         "12-an-llm-joins-the-organisation.ipynb": "mcp"}
# Notebooks that need agentlab's own server, which AGENTLAB_NATS_URL replaces: the reason.
OWN_SERVER_ONLY = {"14-your-browser-as-an-agent.ipynb":
                   "needs agentlab's own server: a WebSocket listener"}


def _run(path: Path, kernel: str, nats_url: str | None) -> tuple[nbformat.NotebookNode, float]:
    needed = NEEDS.get(path.name)
    if needed and importlib.util.find_spec(needed) is None:
        pytest.skip(f"{path.name} needs the {needed!r} module: an optional extra of agentlab "
                    "(make install has them all; the Synadia SDKs need Python 3.11+)")
    nb = nbformat.read(path, as_version=4)
    _instrument(nb)
    client = NotebookClient(nb, timeout=TIME_LIMIT, kernel_name=kernel,
                            resources={"metadata": {"path": str(COURSE)}})
    started = time.monotonic()
    client.execute(env=_kernel_env(nats_url))  # raises CellExecutionError at the first error
    return nb, time.monotonic() - started


def _outputs(nb: nbformat.NotebookNode) -> list[tuple[str, dict]]:
    return [(c.source, o) for c in nb.cells if c.cell_type == "code" for o in c.outputs]


def _stream(nb: nbformat.NotebookNode, name: str) -> str:
    return "".join(o.get("text", "") for _, o in _outputs(nb)
                   if o.output_type == "stream" and o.get("name") == name)


def _check_ran_cleanly(nb: nbformat.NotebookNode, path: Path, seconds: float,
                       external: bool) -> None:
    errors = [(src[:60], o.get("ename"), o.get("evalue")) for src, o in _outputs(nb)
              if o.output_type == "error"]
    assert not errors, f"{path.name}: error outputs {errors}"
    stderr = _stream(nb, "stderr")
    assert "Traceback" not in stderr, f"{path.name} printed a traceback on stderr:\n{stderr}"
    assert seconds < TIME_LIMIT, f"{path.name} took {seconds:.1f} s (limit {TIME_LIMIT:.0f} s)"

    out = _stream(nb, "stdout")
    kernel = re.search(r"^KERNEL_PYTHON (.+)$", out, re.MULTILINE)
    assert kernel and kernel.group(1).strip() == sys.executable, "the kernel is not this venv"
    started = re.search(r"^LAB_STARTED (\S+) (True|False)$", out, re.MULTILINE)
    end = re.search(r"^LAB_AT_END (\S+) (\S+) (\S+)$", out, re.MULTILINE)
    assert end, f"{path.name}: the closing probe did not run"
    if started is None:  # the index only checks the environment
        assert path.name == "index.ipynb", f"{path.name} never calls agentlab.start()"
        return
    embedded = started.group(2) == "True"
    assert embedded is not external, f"{path.name} used {started.group(1)}"
    # The notebook closed its lab (and so stopped the server it started), by itself.
    assert end.groups() == ("True", "True", "False" if embedded else "None"), \
        f"{path.name} did not close its lab: current_lab() is None, closed, server running = " \
        f"{end.groups()}"


WIDGET = "application/vnd.jupyter.widget-view+json"


def _printed(nb: nbformat.NotebookNode, tag: str) -> list:
    found = re.search(rf"^{tag} (.*)$", _stream(nb, "stdout"), re.MULTILINE)
    assert found, f"the probe printed no {tag}"
    return json.loads(found.group(1))


def _check_live_views(nb: nbformat.NotebookNode, path: Path) -> None:
    """A numbered lesson displays a live view whose content changes while it runs, and no
    view names a consumer by its generated name where its participant is known."""
    records = _printed(nb, "VIEW_RECORDS")
    assert records, f"{path.name} made no live view"
    displayed = {o["data"][WIDGET]["model_id"] for _, o in _outputs(nb)
                 if o.output_type in ("display_data", "execute_result")
                 and WIDGET in o.get("data", {})}
    shown = [r for r in records if r["model_id"] in displayed]
    assert shown, f"{path.name} made live views {records} but displayed none of them"
    assert any(r["contents"] >= 2 for r in shown), \
        f"{path.name}: no displayed view changed while the notebook ran: {shown}"
    generated = _printed(nb, "GENERATED_NAMES")
    assert not generated, (f"{path.name}: views show consumers by their generated names "
                           f"{generated} although their participants are known")


def _verdicts(cell: nbformat.NotebookNode) -> list[dict]:
    """The exercise checks a cell showed (agentlab.course's CheckResult, as JSON)."""
    return [o["data"][CHECK_MIME] for o in cell.get("outputs", [])
            if o.get("output_type") in ("execute_result", "display_data")
            and CHECK_MIME in o.get("data", {})]


def _check_exercise_verdicts(nb: nbformat.NotebookNode, path: Path) -> None:
    if not any("agentlab.course" in c.source for c in nb.cells if c.cell_type == "code"):
        return  # an exercise that does not check itself (yet)
    exercise = next(i for i, c in enumerate(nb.cells)
                    if c.cell_type == "markdown" and "## Exercise" in c.source)
    solution = next(i for i, c in enumerate(nb.cells) if i > exercise
                    and c.cell_type == "code" and "%run -i solutions/" in c.source)
    failed = [(c.source[:40], v["message"]) for c in nb.cells for v in _verdicts(c)
              if v["status"] == "failed"]
    assert not failed, f"{path.name}: a check failed where nobody answered wrong: {failed}"
    before = [v for c in nb.cells[exercise:solution] for v in _verdicts(c)]
    assert before and all(v["status"] == "not done" for v in before), \
        f"{path.name}: the exercise, left as it is, should say 'not done yet': {before}"
    after = _verdicts(nb.cells[solution])
    assert after and all(v["passed"] for v in after), \
        f"{path.name}: the solution did not pass its check: {after}"


# ---------------------------------------------------------------------------------------------
# the committed files


def test_the_course_is_all_there():
    names = [p.name for p in NOTEBOOKS]
    course = ("index", "00-start-here", "01-subjects-and-wildcards",
              "02-queue-groups-and-request-reply", "03-durable-tasks-ceo-to-cto", "04-meetings",
              "05-async-tool-execution", "06-retries-and-dead-letters", "07-tenant-isolation",
              "08-cluster-and-failover", "09-observability-and-performance",
              "10-bring-your-own-agent", "11-other-agents-other-languages",
              "12-an-llm-joins-the-organisation", "14-your-browser-as-an-agent")
    missing = [name for name in course if f"{name}.ipynb" not in names]
    assert not missing, f"the course lacks {missing}"
    index = nbformat.read(COURSE / "index.ipynb", as_version=4)
    linked = {target for c in index.cells if c.cell_type == "markdown"
              for target in LINK.findall(c.source)}
    missing = [p.name for p in NUMBERED if p.name not in linked]
    assert not missing, f"index.ipynb does not list {missing}"


# Every notebook the repository holds; the screenshot tool's stray copies are ignored by git.
ALL_NOTEBOOKS = sorted(p for p in [*COURSE.glob("*.ipynb"), *ROOT.glob("agentlab/**/*.ipynb"),
                                   *ROOT.glob("tests/notebooks/*.ipynb")]
                       if not p.name.startswith("screenshot-"))


@pytest.mark.parametrize("path", ALL_NOTEBOOKS,
                         ids=[p.relative_to(ROOT).as_posix() for p in ALL_NOTEBOOKS])
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
             and (c.outputs or c.execution_count is not None)]
    assert not dirty, (f"{path.name}: strip the outputs of cells {dirty} before committing "
                       "(the course site, `make docs`, is where the outputs are)")
    assert "widgets" not in nb.metadata, f"{path.name}: strip the saved widget state"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_goals_and_navigation(path):
    nb = nbformat.read(path, as_version=4)
    top, bottom = nb.cells[0], nb.cells[-1]
    assert top.cell_type == "markdown" and "Learning goals" in top.source, \
        f"{path.name}: the first cell must be markdown with the learning goals"
    assert re.search(r"^# \S", top.source, re.MULTILINE), \
        f"{path.name}: the first cell needs a title"
    for where, cell in (("first", top), ("last", bottom)):
        assert cell.cell_type == "markdown" and LINK.search(cell.source), \
            f"{path.name}: the {where} cell must hold the navigation links"
    if path.name != "index.ipynb":
        assert "(index.ipynb)" in top.source and "(index.ipynb)" in bottom.source
    broken = []
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for target in LINK.findall(cell.source):
            url = urlparse(target)
            if url.scheme or target.startswith("#"):
                continue
            if not (COURSE / unquote(url.path)).exists():
                broken.append(target)
    assert not broken, f"{path.name} links to files that do not exist: {broken}"


@pytest.mark.parametrize("path", NUMBERED, ids=_ids(NUMBERED))
def test_exercise_with_a_solution(path):
    nb = nbformat.read(path, as_version=4)
    exercise = next((i for i, c in enumerate(nb.cells)
                     if c.cell_type == "markdown" and "## Exercise" in c.source), None)
    assert exercise is not None, f"{path.name} has no '## Exercise' section"
    solution = f"solutions/{path.stem}.py"
    runs = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
            and f"%run -i {solution}" in c.source]
    assert (COURSE / solution).is_file(), f"{solution} is missing"
    assert runs and runs[0] > exercise, f"{path.name} must run {solution} after its exercise"


# ---------------------------------------------------------------------------------------------
# running them


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_runs_top_to_bottom_on_its_own_server(path, kernel_name):
    nb, seconds = _run(path, kernel_name, nats_url=None)
    print(f"{path.name}: {seconds:.1f} s on an embedded server")
    _check_ran_cleanly(nb, path, seconds, external=False)
    _check_exercise_verdicts(nb, path)
    if path in NUMBERED:
        _check_live_views(nb, path)


@pytest.fixture(scope="module")
def external_server():
    """A server the notebooks did not start, shared by all of them, as a learner's would be."""
    from agentlab import EmbeddedServer

    with EmbeddedServer(name="course-external") as server:
        yield server


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_runs_unchanged_against_agentlab_nats_url(path, kernel_name, external_server):
    if path.name in OWN_SERVER_ONLY:
        pytest.skip(f"{path.name} {OWN_SERVER_ONLY[path.name]}")
    nb, seconds = _run(path, kernel_name, nats_url=external_server.url)
    print(f"{path.name}: {seconds:.1f} s against {external_server.url}")
    _check_ran_cleanly(nb, path, seconds, external=True)
    _check_exercise_verdicts(nb, path)
    assert external_server.is_running, f"{path.name} stopped a server it did not start"
    if path.name == "00-start-here.ipynb":
        out = _stream(nb, "stdout")
        assert f"server: {external_server.url} (AGENTLAB_NATS_URL is set" in out
        html = [o["data"]["text/html"] for _, o in _outputs(nb)
                if o.output_type == "execute_result" and "text/html" in o.get("data", {})]
        assert any(external_server.url in h and "external" in h for h in html), \
            "00 did not show the lab on the external server"
        # What the organisation declared stays on the server the learner owns.
        import agentlab

        with agentlab.Client.open(external_server.url, name="course-check") as check:
            streams = {info.config.name for info in check.js.streams()}
            assert {"AGENT_TASKS", "AGENT_EVENTS"} <= streams
            consumers = {info.name for info in check.js.consumers("AGENT_TASKS")}
            assert {"ceo", "cto", "cfo"} <= consumers
