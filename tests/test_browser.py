"""notebooks/dashboard.ipynb in a real browser, in JupyterLab 4 and in Jupyter Notebook 7:
each front end served headless, Debian's Chromium driven by playwright. Every view renders,
the flow and the consumers change while messages flow, and the dashboard's "publish task"
button makes a new task appear.

Both front ends run the same checks through their shared application object
(``window.jupyterapp``, exposed by ``expose_app_in_browser``): its command registry runs all
cells and its current widget tells when the kernel is idle, so no menu or toolbar layout,
which differs between the two, is involved.

Needs ``chromium`` on PATH (``.ci/run`` installs it with apt) and the ``test`` extra
(jupyterlab, notebook, playwright). Screenshots of a failure are saved and named in the
message.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "dashboard.ipynb"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Without the background-networking flags Chromium reaches for the network at start-up.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
TOKEN = "agentlab-browser-test"
VIEWS = ("flowview", "consumersview", "streamsview", "topologyview")

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed "
                       "(apt-get install -y chromium; .ci/run does it)"),
]


@dataclass(frozen=True)
class FrontEnd:
    """One Jupyter front end: how to serve it and where it shows a notebook."""

    module: str             # python -m <module> serves it
    app: str                # its server extension class, which takes the options below
    app_name: str           # the name its page gives its application object
    notebook_path: str      # the page of a notebook, {name} filled in
    options: tuple[str, ...] = ()


FRONT_ENDS = {
    "jupyterlab": FrontEnd("jupyterlab", "LabApp", "JupyterLab", "/lab/tree/{name}?reset",
                           ("--LabApp.news_url=",)),
    "notebook": FrontEnd("notebook", "JupyterNotebookApp", "Jupyter Notebook",
                         "/notebooks/{name}"),
}


@dataclass(frozen=True)
class Served:
    front_end: FrontEnd
    base: str               # http://127.0.0.1:<port>

    def notebook_url(self, name: str) -> str:
        path = self.front_end.notebook_path.format(name=name)
        return f"{self.base}{path}{'&' if '?' in path else '?'}token={TOKEN}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, seconds: float, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except Exception:
            time.sleep(0.3)
    raise AssertionError(f"The Jupyter server did not answer at {url} within {seconds:.0f} s; "
                         f"its log: {log}")


def _settings(directory: Path) -> None:
    """Render every cell (no windowing), and no news pop-up over the notebook."""
    for plugin, values in {
            "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
            "@jupyterlab/apputils-extension/notification": {"fetchNews": "false",
                                                            "checkForUpdates": False}}.items():
        path = directory / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


@pytest.fixture(params=list(FRONT_ENDS), ids=list(FRONT_ENDS))
def jupyter(request, tmp_path):
    front_end = FRONT_ENDS[request.param]
    pytest.importorskip(front_end.module)
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(NOTEBOOK, work / NOTEBOOK.name)
    _settings(tmp_path / "settings")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "AGENTLAB_NATS_URL"}
    env["JUPYTER_CONFIG_DIR"] = str(tmp_path / "config")
    env["JUPYTER_RUNTIME_DIR"] = str(tmp_path / "runtime")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    app = front_end.app
    log_path = tmp_path / "jupyter.log"
    log = open(log_path, "w")
    server = subprocess.Popen(
        [sys.executable, "-m", front_end.module, "--no-browser", f"--port={port}",
         "--ServerApp.ip=127.0.0.1", "--ServerApp.port_retries=0",
         f"--IdentityProvider.token={TOKEN}",
         f"--ServerApp.root_dir={work}", "--allow-root", "--ServerApp.disable_check_xsrf=True",
         f"--{app}.user_settings_dir={tmp_path / 'settings'}",
         f"--{app}.workspaces_dir={tmp_path / 'workspaces'}",
         f"--{app}.expose_app_in_browser=True", *front_end.options],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{base}/api?token={TOKEN}", 90, log_path)
        yield Served(front_end, base)
    finally:
        stop_jupyter(base, server)
        log.close()


def stop_jupyter(base: str, server: subprocess.Popen) -> None:
    """Stop a Jupyter server the test started: its kernels politely first (each kernel's
    embedded nats-server with it), then the server, killed if it does not stop in 15 s."""
    _shutdown_kernels(base)
    server.terminate()
    try:
        server.wait(15)
    except subprocess.TimeoutExpired:
        server.kill()


def _shutdown_kernels(base: str) -> None:
    """Stop the notebook's kernel (and with it its embedded nats-server) politely."""
    try:
        with urllib.request.urlopen(f"{base}/api/kernels?token={TOKEN}", timeout=5) as r:
            kernels = json.load(r)
        for kernel in kernels:
            request = urllib.request.Request(f"{base}/api/kernels/{kernel['id']}?token={TOKEN}",
                                             method="DELETE")
            urllib.request.urlopen(request, timeout=10)
    except Exception:
        pass


