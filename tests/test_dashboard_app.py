"""`agentlab dashboard` in Chromium: the dashboard as a Voila page, on a running organisation.

The organisation runs in this test process on the module's own server (a learner's notebook,
or `agentlab demo`, would run it the same way); `agentlab dashboard` is started as a user
starts it, with the environment `lab.client_env()` gives (the URL and the path of the
login's file). Debian's Chromium opens the page it prints: the four views render and change
while tasks flow, and the "publish task" button puts a task on the server, where this
process sees it arrive. The README's second Binder link is checked too: Voila's server
extension in a plain Jupyter server renders the same page at /voila/render/<the notebook>.
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from test_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    TOKEN,
    VIEWS,
    _changes,
    _free_port,
    _view_html,
    _wait_http,
    stop_jupyter,
)

from agentlab.org import Organisation

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(300),
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed "
                       "(apt-get install -y chromium; .ci/run does it)"),
]


@pytest.fixture
def organisation(org_lab):
    org = Organisation(org_lab, "acme", ack_wait=5, heartbeat_interval=1).start()
    yield org
    org.stop()


@pytest.fixture
def dashboard_app(org_server, tmp_path):
    """`agentlab dashboard --port P` joined to the module's server; its URL and output."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTLAB_")}
    env.update(org_server.client_env())
    log = open(tmp_path / "voila.log", "w")
    app = subprocess.Popen([sys.executable, "-m", "agentlab", "dashboard", "--port", str(port)],
                           env=env, stdout=subprocess.PIPE, stderr=log, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in app.stdout], daemon=True).start()
    shown, url = [], None
    deadline = time.monotonic() + 90
    while url is None and time.monotonic() < deadline and app.poll() is None:
        try:
            shown.append(lines.get(timeout=1))
        except queue.Empty:
            continue
        found = re.search(r"open (http://127\.0\.0\.1:\d+/)", shown[-1])
        url = found.group(1) if found else None
    try:
        assert url == f"http://127.0.0.1:{port}/", \
            f"agentlab dashboard printed {shown}; its log: {tmp_path / 'voila.log'}"
        while not re.search(r"\(it carries the token\)", "".join(shown)):
            shown.append(lines.get(timeout=10))
        printed = "".join(shown)
        token_file = Path(re.search(r"with the token in (\S+)", printed).group(1))
        assert token_file.stat().st_mode & 0o777 == 0o600, "the token file is not 0600"
        token = token_file.read_text().strip()
        assert token and token not in printed, "the token was printed"
        # Without the token Voila answers with its login page, never the dashboard.
        try:
            with urllib.request.urlopen(url, timeout=30) as answer:
                body = answer.read().decode()
        except urllib.error.HTTPError as refused:
            body = str(refused.code)
        assert "agentlab-dashboard" not in body and "dashboard_app" not in body, body[:300]
        yield f"{url}?token={token}", printed
    finally:
        app.terminate()
        try:
            app.wait(30)
        except subprocess.TimeoutExpired:
            app.kill()
        log.close()


