"""Tenants on a live server: both config models, credentials, errors, the shared tool pool."""

from __future__ import annotations

import asyncio
import logging
import os
import time

import pytest

import agentlab
from agentlab import (
    AuthenticationFailed,
    KeyValueBucket,
    PermissionDenied,
    StreamSpec,
    TenantClient,
)
from agentlab.errors import NoResponders
from agentlab.org import Organisation, SharedToolPool, call_shared_tool
from agentlab.tenants import Credentials, Tenants, UnknownTenant
from helpers import wait_for


@pytest.fixture
def start_lab(monkeypatch):
    """``start_lab(tenants)``: agentlab.start(tenants=...) without closing the session's lab."""
    import agentlab.lab

    monkeypatch.delenv("AGENTLAB_NATS_URL", raising=False)
    monkeypatch.setattr(agentlab.lab, "_current", None)
    started = []

    def start(tenants):
        lab = agentlab.start(tenants=tenants, fresh=True, name="tenant-test")
        started.append(lab)
        return lab

    yield start
    for lab in started:
        lab.close()


def test_names_and_models_are_checked():
    for bad in (["Acme"], ["acme", "acme"], ["tools"], ["operator"], ["a.b"], []):
        with pytest.raises(ValueError):
            Tenants(bad)
    with pytest.raises(ValueError, match="model"):
        Tenants(["acme"], model="vhosts")
    with pytest.raises(UnknownTenant):
        Tenants(["acme"]).credentials("globex")


def test_tenants_on_a_server_without_logins_are_refused(monkeypatch):
    """A URL (here $AGENTLAB_NATS_URL) to a server agentlab did not configure (one that
    admits anyone): tenants= would isolate nothing there, so start() says so instead."""
    import agentlab.lab
    from agentlab import EmbeddedServer

    monkeypatch.setattr(agentlab.lab, "_current", None)
    with EmbeddedServer(name="open", anonymous=True) as bare:
        monkeypatch.setenv("AGENTLAB_NATS_URL", bare.url)
        with pytest.raises(ValueError, match="requires no login") as refused:
            agentlab.start(tenants=["acme", "globex"], name="tenant-refused")
    assert bare.url in str(refused.value) and "Unset AGENTLAB_NATS_URL" in str(refused.value)
    assert agentlab.current_lab() is None


def test_accounts_model_starts_closed_to_anonymous_and_wrong_credentials(start_lab):
    lab = start_lab(["acme", "globex"])
    assert lab.tenants.model == "accounts" and lab.identity == "operator"
    config = lab.server.config_path.read_text()
    assert "accounts {" in config and "no_auth_user" not in config
    with pytest.raises(AuthenticationFailed, match="anonymous"):
        agentlab.Client.open(lab.url, name="anonymous")
    with pytest.raises(AuthenticationFailed, match="'acme'") as caught:
        agentlab.Client.open(lab.url, name="intruder", user="acme", password="guess")
    assert "guess" not in str(caught.value)
    with pytest.raises(UnknownTenant, match="'initech'.*'acme', 'globex'") as unknown:
        lab.tenant("initech")
    assert isinstance(unknown.value, AuthenticationFailed)
    # Each tenant's account has JetStream with its own limits.
    acme = lab.tenant("acme")
    limits = acme.request("$JS.API.INFO", timeout=2).json()["limits"]
    assert limits["max_streams"] == 32 and limits["max_consumers"] == 256
    assert limits["max_memory"] == 64 * 1024 * 1024
    globex = asyncio.run(lab.atenant("globex", name="globex-async"))  # the awaitable twin
    assert (globex.tenant, globex.identity) == ("globex", "globex")
    with pytest.raises(ValueError, match="fresh=True"):
        agentlab.start(tenants=["acme"])


def test_each_tenant_runs_the_reference_organisation_under_the_seed_names(start_lab):
    lab = start_lab(["acme", "globex"])
    tenants = {name: lab.tenant(name) for name in ("acme", "globex")}
    orgs = {name: Organisation(client, ack_wait=2, heartbeat_interval=0.2,
                                      monitor_interval=0.2).start()
            for name, client in tenants.items()}
    try:
        # Even a wildcard over every org sees only the tenant's own: it is all its account has.
        done = {name: client.subscribe(orgs[name].subjects.tasks_completed("*"))
                for name, client in tenants.items()}
        tap = lab.subscribe("tenants.*.genbrain.org.*.tasks.completed")  # operator's view
        orgs["acme"].assign("Open an office in Lisbon")
        orgs["globex"].assign("Buy a rival")
        for name, sub in done.items():
            events = [m.json() for m in sub.messages(count=3, timeout=10)]
            assert {e["org"] for e in events} == {name}
            assert {e["role"] for e in events} == {"ceo", "cto", "cfo"}
            assert sub.messages(timeout=0.3) == []
        assert {m.subject.split(".")[1] for m in tap.messages(count=6, timeout=5)} == \
            {"acme", "globex"}
        streams = lab.tenants.streams(lab)  # through each tenant's read-only export
        assert "AGENT_TASKS" in streams["acme"] and "AGENT_TASKS" in streams["globex"]
    finally:
        for org in orgs.values():
            org.stop()