def _view_html(page, view: str) -> str:
    return page.eval_on_selector(f".agentlab-{view} .agentlab-view",
                                 "e => e.innerHTML") or ""


def _changes(page, view: str, seconds: float) -> bool:
    first = _view_html(page, view)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.3)
        if _view_html(page, view) != first:
            return True
    return False


def test_dashboard_notebook_in_chromium(jupyter, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                    headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            _run(page, jupyter)
        except BaseException as failure:
            page.screenshot(path=str(shots / f"{jupyter.front_end.module}-failure.png"),
                            full_page=True)
            raise AssertionError(f"{jupyter.front_end.module}: {failure}\n"
                                 f"screenshots of the failure: {shots}") from failure
        finally:
            browser.close()


class _Clock:
    """Prints each step with the seconds since the run began (shown with pytest -s)."""

    def __init__(self, front_end: str):
        self.front_end, self.started = front_end, time.monotonic()

    def step(self, text: str) -> None:
        print(f"[{self.front_end} {time.monotonic() - self.started:6.1f}s] {text}", flush=True)


# "dialog" while a dialog (the kernel chooser of a fresh settings directory) waits for an
# answer, "idle" once the notebook's kernel is started and idle, else null.
_KERNEL_STATE = """() => {
    if (document.querySelector('.jp-Dialog')) return 'dialog';
    const widget = window.jupyterapp && window.jupyterapp.shell.currentWidget;
    const session = widget && widget.sessionContext && widget.sessionContext.session;
    return session && session.kernel && session.kernel.status === 'idle' ? 'idle' : null;
}"""


def _wait_for_idle_kernel(page, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        state = page.wait_for_function(
            _KERNEL_STATE, timeout=max(1, deadline - time.monotonic()) * 1000).json_value()
        if state == "idle":
            return
        page.click(".jp-Dialog .jp-Dialog-button.jp-mod-accept")  # this venv's kernel
        page.wait_for_selector(".jp-Dialog", state="detached", timeout=10_000)


def _run(page, served: Served) -> None:
    clock = _Clock(served.front_end.module)
    clock.step("opening the notebook")
    page.goto(served.notebook_url(NOTEBOOK.name))
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
    page.wait_for_function("() => !!window.jupyterapp", timeout=60_000)
    # The page is the front end this run is for (a redirect would test the other one twice).
    assert page.evaluate("() => window.jupyterapp.name") == served.front_end.app_name
    _wait_for_idle_kernel(page, 90)
    clock.step("kernel idle; running all cells")
    # Not awaited: the command's promise settles only when every cell has finished.
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells');"
                  " return true; }")

    # All cells ran: the last one prints the Mermaid export of the first task's flow.
    page.wait_for_selector(".jp-OutputArea-output:has-text('sequenceDiagram')", timeout=150_000)
    errors = page.query_selector_all(".jp-OutputArea-output[data-mime-type="
                                     "'application/vnd.jupyter.error']")
    assert not errors, [e.inner_text()[:500] for e in errors]

    clock.step("all cells ran")
    # Every view rendered, none failed to.
    for view in VIEWS:
        page.wait_for_selector(f".agentlab-{view} .al-view", timeout=30_000)
    assert not page.query_selector_all(":text('Error displaying widget')")
    assert "Message flow" in _view_html(page, "flowview")
    assert "AGENT_TASKS" in _view_html(page, "streamsview")
    assert "<svg" in _view_html(page, "topologyview")

    clock.step("every view rendered")
    # Live: the notebook keeps a task a second flowing; the flow and the consumers move.
    assert _changes(page, "flowview", 15), "FlowView did not change while messages flowed"
    assert _changes(page, "consumersview", 15), "ConsumersView did not change"

    clock.step("flow and consumers are live")
    # The "publish task" button: a task with a fresh title appears in the flow.
    title = f"Browser task {uuid.uuid4().hex[:6]}"
    field = page.locator(".agentlab-task-title input")
    field.fill(title)
    field.press("Enter")
    time.sleep(0.5)  # let the new value reach the kernel before the click
    page.locator("button.agentlab-publish").click()
    page.wait_for_function(
        "t => { const e = document.querySelector('.agentlab-flowview .agentlab-view');"
        " return e && e.innerHTML.includes(t); }", arg=title, timeout=30_000)
    clock.step("the published task appeared")
    status = page.inner_text(".agentlab-status")
    assert f"published task '{title}'" in status, status
