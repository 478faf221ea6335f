"""Closed by default: agentlab's servers admit only the lab's own login.

A plain nats-py client without credentials is refused by ``agentlab.start()``'s server, by
``EmbeddedServer`` and by ``start(cluster=3)``; every connection the lab opens (its own,
``lab.connect``, an organisation, an observer, a worker process given ``lab.client_env()``)
gets in. The password is generated per lab, kept in a 0600 file shaped as a nats CLI context,
and never shown: not in a repr, the lab's HTML, nor ``agentlab server``'s banner. The HTTP
monitoring endpoint is off unless asked for.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import nats
import nats.errors
import pytest

import agentlab
from agentlab import AuthenticationFailed, EmbeddedServer, Subjects
from agentlab.core.server import MonitoringOff
from agentlab.org import Organisation, Task, TaskCompleted
from helpers import clean_env

S = Subjects()
pytestmark = pytest.mark.timeout(120)


async def _plain(url: str, **login: str) -> None:
    """A plain nats-py connection (no agentlab in it): connect, round-trip, close."""
    async def quiet(error: Exception) -> None:
        pass

    nc = await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=0,
                            connect_timeout=2, error_cb=quiet, **login)
    try:
        await nc.flush(timeout=2)
    finally:
        await nc.close()


def plain(url: str, **login: str) -> None:
    asyncio.run(_plain(url, **login))


def refused(url: str, **login: str) -> None:
    """A plain nats-py connection is refused: the server says "Authorization Violation"."""
    with pytest.raises(Exception) as caught:
        plain(url, **login)
    text = f"{type(caught.value).__name__}: {caught.value}".lower()
    assert "authorization" in text, text


# -- the acceptance test ------------------------------------------------------------------------
def test_a_plain_client_without_credentials_is_refused_and_with_the_labs_login_gets_in(fresh_lab):
    lab = fresh_lab()
    refused(lab.url)
    refused(lab.url, user=lab.login()["user"], password="a guess")
    plain(lab.url, **lab.login())
    assert lab.login()["user"] == lab.identity == "agentlab"
    assert len(lab.login()["password"]) >= 32  # 192 random bits, url-safe


def test_the_login_is_generated_per_lab(fresh_lab):
    first = fresh_lab()
    first_password = first.login()["password"]
    second = fresh_lab()
    assert second.login()["password"] != first_password
    assert first.is_closed


def test_the_credentials_file_is_private_and_a_nats_cli_context(fresh_lab):
    lab = fresh_lab()
    path = Path(lab.credentials_path)
    assert path.parent == lab.server.store_dir
    assert path.stat().st_mode & 0o777 == 0o600
    assert lab.server.config_path.stat().st_mode & 0o777 == 0o600  # it holds the password too
    context = json.loads(path.read_text())
    assert set(context) == {"description", "url", "user", "password"}
    assert context["url"] == lab.url and {"user": context["user"],
                                          "password": context["password"]} == lab.login()
    env = lab.client_env()
    assert env == {"AGENTLAB_NATS_URL": lab.url, "AGENTLAB_NATS_CREDENTIALS": str(path)}
    assert lab.login()["password"] not in json.dumps(env)


# -- every connection the lab opens gets in ---------------------------------------------------
def test_the_labs_connections_the_organisation_and_an_observer_get_in(fresh_lab):
    from agentlab.observe import Observer

    lab = fresh_lab()
    cto = lab.connect("cto")
    sub = cto.subscribe("closed.ping")
    lab.publish("closed.ping", "pong")
    assert sub.next(timeout=2).text == "pong"
    # A connection in this process to the lab's URL: the server's own login, by itself.
    with agentlab.Client.open(lab.url, name="same-process") as same, \
            agentlab.connect(lab.url, name="connect") as connected:
        assert same.identity == connected.identity == "agentlab"
    org = Organisation(lab, f"org{uuid.uuid4().hex[:6]}", heartbeat_interval=0.5).start()
    observer = Observer(lab).start()
    try:
        done = lab.subscribe(S.tasks_completed(org.org))
        task = org.assign("Pick a database", to="cto")
        event = done.next(timeout=10).decode(TaskCompleted)
        assert (event.org, event.task_id) == (org.org, task.id)
    finally:
        observer.stop()
        org.stop()


def test_a_worker_process_given_client_env_works_and_one_without_is_refused(fresh_lab, tmp_path):
    lab = fresh_lab()
    from agentlab.org import declare_reference_streams

    declare_reference_streams(lab)
    org = f"org{uuid.uuid4().hex[:6]}"
    done = lab.subscribe(S.tasks_completed(org))
    argv = [sys.executable, "-m", "agentlab.programs.worker", "--role", "cto", "--org", org,
            "--instance", "cto-proc", "--handler", "agentlab.org.roles:cto_handler"]
    without = subprocess.run(argv, env=clean_env(AGENTLAB_NATS_URL=lab.url),
                             capture_output=True, text=True, timeout=30)
    assert without.returncode == 2 and "anonymous" in without.stderr
    assert "AGENTLAB_NATS_CREDENTIALS" in " ".join(without.stderr.split())  # says how
    proc = subprocess.Popen(argv, env=clean_env(**lab.client_env()), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("ready cto-proc"), proc.stderr.read()
        task = Task(org=org, role="cto", title="Pick a database", requested_by="ceo")
        lab.js.publish(S.tasks("cto"), task, msg_id=task.id)
        event = done.next(timeout=15).decode(TaskCompleted)
        assert (event.task_id, event.instance) == (task.id, "cto-proc")
    finally:
        proc.terminate()
        proc.wait(15)
    assert lab.login()["password"] not in without.stderr + without.stdout


# -- start(user=, password=) ------------------------------------------------------------------
def test_start_with_user_and_password_configures_that_login_on_the_server(fresh_lab):
    lab = fresh_lab(user="alice", password="correct horse battery staple")
    assert lab.identity == "alice"
    assert lab.login() == {"user": "alice", "password": "correct horse battery staple"}
    plain(lab.url, user="alice", password="correct horse battery staple")
    refused(lab.url, user="alice", password="wrong")
    refused(lab.url)
    refused(lab.url, user="agentlab", password="correct horse battery staple")
    with pytest.raises(AuthenticationFailed, match="'alice'"):
        agentlab.Client.open(lab.url, name="intruder", user="alice", password="wrong")
    assert lab.connect("sibling").identity == "alice"


def test_start_with_half_a_login_is_refused_with_a_clear_error(fresh_lab):
    with pytest.raises(ValueError, match="give both"):
        fresh_lab(user="alice")
    with pytest.raises(ValueError, match="give both"):
        fresh_lab(password="secret")
    with pytest.raises(ValueError, match="together"):
        EmbeddedServer(user="alice")


# -- monitoring -------------------------------------------------------------------------------
def test_monitoring_is_off_by_default_and_on_when_asked(fresh_lab):
    lab = fresh_lab()
    assert lab.monitor_url is None
    assert "off (start(monitor=True))" in lab._repr_html_()
    with pytest.raises(MonitoringOff, match="monitor=True"):
        lab.server.varz()
    assert "http:" not in lab.server.config_path.read_text()
    watched = fresh_lab(monitor=True)
    assert watched.monitor_url and watched.monitor_url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(f"{watched.monitor_url}/varz", timeout=5) as reply:
        assert json.loads(reply.read())["auth_required"] is True
    assert watched.server.varz()["server_name"] == "agentlab"


# -- never the password ----------------------------------------------------------------------
def test_no_password_in_reprs_html_errors_or_the_server_banner(fresh_lab):
    from agentlab.core.credentials import Login
    from agentlab.programs.server import banner

    lab = fresh_lab()
    secret = lab.login()["password"]
    shown = [repr(lab), lab._repr_html_(), repr(lab.server), repr(lab.connect("x")),
             repr(Login("u", secret)), banner(lab.server)]
    for text in shown:
        assert secret not in text
    assert lab.credentials_path in lab._repr_html_()
    with pytest.raises(AuthenticationFailed) as caught:
        agentlab.Client.open(lab.url, name="guess", user="agentlab", password=secret[::-1])
    assert secret[::-1] not in str(caught.value)


def test_agentlab_server_prints_how_to_use_it_and_never_the_password(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "agentlab", "server", "--store-dir",
                             str(tmp_path)], env=clean_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        while not lines or "Ctrl-C" not in lines[-1]:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            lines.append(line)
        text = "".join(lines)
        context = json.loads((tmp_path / "credentials.json").read_text())
        assert context["password"] not in text
        assert (tmp_path / "credentials.json").stat().st_mode & 0o777 == 0o600
        assert f"export AGENTLAB_NATS_URL={context['url']}" in text
        assert f"export AGENTLAB_NATS_CREDENTIALS={tmp_path / 'credentials.json'}" in text
        assert "~/.config/nats/context/agentlab.json" in text and "--context agentlab" in text
        assert "Monitoring:  off" in text
        refused(context["url"])
        plain(context["url"], user=context["user"], password=context["password"])
        # Another terminal: the two exports are all `agentlab status` needs.
        status = subprocess.run(
            [sys.executable, "-m", "agentlab", "status"], capture_output=True, text=True,
            timeout=30, env=clean_env(AGENTLAB_NATS_URL=context["url"],
                                      AGENTLAB_NATS_CREDENTIALS=str(tmp_path /
                                                                    "credentials.json")))
        assert status.returncode == 0, status.stderr
        assert "Stream Report" in status.stdout and "Monitoring: none found" in status.stdout
    finally:
        proc.terminate()
        proc.wait(15)


# -- tenants: their config brings the logins, no second one ------------------------------------
def test_tenants_bring_their_own_logins_and_the_operators_is_the_labs(fresh_lab):
    lab = fresh_lab(tenants=["acme", "globex"])
    config = lab.server.config_path.read_text()
    assert "authorization {" not in config  # only the tenants' accounts: no second way in
    assert lab.identity == "operator" and lab.login()["user"] == "operator"
    refused(lab.url)
    context = json.loads(Path(lab.credentials_path).read_text())
    assert context["user"] == "operator"
    with pytest.raises(AuthenticationFailed, match="anonymous"):
        agentlab.Client.open(lab.url, name="anonymous")  # no login by itself for tenants


# -- a local cluster ------------------------------------------------------------------------
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a three-node cluster")
def test_start_cluster_3_refuses_a_plain_client_on_every_node(fresh_lab):
    lab = fresh_lab(cluster=3)
    cluster = lab.cluster
    assert cluster is not None and lab.url.count(",") == 2
    for url in cluster.urls:
        refused(url)
        plain(url, **lab.login())
    assert Path(lab.credentials_path).stat().st_mode & 0o777 == 0o600
    assert json.loads(Path(lab.credentials_path).read_text())["url"] == lab.url
    for node in cluster.nodes.values():
        config = node.config_path.read_text()
        assert 'no_auth_user: ""' in config and node.config_path.stat().st_mode & 0o077 == 0
        assert "include " in config  # the deploy file, unchanged, under the closing overrides
    assert lab.replicas == 3
    # The deploy files themselves stay open for docker compose (no_auth_user agentlab).
    assert "no_auth_user: agentlab" in cluster.configs[0].path.read_text()