def test_a_tenant_observer_sees_its_own_account_only(start_lab):
    from agentlab.observe import Observer

    lab = start_lab(["acme", "globex"])
    tenants = {name: lab.tenant(name) for name in ("acme", "globex")}
    observers = {name: Observer(client, poll_interval=0.2).start()
                 for name, client in tenants.items()}
    orgs = {name: Organisation(client, ack_wait=2, heartbeat_interval=0.2).start()
            for name, client in tenants.items()}
    try:
        acme_task = orgs["acme"].assign("Open an office in Lisbon")
        globex_task = orgs["globex"].assign("Buy a rival")

        def titles(name: str) -> set[str]:
            return {e.title for e in observers[name].flow(limit=10_000).events}
        wait_for(lambda: acme_task.title in titles("acme") and
                 globex_task.title in titles("globex"), 10, "each observer to see its task")
        assert globex_task.title not in titles("acme")
        assert acme_task.title not in titles("globex")
        observers["acme"].poll()
        assert "AGENT_TASKS" in observers["acme"].state().streams.names
    finally:
        for org in orgs.values():
            org.stop()
        for observer in observers.values():
            observer.stop()


@pytest.mark.parametrize("model", ["accounts", "users"])
def test_one_tool_pool_serves_both_tenants_and_neither_sees_the_other(start_lab, model):
    lab = start_lab(Tenants(["acme", "globex"], model=model))
    pool = SharedToolPool(lab.tenant("tools"),
                          {"search": lambda query: f"results for {query}"}).start()
    acme, globex = lab.tenant("acme"), lab.tenant("globex")
    spy = globex.subscribe(">" if model == "accounts" else "genbrain.globex.>")
    if model == "users":
        with pytest.raises(PermissionDenied):
            globex.subscribe("genbrain.acme.>")
    assert call_shared_tool(acme, "search", query="acme secret plans") == \
        "results for acme secret plans"
    assert spy.messages(timeout=0.3) == []  # globex saw neither the request nor the result
    assert call_shared_tool(globex, "search", query="globex") == "results for globex"
    assert pool.served == {"acme": 1, "globex": 1}  # the server stamped who asked
    # acme cannot pose as globex: that subject leads nowhere (accounts) or is forbidden.
    with pytest.raises(NoResponders if model == "accounts" else PermissionDenied):
        acme.request("genbrain.globex.shared.tools.search", {"query": "x"}, timeout=1)
    pool.stop()


def test_users_model_errors_name_tenant_and_subject_at_the_call(start_lab):
    lab = start_lab(Tenants(["acme", "globex"], model="users"))
    acme = lab.tenant("acme")
    with pytest.raises(PermissionDenied, match="'acme'.*'genbrain.globex.agents.cto.tasks'"):
        acme.publish("genbrain.globex.agents.cto.tasks", {"title": "do my work"})
    with pytest.raises(PermissionDenied, match="subscribe to 'genbrain.globex.>'"):
        acme.subscribe("genbrain.globex.>")
    started = time.perf_counter()
    with pytest.raises(PermissionDenied, match="STREAM.INFO.AGENT_TASKS_GLOBEX") as caught:
        acme.js.stream_info("AGENT_TASKS_GLOBEX")
    assert time.perf_counter() - started < 1.0  # not the JetStream API's 5 s timeout
    assert "acme" in str(caught.value)
    # Creating streams is the operator's: a tenant could capture another tenant's subjects.
    with pytest.raises(PermissionDenied, match="STREAM.CREATE"):
        acme.js.declare_stream(StreamSpec("SPY_ACME", ["genbrain.globex.>"]))
    # Its own streams, declared by the operator, work as usual.
    s = lab.tenants.subjects("acme")
    ack = acme.js.publish(s.tasks("cto"), {"title": "mine"}, msg_id="t-1")
    assert ack.stream == "AGENT_TASKS_ACME"
    ledger = KeyValueBucket.declare(acme, "TASK_LEDGER_ACME")
    ledger.put("k", {"v": 1})
    assert ledger.get("k") == {"v": 1}
    with pytest.raises(PermissionDenied, match="TASK_LEDGER_GLOBEX"):
        KeyValueBucket.declare(acme, "TASK_LEDGER_GLOBEX")
    # A push consumer on acme's own stream aimed at globex's subjects delivers nothing there.
    globex = lab.tenant("globex")
    seen = globex.subscribe("genbrain.globex.>")
    config = {"durable_name": "push", "deliver_subject": "genbrain.globex.agents.cto.tasks",
              "ack_policy": "explicit", "deliver_policy": "all"}
    created = acme.request("$JS.API.CONSUMER.CREATE.AGENT_TASKS_ACME.push",
                           {"stream_name": "AGENT_TASKS_ACME",
                            "config": {"name": "push", **config}}).json()
    assert "error" not in created  # nats-server 2.15 creates it, and delivers nothing:
    acme.js.publish(s.tasks("cto"), {"title": "smuggled"}, msg_id="t-2")
    assert seen.messages(timeout=0.5) == []


