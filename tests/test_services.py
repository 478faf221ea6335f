"""Agents and tool pools as NATS micro services (ADR-32), seen by a plain nats-py client.

The client below knows nothing of agentlab: it asks ``$SRV.PING``/``INFO``/``STATS`` and calls
the endpoints as ``nats micro`` and ``nats req`` would. Other services may answer too (the
Synadia agents service); agentlab's are counted by name and by their org's metadata.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from typing import Any

import nats
import pytest

import agentlab
from agentlab.org import Organisation, ToolClient, ToolWorkerPool
from helpers import raw_login

pytestmark = pytest.mark.timeout(90)

AGENT_SERVICE = "agentlab-agent-"
GATHER = 0.5  # seconds: every instance answers a $SRV request, and none says it is the last


# -- the plain client ------------------------------------------------------------------------
async def _gather(url: str, subject: str) -> list[dict[str, Any]]:
    nc = await nats.connect(url, **raw_login(url))
    try:
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        await nc.publish(subject, b"", reply=inbox)
        answers, deadline = [], time.monotonic() + GATHER
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = await sub.next_msg(timeout=left)
            except nats.errors.TimeoutError:
                break
            if not (msg.headers or {}).get("Status"):  # not the server's "no responders"
                answers.append(json.loads(msg.data))
        return answers
    finally:
        await nc.close()


def gather(url: str, verb: str, name: str | None = None) -> list[dict[str, Any]]:
    """Every answer to $SRV.<verb>[.<name>] within half a second."""
    return asyncio.run(_gather(url, f"$SRV.{verb}" + (f".{name}" if name else "")))


def ours(answers: list[dict[str, Any]], org: str) -> list[dict[str, Any]]:
    return [a for a in answers if a["name"].startswith(AGENT_SERVICE)
            and a["metadata"].get("agentlab.org") == org]


async def _request(url: str, subject: str, body: bytes) -> tuple[bytes, dict[str, str]]:
    nc = await nats.connect(url, **raw_login(url))
    try:
        reply = await nc.request(subject, body, timeout=5)
        return reply.data, dict(reply.headers or {})
    finally:
        await nc.close()


def request(url: str, subject: str, body: Any) -> tuple[bytes, dict[str, str]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return asyncio.run(_request(url, subject, data))


def instances(org: Organisation) -> list[str]:
    return sorted(a.instance for agents in org.agents.values() for a in agents)


@pytest.fixture
def org(org_lab, unique):
    organisation = Organisation(org_lab, f"org{unique}", heartbeat_interval=0.5)
    yield organisation
    organisation.stop()


def wait_until(condition: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


# -- discovery -----------------------------------------------------------------------------
def test_every_running_agent_instance_answers_ping_once_and_none_after_stop(org_lab, org):
    org.start()
    org.scale("cto", 2)
    answers = ours(gather(org_lab.url, "PING"), org.org)
    by_instance = Counter(a["metadata"]["agentlab.instance"] for a in answers)
    assert sorted(by_instance) == instances(org) and set(by_instance.values()) == {1}
    assert len({a["id"] for a in answers}) == len(answers) == 4  # CEO, 2 CTOs, CFO
    for answer in answers:
        role = answer["metadata"]["agentlab.role"]
        assert answer["type"] == "io.nats.micro.v1.ping_response"
        assert answer["name"] == f"{AGENT_SERVICE}{role}"
        assert answer["version"] == agentlab.__version__
        assert answer["metadata"]["agentlab.protocol"] == "1"
    org.scale("cto", 1)
    assert len(ours(gather(org_lab.url, "PING"), org.org)) == 3
    org.stop()
    assert ours(gather(org_lab.url, "PING"), org.org) == []


def test_info_names_org_role_instance_and_the_endpoints(org_lab, org):
    org.start()
    org.scale("cto", 2)
    infos = ours(gather(org_lab.url, "INFO", f"{AGENT_SERVICE}cto"), org.org)
    assert sorted(i["metadata"]["agentlab.instance"] for i in infos) == \
        sorted(a.instance for a in org.agents["cto"])
    for info in infos:
        assert info["metadata"]["agentlab.role"] == "cto"
        assert info["metadata"]["agentlab.org"] == org.org
        assert org.org in info["description"] and "cto" in info["description"]
        endpoints = {e["name"]: e for e in info["endpoints"]}
        assert set(endpoints) == {"status", "delegate"}
        for name, endpoint in endpoints.items():
            assert endpoint["subject"] == f"genbrain.agents.cto.svc.{org.org}.{name}"
            assert endpoint["queue_group"] == "cto"  # replicas share each request


def test_stats_counters_grow_as_tasks_are_done(org_lab, org):
    org.start()

    def processed() -> int:
        stats = ours(gather(org_lab.url, "STATS", f"{AGENT_SERVICE}cto"), org.org)
        assert len(stats) == 1
        data = {e["name"]: e["data"] for e in stats[0]["endpoints"]}
        assert {"processed", "in_flight", "redeliveries", "errors",
                "processing_time"} <= set(data["status"])
        return data["status"]["processed"]

    before = processed()
    for n in range(3):
        org.assign(f"work {n}", to="cto")
    wait_until(lambda: org.agent("cto").stats["processed"] >= before + 3)
    stats = ours(gather(org_lab.url, "STATS", f"{AGENT_SERVICE}cto"), org.org)[0]
    status = next(e for e in stats["endpoints"] if e["name"] == "status")["data"]
    assert status["processed"] == before + 3 == processed()
    assert status["processing_time"] > 0 and status["average_processing_time"] > 0
    assert status["in_flight"] == 0 and status["errors"] == 0


# -- the endpoints --------------------------------------------------------------------------
def test_delegate_creates_a_durable_task_the_cto_completes_and_a_resend_is_a_duplicate(
        org_lab, org):
    org.start()
    task_id = f"svc-{uuid.uuid4().hex}"
    subject = f"genbrain.agents.cto.svc.{org.org}.delegate"
    body = {"title": "Price the API", "details": {"tier": "pro"},
            "requested_by": "billing", "id": task_id}

    async def main() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        nc = await nats.connect(org_lab.url, **raw_login(org_lab.url))
        try:
            completed = await nc.subscribe(f"genbrain.org.{org.org}.tasks.completed")
            first = await nc.request(subject, json.dumps(body).encode(), timeout=5)
            while True:
                event = json.loads((await completed.next_msg(timeout=10)).data)
                if event["task_id"] == task_id:
                    break
            again = await nc.request(subject, json.dumps(body).encode(), timeout=5)
            return json.loads(first.data), event, json.loads(again.data)
        finally:
            await nc.close()

    first, event, again = asyncio.run(main())
    assert first == {"task_id": task_id, "stream": "AGENT_TASKS", "seq": first["seq"],
                     "duplicate": False}
    assert event["role"] == "cto" and event["org"] == org.org
    assert event["instance"] == org.agent("cto").instance
    assert again == {**first, "duplicate": True}


def test_delegate_without_an_id_gets_a_fresh_task(org_lab, org):
    org.start()
    subject = f"genbrain.agents.cfo.svc.{org.org}.delegate"
    one, _ = request(org_lab.url, subject, {"title": "Budget", "requested_by": "board"})
    two, _ = request(org_lab.url, subject, {"title": "Budget", "requested_by": "board"})
    one_reply, two_reply = json.loads(one), json.loads(two)
    assert one_reply["task_id"] != two_reply["task_id"]
    assert not one_reply["duplicate"] and not two_reply["duplicate"]


@pytest.mark.parametrize("body, names", [
    (b"not json", "invalid JSON"),
    (b"[1, 2]", "expected a JSON object"),
    ({"requested_by": "billing"}, "field 'title' is required"),
    ({"title": "x"}, "field 'requested_by' is required"),
    ({"title": "x", "requested_by": "bill ing"}, "field 'requested_by'"),
    ({"title": "x", "requested_by": "billing", "id": "a.b"}, "field 'id'"),
    ({"title": "x", "requested_by": "billing", "detials": {}}, "unexpected field 'detials'"),
    ({"title": "x", "requested_by": "billing", "details": [1]}, "field 'details'"),
])
def test_a_bad_delegate_body_gets_a_400_micro_error_and_the_agent_works_on(
        org_lab, org, body, names):
    org.start()
    cto = org.agent("cto")
    data, headers = request(org_lab.url, f"genbrain.agents.cto.svc.{org.org}.delegate", body)
    assert data == b"" and headers["Nats-Service-Error-Code"] == "400"
    assert names in headers["Nats-Service-Error"]
    assert '"title"' in headers["Nats-Service-Error"]  # and what to send instead
    assert cto.is_running
    status, headers = request(org_lab.url, f"genbrain.agents.cto.svc.{org.org}.status", b"")
    assert "Nats-Service-Error" not in headers
    assert json.loads(status) == {"role": "cto", "instance": cto.instance, "org": org.org,
                                  "status": "ok", "processed": cto.stats["processed"],
                                  "in_flight": cto.in_flight}
    reply, _ = request(org_lab.url, f"genbrain.agents.cto.svc.{org.org}.delegate",
                       {"title": "still here?", "requested_by": "billing"})
    task_id = json.loads(reply)["task_id"]
    wait_until(lambda: cto.stats["processed"] >= 1)
    assert task_id
    stats = ours(gather(org_lab.url, "STATS", f"{AGENT_SERVICE}cto"), org.org)[0]
    delegate = next(e for e in stats["endpoints"] if e["name"] == "delegate")
    assert delegate["num_errors"] == 1 and delegate["data"]["rejected"] == 1
    assert delegate["data"]["accepted"] == 1


# -- one agent, one pool ---------------------------------------------------------------------
def test_a_killed_agent_stops_answering_and_an_undiscoverable_one_never_does(
        org_lab, agents, names):
    agent = agents(names.cto, names.org).start()
    quiet = agents(names.ceo, names.org, discoverable=False).start()
    found = ours(gather(org_lab.url, "PING"), names.org)
    assert [a["metadata"]["agentlab.instance"] for a in found] == [agent.instance]
    assert quiet.is_running
    agent.kill()
    wait_until(lambda: not ours(gather(org_lab.url, "PING"), names.org), timeout=5)
    agent.start()  # afresh: registered again, with a new id
    again = ours(gather(org_lab.url, "PING"), names.org)
    assert len(again) == 1 and again[0]["id"] != found[0]["id"]


def test_a_tool_pool_is_a_service_with_its_stats(org_lab, connect, unique):
    tool = f"add_{unique}"
    pool = ToolWorkerPool(connect("tool-host"), tool, lambda a, b: a + b, workers=2).start()
    try:
        with ToolClient(connect("caller"), f"conv-{unique}") as tools:
            assert tools.call(tool, timeout=5, a=2, b=3) == 5
        stats = gather(org_lab.url, "STATS", f"agentlab-tool-{tool}")
        assert len(stats) == 1
        assert stats[0]["metadata"]["agentlab.tool"] == tool
        assert stats[0]["metadata"]["agentlab.pool"] == pool.name
        endpoint = stats[0]["endpoints"][0]
        assert endpoint["subject"] == f"genbrain.tools.svc.{tool}.stats"
        assert endpoint["data"]["ok"] == 1 and endpoint["data"]["in_flight"] == 0
        data, _ = request(org_lab.url, endpoint["subject"], b"")
        assert json.loads(data)["calls"] == 1
    finally:
        pool.stop()
    assert gather(org_lab.url, "PING", f"agentlab-tool-{tool}") == []


# -- agentlab's own views ------------------------------------------------------------------------
def test_agentlab_status_lists_the_running_services(org_server, org_lab, org):
    from agentlab.protocol.services import service_report

    org.start()
    org.assign("count me", to="cfo")
    wait_until(lambda: org.agent("cfo").stats["processed"] >= 1)
    report = service_report(org_lab)
    rows = {row.instance: row for row in report.agents(org=org.org)}
    assert sorted(rows) == instances(org)
    assert rows[org.agent("cfo").instance].processed == 1
    assert rows[org.agent("cfo").instance].in_flight == 0
    env = {k: v for k, v in os.environ.items() if k != "AGENTLAB_NATS_URL"}
    env.update(org_server.client_env())  # the URL (also given as --url) and the login's file
    result = subprocess.run([sys.executable, "-m", "agentlab.programs.cli", "status", "--url",
                             org_lab.url], capture_output=True, text=True, timeout=30, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.index("Stream Report") < out.index("NATS micro services")
    for header in ("Service", "ID", "Org", "Role", "Instance", "Processed", "In Flight"):
        assert header in out
    for instance in instances(org):
        line = next(ln for ln in out.splitlines() if f" {instance} " in ln)
        assert org.org in line and "agentlab-agent-" in line


def test_the_observers_topology_lists_every_running_agent_instance(org_lab, unique):
    """Idle agents too: the topology names what answers $SRV.PING, not only who sent."""
    from agentlab.observe import Observer
    from agentlab.org import Organisation

    org = Organisation(org_lab, f"org{unique}", heartbeat_interval=0.2).start()
    observer = Observer(org_lab, poll_interval=0.2).start()
    try:
        observer.poll()
        mine = [s for s in observer.topology().services if s[0] == org.org]
        assert sorted((name, instance) for _, name, instance in mine) == sorted(
            (f"agentlab-agent-{role}", agent.instance)
            for role, agents in org.agents.items() for agent in agents)
        html = observer.topology()._repr_html_()
        assert "agentlab-agent-cto" in html and "$SRV.PING" in html
    finally:
        observer.stop()
        org.stop()


def test_a_refused_registration_is_logged_and_the_agent_works_on(caplog, unique):
    """nats-py reports a refused subscription only to its error callback: the violation log
    catches it, the agent says so once and keeps taking tasks, undiscoverable."""
    from agentlab import Client, EmbeddedServer
    from agentlab.org import Agent, Task, declare_reference_streams

    conf = """authorization { users = [
      {user: admin, password: admin-pw},
      {user: nosrv, password: nosrv-pw, permissions: {
          publish: {allow: [">"]}, subscribe: {allow: [">"], deny: ["$SRV.>"]}}}
    ]}"""
    with EmbeddedServer(name="no-srv", extra_config=conf) as server:
        admin = Client.open(server.url, name="admin", user="admin", password="admin-pw")
        cto = Client.open(server.url, name="cto", user="nosrv", password="nosrv-pw")
        try:
            declare_reference_streams(admin)
            with caplog.at_level("WARNING", logger="agentlab"):
                agent = Agent(cto, "cto", f"org{unique}").start()
            assert agent._micro is None
            assert any("not registered as NATS micro service" in r.getMessage()
                       and "$SRV.PING" in r.getMessage() for r in caplog.records)
            done = admin.subscribe(f"genbrain.org.org{unique}.tasks.completed")
            task = Task(org=f"org{unique}", role="cto", title="Still working",
                        requested_by="test")
            admin.js.publish("genbrain.agents.cto.tasks", task, msg_id=task.id)
            assert done.next(timeout=10).json()["title"] == "Still working"
            agent.stop()
        finally:
            cto.close()
            admin.close()