def test_agentlab_dashboard_in_chromium(organisation, org_lab, org_server, dashboard_app,
                                        tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    url, printed = dashboard_app
    assert org_server.login()["password"] not in printed + (tmp_path / "voila.log").read_text()
    assert "on nats://127.0.0.1:" in printed and "watching it" in printed, printed
    arrived = org_lab.subscribe(organisation.subjects.tasks("cto"))
    stop = threading.Event()

    def traffic() -> None:  # a task every half second, so that every view has news
        while not stop.wait(0.5):
            organisation.assign(f"Routine {uuid.uuid4().hex[:4]}", to="cto")

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                    headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        feeder = threading.Thread(target=traffic, daemon=True)
        try:
            page.goto(url)
            page.wait_for_selector(".agentlab-dashboard", timeout=120_000)
            for view in VIEWS:
                page.wait_for_selector(f".agentlab-{view} .al-view", timeout=60_000)
            assert not page.query_selector_all(":text('Error displaying widget')")
            assert "AGENT_TASKS" in _view_html(page, "streamsview")
            # Watching an organisation that runs elsewhere: nothing here to scale.
            assert page.locator("button.agentlab-stop-agent").is_disabled()

            feeder.start()
            for view in VIEWS:
                assert _changes(page, view, 20), f"{view} did not change while tasks flowed"

            title = f"Voila task {uuid.uuid4().hex[:6]}"
            field = page.locator(".agentlab-task-title input")
            field.fill(title)
            field.press("Enter")
            time.sleep(0.5)  # the new value reaches the kernel before the click
            page.locator("button.agentlab-publish").click()
            deadline = time.monotonic() + 30
            while True:  # the task reached the server: this process receives it
                message = arrived.next(timeout=max(0.1, deadline - time.monotonic())).json()
                if message.get("title") == title:
                    break
            assert message["org"] == "acme" and message["requested_by"] == "dashboard"
            page.wait_for_function(
                "t => { const e = document.querySelector('.agentlab-flowview .agentlab-view');"
                " return e && e.innerHTML.includes(t); }", arg=title, timeout=30_000)
            assert f"published task '{title}'" in page.inner_text(".agentlab-status")
        except BaseException as failure:
            page.screenshot(path=str(tmp_path / "dashboard-failure.png"), full_page=True)
            raise AssertionError(f"{failure}\nscreenshot: {tmp_path / 'dashboard-failure.png'}"
                                 f"; Voila's log: {tmp_path / 'voila.log'}") from failure
        finally:
            stop.set()
            browser.close()
            arrived.unsubscribe()


BINDER_PATH = "voila/render/agentlab/programs/dashboard_app.ipynb"  # the README's second link


@pytest.fixture
def jupyter_server(tmp_path):
    """A Jupyter server at the repository's root with Voila's server extension, as Binder
    runs one; no AGENTLAB_NATS_URL, as on Binder."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTLAB_")}
    env["JUPYTER_CONFIG_DIR"] = str(tmp_path / "config")
    env["JUPYTER_RUNTIME_DIR"] = str(tmp_path / "runtime")
    log = open(tmp_path / "jupyter.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter_server", "--no-browser", f"--port={port}",
         "--ServerApp.ip=127.0.0.1", "--ServerApp.port_retries=0",
         f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={ROOT}", "--allow-root"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{base}/api?token={TOKEN}", 90, tmp_path / "jupyter.log")
        yield base
    finally:
        stop_jupyter(base, server)
        log.close()


def test_the_binder_link_opens_the_dashboard_through_voilas_extension(jupyter_server,
                                                                      tmp_path):
    """/voila/render/<the app notebook> of a plain Jupyter server: the page Binder opens. With
    no server given, the app starts its own and the organisation on it."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                    headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(f"{jupyter_server}/{BINDER_PATH}?token={TOKEN}")
            page.wait_for_selector(".agentlab-dashboard", timeout=120_000)
            for view in VIEWS:
                page.wait_for_selector(f".agentlab-{view} .al-view", timeout=60_000)
            assert page.locator("button.agentlab-stop-agent").is_enabled()  # its own agents
            title = f"Binder task {uuid.uuid4().hex[:6]}"
            field = page.locator(".agentlab-task-title input")
            field.fill(title)
            field.press("Enter")
            time.sleep(0.5)
            page.locator("button.agentlab-publish").click()
            # Published, then done by the organisation's CTO (an ack in the flow's tail).
            page.wait_for_function(
                "t => { const e = document.querySelector('.agentlab-flowview .agentlab-view');"
                " return e && [...e.querySelectorAll('tr')].some(r => r.innerText.includes(t)"
                " && r.innerText.includes('ack')); }", arg=title, timeout=60_000)
        except BaseException as failure:
            page.screenshot(path=str(tmp_path / "binder-failure.png"), full_page=True)
            raise AssertionError(f"{failure}\nscreenshot: {tmp_path / 'binder-failure.png'}; "
                                 f"the server's log: {tmp_path / 'jupyter.log'}") from failure
        finally:
            browser.close()