def test_credentials_stay_out_of_reprs_logs_and_the_environment(start_lab, caplog):
    caplog.set_level(logging.DEBUG)
    tenants = Tenants(["acme", "globex"])
    lab = start_lab(tenants)
    acme = lab.tenant("acme")
    with pytest.raises(AuthenticationFailed) as refused:
        agentlab.Client.open(lab.url, name="x", user="globex",
                             password=tenants.credentials("acme").password)
    from agentlab.programs import audit
    report = audit(lab.url, tenants)
    assert report.ok
    server_log = lab.server.log_path.read_text()
    shown = [repr(lab), repr(tenants), str(tenants), repr(acme), str(refused.value),
             repr(tenants.credentials("acme")), str(tenants.credentials("operator")),
             tenants.config(redact=True), caplog.text, str(report), repr(report.cells),
             server_log, "\n".join(os.environ.values())]
    for who in ("acme", "globex", "tools", "operator"):
        password = tenants.credentials(who).password
        assert len(password) >= 32
        assert password in tenants.config()  # the server needs it ...
        for text in shown:                   # ... nobody else sees it
            assert password not in text
    assert repr(Credentials("u", "pw")) == "Credentials(user='u', password='***')"
    assert Tenants(["acme"]).credentials("acme").password != \
        Tenants(["acme"]).credentials("acme").password  # generated per run


SEED_ENTRY = """\
    {
      user: "org_acme_agents"
      password: "***"
      permissions: {
        publish: {
          allow: ["genbrain.agents.*.tasks", "genbrain.org.acme.>"]
          deny: ["genbrain.org.*.>"] # Deny other orgs (more specific wins)
        }
        subscribe: {
          allow: ["genbrain.agents.*.>", "genbrain.org.acme.>"]
        }
      }
    }
"""


def test_seed_000_block_is_reproduced_verbatim():
    config = Tenants(["acme", "globex"], model="seed000").config(redact=True)
    assert SEED_ENTRY in config
    assert SEED_ENTRY.replace("acme", "globex") in config
    assert "THE HOLE" in config


def test_seed_000_denies_each_org_its_own_org_subjects_too():
    """'more specific wins' is not NATS: deny beats allow, so the seed's deny hits its own org."""
    from agentlab import EmbeddedServer

    tenants = Tenants(["acme", "globex"], model="seed000")
    with EmbeddedServer(extra_config=tenants.config()) as server:
        with tenants.connect(server.url, "acme") as acme:
            acme.publish("genbrain.agents.cto.tasks", {"title": "anyone's cto"})  # the hole
            for org in ("acme", "globex"):
                with pytest.raises(PermissionDenied, match="org_acme_agents"):
                    acme.publish(f"genbrain.org.{org}.events", "x")


def test_a_tenants_connect_opens_another_connection_as_that_tenant(start_lab):
    """Client.connect: same login, same inbox prefix, same kind, closed with its parent."""
    lab = start_lab(Tenants(["acme", "globex"], model="users"))
    acme = lab.tenant("acme")
    cto = acme.connect("acme-cto")
    assert isinstance(cto, TenantClient) and cto.tenant == "acme"
    assert cto._login == acme._login and cto._login["inbox_prefix"] == "_INBOX.acme"
    # Requests work through the tenant's own inbox prefix, and refusals name the tenant.
    cto.serve("genbrain.acme.ping", lambda msg: "pong")
    assert acme.request("genbrain.acme.ping", timeout=2).data == b"pong"
    with pytest.raises(PermissionDenied, match="'acme'"):
        cto.publish("genbrain.globex.agents.cto.tasks", {"title": "not mine"})
    # The lab's own connect() opens a plain connection with the lab's (operator's) login.
    ops = lab.connect("ops")
    assert type(ops) is agentlab.Client and ops._login["user"] == lab._login["user"]
    acme.close()
    assert cto.is_closed
