"""The browser agent: a learner's browser tab works a role's queue over NATS WebSocket.

* the committed front end (agentlab/widgets/assets/browser_agent.js) is what
  js/browser-agent's lock file builds, and loads nothing from anywhere else;
* the embedded server's WebSocket listener admits the widget's own login only, over
  WebSocket only, for that role's queue only (checked with nats-py's WebSocket transport);
  the lab's login is refused there, and removing the widget's login disconnects it;
* in Chromium, JupyterLab runs a notebook with two BrowserAgent widgets, one reaching the
  server directly and one through jupyter-server-proxy on the notebook server's origin; each
  takes a task the CEO delegated, and completes it from the page: checked from this process,
  the completion is on ``tasks.completed`` once, recorded once in TASK_LEDGER, acked; the
  notebook saved with its widget state holds no password.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from helpers import stored, wait_for

ROOT = Path(__file__).resolve().parent.parent
JS_SOURCE = ROOT / "js" / "browser-agent"
BUNDLE = ROOT / "agentlab" / "widgets" / "assets" / "browser_agent.js"
LICENSES = BUNDLE.with_name("browser_agent.LICENSES.txt")
# nats-py's WebSocket transport passes aiohttp a float timeout, which aiohttp 3.10+ deprecates.
pytestmark = pytest.mark.filterwarnings(
    "ignore:parameter 'timeout' of type 'float' is deprecated:DeprecationWarning")


# -- the bundle --------------------------------------------------------------------------
@pytest.mark.unit
def test_the_committed_bundle_is_what_the_lock_file_builds():
    node = shutil.which("node")
    if node is None or not (JS_SOURCE / "node_modules" / "esbuild").is_dir():
        pytest.skip("needs node and `npm ci --prefix js/browser-agent`")
    lock = json.loads((JS_SOURCE / "package-lock.json").read_text())
    installed = json.loads((JS_SOURCE / "node_modules" / "@nats-io" / "nats-core" /
                            "package.json").read_text())["version"]
    assert lock["packages"]["node_modules/@nats-io/nats-core"]["version"] == installed, \
        "node_modules is not what the lock file pins: npm ci --prefix js/browser-agent"
    done = subprocess.run([node, "build.mjs", "--check"], cwd=JS_SOURCE, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr + done.stdout


_URLS = """
import { serverUrl, taskProblem, retryDelayMs } from "./src/browser_agent.js";
const model = (state) => ({ get: (key) => ({ websocket_port: 4300, ...state })[key] });
const at = (href) => new URL(href);
console.log(JSON.stringify({
  local: serverUrl(model({ connect: "auto", proxy_prefix: "" }), at("http://localhost:8888/lab")),
  hub: serverUrl(model({ connect: "auto", proxy_prefix: "/user/ada/" }),
                 at("https://hub.example.org/user/ada/lab")),
  remote: serverUrl(model({ connect: "auto", proxy_prefix: "" }), at("http://10.0.0.5:8888/")),
  direct: serverUrl(model({ connect: "direct", proxy_prefix: "/user/ada/" }),
                    at("https://hub.example.org/user/ada/lab")),
  bad: [taskProblem({ id: "a.b" }), taskProblem(null),
        taskProblem({ id: "x", org: "system", role: "cto", requested_by: "ceo", title: "t" }),
        taskProblem({ id: "x", org: "acme", role: "cto", requested_by: "ceo", title: "t" })],
  delays: [1, 2, 3, 10].map(retryDelayMs),
}));
"""


@pytest.mark.unit
def test_the_page_reaches_the_server_directly_or_through_the_notebook_servers_proxy():
    node = shutil.which("node")
    if node is None or not (JS_SOURCE / "node_modules" / "@nats-io").is_dir():
        pytest.skip("needs node and `npm ci --prefix js/browser-agent`")
    done = subprocess.run([node, "--input-type=module", "-e", _URLS], cwd=JS_SOURCE,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["local"] == {"url": "ws://127.0.0.1:4300", "via": "direct"}
    assert out["hub"] == {"url": "wss://hub.example.org/user/ada/proxy/4300/", "via": "proxy"}
    assert out["remote"] == {"url": "ws://10.0.0.5:8888/proxy/4300/", "via": "proxy"}
    assert out["direct"] == {"url": "ws://127.0.0.1:4300", "via": "direct"}
    assert out["bad"][0] == "its id cannot key the ledger" and out["bad"][1]
    assert out["bad"][2] == "org 'system' is reserved" and out["bad"][3] is None
    assert out["delays"] == [500, 1000, 2000, 30000]  # workloop.retry_delay, in ms


@pytest.mark.unit
def test_the_bundle_loads_nothing_from_elsewhere_and_names_its_licenses():
    text = BUNDLE.read_text(encoding="utf-8")
    # No URL with a host (a CDN import, a fetched script); the bare scheme strings of the
    # client's URL parsing are fine.
    assert not re.findall(r"https?://[A-Za-z0-9]", text)
    assert not re.search(r"""\bimport\s*\(|\bimport\s*["'`]|from\s*["'`]https?:""", text)
    assert "export{" in text.replace(" ", "") and "default" in text
    banner = text.splitlines()[0]
    for package in ("@nats-io/nats-core", "@nats-io/jetstream"):
        assert package in banner
        assert package in LICENSES.read_text(encoding="utf-8")
    assert "Apache License" in LICENSES.read_text(encoding="utf-8")


# -- the server's WebSocket listener and the widget's login -------------------------------
@pytest.fixture
def ws_lab(monkeypatch):
    import agentlab
    import agentlab.lab
    from agentlab.org import Organisation

    monkeypatch.delenv("AGENTLAB_NATS_URL", raising=False)
    monkeypatch.setattr(agentlab.lab, "_current", None)  # the session's lab is kept
    lab = agentlab.start(websocket=True, fresh=True, name="ws-lab")
    org = Organisation(lab, instances={"cto": 0, "cfo": 0}).start()
    try:
        yield lab, org
    finally:
        org.stop()
        lab.close()


def test_start_websocket_needs_the_embedded_server(monkeypatch):
    import agentlab

    monkeypatch.setenv("AGENTLAB_NATS_URL", "nats://127.0.0.1:1")
    with pytest.raises(ValueError, match=r"websocket=True .*\$AGENTLAB_NATS_URL"):
        agentlab.start(websocket=True)


def test_a_lab_without_websocket_says_how_to_get_one(lab):
    from agentlab.widgets.browser_agent import BrowserAgent, NoWebSocket

    with pytest.raises(NoWebSocket, match=r"agentlab.start\(websocket=True, fresh=True\)"):
        BrowserAgent(lab, role="cto")


def test_the_widget_login_is_scoped_to_its_role_and_to_websocket(ws_lab):
    import nats

    from agentlab.widgets import BrowserAgent

    lab, org = ws_lab
    agent = BrowserAgent(org, role="cto")
    login = agent._scoped.login
    assert login.password not in json.dumps(agent.get_state(), default=str)
    assert login.password not in repr(agent)
    ws_url = lab.websocket_url
    assert ws_url == f"ws://127.0.0.1:{agent.websocket_port}"

    async def check() -> None:
        errors: list[str] = []

        async def on_error(error: Exception) -> None:
            errors.append(str(error))

        quiet = {"allow_reconnect": False, "max_reconnect_attempts": 0, "connect_timeout": 5}
        # The lab's login may do anything, so never from a browser; the widget's only there.
        with pytest.raises(Exception, match="Authorization Violation"):
            await nats.connect(ws_url, **lab.login(), error_cb=on_error, **quiet)
        with pytest.raises(Exception, match="Authorization Violation"):
            await nats.connect(lab.url, user=login.user, password=login.password,
                               error_cb=on_error, **quiet)
        closed = asyncio.Event()

        async def on_closed() -> None:
            closed.set()

        nc = await nats.connect(ws_url, user=login.user, password=login.password,
                                inbox_prefix=agent._inbox_prefix, error_cb=on_error,
                                closed_cb=on_closed, **quiet)
        reply = await nc.request("$JS.API.CONSUMER.INFO.AGENT_TASKS.cto", b"", timeout=5)
        assert json.loads(reply.data)["name"] == "cto"
        for forbidden in ("$JS.API.CONSUMER.MSG.NEXT.AGENT_TASKS.cfo", "genbrain.agents.cto.tasks",
                          "$KV.TASK_LEDGER.globex.x", "$JS.API.STREAM.PURGE.AGENT_TASKS"):
            await nc.publish(forbidden, b"{}")
        await nc.subscribe("genbrain.>")
        await nc.flush()
        await wait_for_async(lambda: len(errors) >= 5, "the five permission violations")
        text = "\n".join(errors).lower()
        for forbidden in ("msg.next.agent_tasks.cfo", "genbrain.agents.cto.tasks",
                          "task_ledger.globex", "stream.purge", 'subscription to "genbrain.>"'):
            assert forbidden in text, (forbidden, errors)
        # close() takes the login off the server: the page's connection goes with it.
        await asyncio.get_running_loop().run_in_executor(None, agent.close)
        await asyncio.wait_for(closed.wait(), 15)

    asyncio.run(check())
    assert lab.publish("genbrain.still.works", b"1") is None  # the lab's own login stands


def test_a_restarted_server_keeps_its_websocket_port_and_the_logins_added():
    import nats

    from agentlab.core.credentials import Login, ScopedLogin
    from agentlab.core.server import EmbeddedServer

    scoped = ScopedLogin(Login.generate("page"), {"publish": {"allow": ["allowed.>"]}},
                         ("WEBSOCKET",))

    async def admitted(url: str) -> bool:
        nc = await nats.connect(url, **scoped.login.kwargs(), allow_reconnect=False,
                                max_reconnect_attempts=0, connect_timeout=5)
        await nc.close()
        return True

    with EmbeddedServer(websocket=True, name="ws-restart", store_dir=None) as server:
        server.add_login(scoped)
        first = server.websocket_url
        assert asyncio.run(admitted(first))
        server.kill()
        server.restart()
        assert server.websocket_url == first and asyncio.run(admitted(first))
        assert scoped.login.password not in "\n".join(server.log_tail(200))


async def wait_for_async(condition, what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


# -- in Chromium, in JupyterLab ------------------------------------------------------------
SETUP = """\
import json
import agentlab
from agentlab.org import Organisation
from agentlab.widgets import BrowserAgent

lab = agentlab.start(websocket=True)
org = Organisation(lab, instances={"cto": 0}).start()   # no CTO agent: the page is the CTO
with open("lab-env.json", "w") as f:
    json.dump(lab.client_env(), f)                        # a path, never a password
"""


@pytest.fixture
def jupyterlab(tmp_path):
    from test_browser import CHROMIUM, TOKEN, _free_port, _settings, _wait_http, stop_jupyter

    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    pytest.importorskip("jupyterlab")
    pytest.importorskip("jupyter_server_proxy")
    pytest.importorskip("anywidget")
    nbformat = pytest.importorskip("nbformat")
    work = tmp_path / "work"
    work.mkdir()
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    notebook.cells = [nbformat.v4.new_code_cell(SETUP),
                      nbformat.v4.new_code_cell('BrowserAgent(org, role="cto", connect="direct")'),
                      nbformat.v4.new_code_cell('BrowserAgent(org, role="cto", connect="proxy")')]
    nbformat.write(notebook, work / "browser-agent.ipynb")
    _settings(tmp_path / "settings")
    # Saved with the notebook, the widgets' state is what a learner would commit.
    state = tmp_path / "settings" / "@jupyter-widgets" / "jupyterlab-manager" / \
        "plugin.jupyterlab-settings"
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text(json.dumps({"saveState": True}))
    port = _free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("AGENTLAB_NATS_URL", "AGENTLAB_NATS_CREDENTIALS",
                        "JUPYTERHUB_SERVICE_PREFIX")}
    env |= {"JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
            "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)}
    log_path = tmp_path / "jupyter.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}",
             "--ServerApp.ip=127.0.0.1", "--ServerApp.port_retries=0",
             f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={work}",
             "--allow-root", f"--LabApp.user_settings_dir={tmp_path / 'settings'}",
             f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}",
             "--LabApp.expose_app_in_browser=True", "--LabApp.news_url="],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work)
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_http(f"{base}/api?token={TOKEN}", 90, log_path)
            yield base, work
        finally:
            stop_jupyter(base, server)


class Completions:
    """Every completion announced on tasks.completed, as this process receives them."""

    def __init__(self, client, subject: str):
        self.seen: list[dict] = []
        self._lock = threading.Lock()
        self.sub = client.subscribe(subject, self._add)

    def _add(self, msg) -> None:
        with self._lock:
            self.seen.append(json.loads(msg.data))

    def of(self, task_id: str) -> list[dict]:
        with self._lock:
            return [c for c in self.seen if c["task_id"] == task_id]


@pytest.mark.browser
@pytest.mark.timeout(420)
def test_the_browser_takes_a_task_the_ceo_delegated_and_completes_it(jupyterlab, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    from test_browser import CHROMIUM, CHROMIUM_ARGS, TOKEN, _wait_for_idle_kernel

    base, work = jupyterlab
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1300, "height": 1100})
        try:
            page.goto(f"{base}/lab/tree/browser-agent.ipynb?reset&token={TOKEN}")
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
            page.wait_for_function("() => !!window.jupyterapp", timeout=60_000)
            _wait_for_idle_kernel(page, 90)
            page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells');"
                          " return true; }")
            for connect in ("direct", "proxy"):
                page.wait_for_selector(
                    f".al-browser-agent[data-connect={connect}][data-state=connected]",
                    timeout=120_000)
            errors = page.query_selector_all(
                ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']")
            assert not errors, [e.inner_text()[:500] for e in errors]
            _work_as_the_cto(page, work, base)
            _saved_state_holds_no_password(page, work)
        except BaseException as failure:
            page.screenshot(path=str(shots / "browser-agent-failure.png"), full_page=True)
            raise AssertionError(f"{failure}\nscreenshot of the failure: {shots}") from failure
        finally:
            browser.close()


def _kernel_env(work: Path) -> dict[str, str]:
    """The kernel's lab.client_env(): its server's URL and the path of its login file."""
    return json.loads(wait_for(lambda: (work / "lab-env.json").exists() and
                               (work / "lab-env.json").read_text(), 30, "lab-env.json"))


def _kernel_lab(work: Path):
    """A connection of this process to the kernel's embedded server, with its login file."""
    import agentlab
    from agentlab.core.credentials import read_credentials

    env = _kernel_env(work)
    _, login = read_credentials(env["AGENTLAB_NATS_CREDENTIALS"])
    assert login is not None
    return agentlab.connect(env["AGENTLAB_NATS_URL"], name="test-browser-agent",
                            **login.kwargs())


def _kernel_store(work: Path) -> Path:
    return Path(_kernel_env(work)["AGENTLAB_NATS_CREDENTIALS"]).parent


def _work_as_the_cto(page, work: Path, base: str) -> None:
    from agentlab.core.subjects import Subjects
    from agentlab.observe import Observer
    from agentlab.org.delegation import publish_task
    from agentlab.org.ledger import TaskLedger
    from agentlab.org.models import Task
    from agentlab.org.streams import LEDGER_BUCKET, TASK_STREAM

    client = _kernel_lab(work)
    subjects = Subjects()
    config = (_kernel_store(work) / "nats-server.conf").read_text()
    ws_port = re.search(r'websocket \{\s*listen: "127.0.0.1:(\d+)"', config).group(1)
    # Direct: the server's own listener. Proxy: the notebook server's origin, which
    # jupyter-server-proxy carries on to that listener.
    urls = {"direct": f"ws://127.0.0.1:{ws_port}",
            "proxy": f"{base.replace('http://', 'ws://', 1)}/proxy/{ws_port}/"}
    observer = Observer(client).start()
    try:
        ledger = TaskLedger.declare(client, subjects)
        completions = Completions(client, subjects.tasks_completed("acme"))
        for connect in ("direct", "proxy"):
            widget = page.locator(f".al-browser-agent[data-connect={connect}]")
            assert widget.get_attribute("data-via") == connect
            assert widget.get_attribute("data-url") == urls[connect]
            goal = f"Launch product {uuid.uuid4().hex[:6]}"
            # The board gives the CEO a goal; the CEO agent (in the kernel) delegates its
            # technical plan to the CTO, whose queue only this page works.
            publish_task(client, subjects, Task(org="acme", role="ceo", title=goal,
                                                requested_by="board"))
            widget.locator(".al-ba-take").click()
            task_box = widget.locator(".al-ba-task[data-task-id]")
            task_box.wait_for(timeout=60_000)
            assert f"Technical plan: {goal}" in task_box.inner_text()
            assert "from ceo" in task_box.inner_text()
            task_id = task_box.get_attribute("data-task-id")
            if connect == "direct":
                # Given back (a nak with the agents' back-off), it comes back as a redelivery.
                widget.locator(".al-ba-giveback").click()
                widget.locator(".al-ba-task[data-task-id]").wait_for(state="detached",
                                                                     timeout=10_000)
                assert "back in the queue: delivery 2 of" in widget.locator(
                    ".al-ba-log").inner_text()
                widget.locator(".al-ba-take").click()
                task_box.wait_for(timeout=60_000)
                assert task_box.get_attribute("data-task-id") == task_id
                assert "delivery 2 (a redelivery)" in task_box.inner_text()
            answer = f"prototype first ({connect})"
            widget.locator(".al-ba-result").fill(answer)
            widget.locator(".al-ba-complete").click()
            page.wait_for_selector(f".al-browser-agent[data-connect={connect}]"
                                   f"[data-last-completed='{task_id}']", timeout=30_000)

            done = wait_for(lambda t=task_id: completions.of(t), 15,
                            f"{task_id} on tasks.completed")
            assert done[0]["instance"] == "browser" and done[0]["role"] == "cto"
            assert done[0]["result"] == {"answer": answer}
            record = ledger.get("acme", task_id)
            assert record["instance"] == "browser" and record["result"] == {"answer": answer}
            assert stored(client, f"KV_{LEDGER_BUCKET}", ledger.subject("acme", task_id)) == 1
            # Acked: gone from the work queue, nothing pending for the role.
            wait_for(lambda: client.js.consumer_info(TASK_STREAM, "cto").num_ack_pending == 0,
                     15, "the CTO consumer's ack")
            assert client.js.consumer_info(TASK_STREAM, "cto").num_pending == 0
        _recorded_elsewhere_first(page, client, subjects, ledger, completions)
        time.sleep(1.0)  # a second announcement would be here by now
        for connect_done in completions.seen:
            if connect_done["role"] == "cto":
                assert len(completions.of(connect_done["task_id"])) == 1, completions.seen
        assert sum(c["role"] == "cto" for c in completions.seen) == 3
        # The flow shows the page as a participant of its own: the CTO's work, by the browser.
        flow = wait_for(lambda: (f := observer.flow(limit=10_000)) and any(
            e.sender == "cto/browser" and e.type == "task.completed" for e in f.events) and f,
            15, "the browser's completions in the flow")
        assert "cto/browser" in flow.lifelines()
        assert any(e.kind == "deliver" and e.consumer == "cto" for e in flow.events)
    finally:
        observer.stop()
        client.close()


def _recorded_elsewhere_first(page, client, subjects, ledger, completions) -> None:
    """A task the page holds is recorded by another worker first (one that ran it and died
    before its ack): the page's record is refused, the first stands, the task is acked."""
    from agentlab.org.delegation import publish_task
    from agentlab.org.models import Task, TaskCompleted
    from agentlab.org.streams import TASK_STREAM

    widget = page.locator(".al-browser-agent[data-connect=direct]")
    goal = f"Raced goal {uuid.uuid4().hex[:6]}"
    publish_task(client, subjects, Task(org="acme", role="ceo", title=goal,
                                        requested_by="board"))
    widget.locator(".al-ba-take").click()
    task_box = widget.locator(".al-ba-task[data-task-id]")
    task_box.wait_for(timeout=60_000)
    task_id = task_box.get_attribute("data-task-id")
    assert ledger.record(TaskCompleted(task_id=task_id, org="acme", role="cto",
                                       instance="cto-9", title=f"Technical plan: {goal}",
                                       result={"decision": "build it in-house"}))
    widget.locator(".al-ba-result").fill("too late")
    widget.locator(".al-ba-complete").click()
    page.wait_for_selector(f".al-browser-agent[data-connect=direct]"
                           f"[data-last-completed='{task_id}']", timeout=30_000)
    assert "it was recorded before (that record stands); acked" in \
        widget.locator(".al-ba-log").inner_text()
    assert ledger.get("acme", task_id)["instance"] == "cto-9"
    done = wait_for(lambda: completions.of(task_id), 15, f"{task_id} on tasks.completed")
    assert [c["instance"] for c in done] == ["cto-9"]
    wait_for(lambda: client.js.consumer_info(TASK_STREAM, "cto").num_ack_pending == 0,
             15, "the CTO consumer's ack of the raced task")


def _saved_state_holds_no_password(page, work: Path) -> None:
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
    notebook = work / "browser-agent.ipynb"
    saved = wait_for(lambda: "widget-state" in notebook.read_text() and notebook.read_text(),
                     30, "the notebook saved with its widget state")
    assert '"websocket_port"' in saved and '"browser"' in saved
    config = (_kernel_store(work) / "nats-server.conf").read_text()
    passwords = re.findall(r'"password": "([^"]+)"', config)
    assert len(passwords) == 3  # the lab's, and one per widget
    page_text = page.content()
    for password in passwords:
        assert password not in saved
        assert password not in page_text
