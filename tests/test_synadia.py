"""The Synadia Agent Protocol v0.3 both ways, with the official SDKs, against a real server.

Hosting: the reference organisation's roles are found by the client SDK's discovery and
answer its prompts from durable tasks. Calling: an agent hosted with the host SDK does the
work of a role the CEO delegates to, and its answer is announced as a task completion.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from helpers import stored

pytest.importorskip("synadia_ai.agents")  # the SDKs need Python 3.11
jsonschema = pytest.importorskip("jsonschema")

from synadia_ai.agent_service import AgentService, PromptStream  # noqa: E402
from synadia_ai.agents import (  # noqa: E402
    Agents,
    DiscoverFilter,
    Envelope,
    ProtocolError,
    ResponseChunk,
    StatusChunk,
)

from agentlab.org import REFERENCE_ROLES, Organisation, TaskLedger  # noqa: E402
from agentlab.protocol.synadia import (  # noqa: E402
    AGENT_NAME,
    prompt_task_id,
    remote_role,
    serve_organisation,
)

SCHEMAS = Path(__file__).resolve().parents[1] / "agentlab" / "wire" / "schemas"


def run(client: Any, coro: Coroutine[Any, Any, Any], timeout: float) -> Any:
    """Run an SDK coroutine on the bridge loop, where the client's nats-py connection lives."""
    return client._bridge.run(asyncio.wait_for(coro, timeout), operation="synadia test")


async def discover(nc: Any, owner: str) -> list[Any]:
    agents = Agents(nc=nc)
    try:
        return await agents.discover(filter=DiscoverFilter(agent=AGENT_NAME, owner=owner))
    finally:
        await agents.close()


async def prompt(nc: Any, owner: str, role: str, envelope: Envelope, *,
                 inactivity: float = 10.0) -> list[tuple[str, str]]:
    """Every item of the stream as (kind, text), until the terminator ends it ("done")."""
    agents = Agents(nc=nc)
    try:
        [agent] = await agents.discover(
            filter=DiscoverFilter(agent=AGENT_NAME, owner=owner, session_name=role))
        items = []
        async for item in agent.prompt(envelope, timeout=inactivity, max_wait_s=60):
            if isinstance(item, StatusChunk):
                items.append(("status", item.status))
            elif isinstance(item, ResponseChunk):
                items.append(("response", item.text))
        return items
    finally:
        await agents.close()


@pytest.fixture
def org(org_lab, unique):
    org = Organisation(org_lab, f"org{unique}", ack_wait=2, heartbeat_interval=0.2,
                       monitor_interval=0.2).start()
    yield org
    org.stop()


@pytest.fixture
def gateway(org):
    gateway = serve_organisation(org, heartbeat_interval=1, keepalive_interval=0.5,
                                 ledger_poll=0.5)
    yield gateway
    gateway.stop()


def test_discovery_lists_the_ceo_cto_and_cfo(gateway, org, connect):
    caller = connect("sap-caller")
    found = run(caller, discover(caller.nc, org.org), 10)
    by_role = {agent.session_name: agent for agent in found}
    assert set(by_role) == {"ceo", "cto", "cfo"}
    cto = by_role["cto"]
    assert cto.prompt_subject == f"agents.prompt.{AGENT_NAME}.{org.org}.cto"
    assert cto.prompt_endpoint.queue_group == "agents"
    assert cto.protocol_version == "0.3"
    assert cto.metadata["org"] == org.org and cto.metadata["role"] == "cto"
    assert cto.metadata["tasks_subject"] == org.subjects.tasks("cto")
    status = run(caller, cto.status(), 5)  # the heartbeat-shaped status reply, with extras
    assert status.model_extra["role"] == "cto" and status.model_extra["instances"] == 1


def test_a_prompt_to_the_cto_streams_progress_and_its_result_to_done(gateway, org, connect):
    caller = connect("sap-caller")
    items = run(caller, prompt(caller.nc, org.org, "cto", Envelope(prompt="Design the API")),
                20)
    assert items[0] == ("status", "ack")  # the protocol's leading ack
    statuses = [text for kind, text in items if kind == "status"]
    [queued] = [s for s in statuses if s.startswith("queued:")]
    assert "progress:CTO looking at 'Design the API'" in statuses
    kind, text = items[-1]  # then the terminator: the iterator ended, the stream is done
    assert kind == "response"
    record = TaskLedger.declare(org.lab).get(org.org, queued.removeprefix("queued:"))
    assert record is not None and json.loads(text) == record["result"]
    assert record["result"]["decision"]


def test_a_prompt_waits_for_a_cto_scaled_to_zero_and_completes_once(gateway, org, org_lab,
                                                                    connect):
    caller = connect("sap-caller")
    org.scale("cto", 0)
    prompt_id = uuid.uuid4().hex
    envelope = Envelope.model_validate({"prompt": "Pick a database", "prompt_id": prompt_id})
    # The caller gives up after 2 s without a chunk: only the keep-alive acks hold it open.
    waiting = caller._bridge.submit(prompt(caller.nc, org.org, "cto", envelope,
                                           inactivity=2.0))
    time.sleep(5)
    assert not waiting.done()
    org.scale("cto", 1)
    items = waiting.result(timeout=20)
    assert items[-1][0] == "response"
    assert sum(1 for item in items if item == ("status", "ack")) >= 4  # kept alive meanwhile
    task_id = prompt_task_id(org.org, "cto", prompt_id)
    assert ("status", f"queued:{task_id}") in items
    assert org.agent("cto").stats["processed"] == 1 and org.stats()["processed"] == 1
    assert stored(org_lab, "KV_TASK_LEDGER", f"$KV.TASK_LEDGER.{org.org}.{task_id}") == 1
    # The same prompt again: answered from the ledger, not run again.
    again = run(caller, prompt(caller.nc, org.org, "cto", envelope), 20)
    assert ("status", f"recorded:{task_id}") in again and again[-1] == items[-1]
    assert org.stats()["processed"] == 1
    assert stored(org_lab, "AGENT_TASKS", org.subjects.tasks("cto")) == 0


def test_the_ceo_delegates_to_an_agent_hosted_with_the_host_sdk(org_lab, unique, connect):
    owner, seen = f"o{unique}", []

    async def on_prompt(envelope: Envelope, stream: PromptStream) -> None:
        seen.append(envelope)
        await stream.send(StatusChunk(status="thinking"))
        await stream.send(f"echo: {envelope.prompt}")

    async def start_echo(nc: Any) -> AgentService:
        service = AgentService(agent="echo", owner=owner, session_name="default", nc=nc)
        service.on_prompt(on_prompt)
        await service.start()
        return service

    async def ceo(task: Any, ctx: Any) -> dict[str, Any]:
        research = await ctx.adelegate("analyst", f"Research: {task.title}")
        return {"delegated": [research.id]}

    host = connect("echo-host")
    echo = run(host, start_echo(host.nc), 10)
    org = Organisation(org_lab, f"org{unique}", ack_wait=2, heartbeat_interval=0.2,
                       roles={"ceo": ceo, "analyst": remote_role("echo", owner=owner),
                              "cto": REFERENCE_ROLES["cto"]}).start()
    try:
        done = org_lab.subscribe(org.subjects.tasks_completed(org.org))
        notes = org_lab.subscribe(org.subjects.inbox("ceo"))
        goal = org.assign("the market")
        direct = org.assign("Just echo this", to="analyst")  # a plain client delegates too
        events = {e["task_id"]: e for e in (m.json() for m in done.messages(count=3,
                                                                            timeout=20))}
        assert events[goal.id]["role"] == "ceo"
        [research_id] = events[goal.id]["result"]["delegated"]
        schema = json.loads((SCHEMAS / "task_completed.schema.json").read_text())
        for task_id, text in ((research_id, "echo: Research: the market"),
                              (direct.id, "echo: Just echo this")):
            completion = events[task_id]
            jsonschema.validate(completion, schema)
            assert completion["role"] == "analyst"
            assert completion["result"]["text"] == text
            assert completion["result"]["agent"] == "echo"
        # Each prompt carried its task's id, the retry key a remote agentlab gateway uses.
        assert {e.extras["prompt_id"] for e in seen} == {research_id, direct.id}
        # The remote agent's status chunks reached the CEO as the analyst's progress notes.
        texts = [m.json()["payload"].get("text") for m in notes.messages(count=1, timeout=5)]
        assert "thinking" in texts
    finally:
        org.stop()
        run(host, echo.stop(), 10)


async def raw_prompt(nc: Any, subject: str, payload: bytes,
                     headers: dict[str, str]) -> list[Any]:
    """A prompt as `nats req -H ... --wait-for-empty` sends it: plain text, no SDK."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    try:
        await nc.publish(subject, payload, reply=inbox, headers=headers)
        chunks = []
        while True:
            msg = await sub.next_msg(timeout=5)
            if msg.data == b"" and not msg.headers:
                return chunks
            chunks.append(json.loads(msg.data))
    finally:
        await sub.unsubscribe()


def test_a_plain_text_prompt_keyed_by_its_nats_msg_id_header_runs_once(gateway, org, connect):
    caller = connect("sap-caller")
    [cfo] = [a for a in run(caller, discover(caller.nc, org.org), 10)
             if a.session_name == "cfo"]
    prompt_id = uuid.uuid4().hex
    task_id = prompt_task_id(org.org, "cfo", prompt_id)
    answers = [run(caller, raw_prompt(caller.nc, cfo.prompt_subject, b"Budget the launch",
                                      {"Nats-Msg-Id": prompt_id}), 20) for _ in range(2)]
    first, second = answers
    assert {"type": "status", "data": f"queued:{task_id}"} in first
    assert {"type": "status", "data": f"recorded:{task_id}"} in second
    assert first[-1]["type"] == "response" and first[-1] == second[-1]
    assert org.stats()["processed"] == 1


def test_a_task_that_fails_for_good_ends_its_prompt_with_a_service_error(gateway, org,
                                                                         connect):
    caller = connect("sap-caller")
    envelope = Envelope.model_validate({"prompt": "Use the broken vendor",
                                        "details": {"always_fail": True}})
    with pytest.raises(ProtocolError, match="service error 500: .*failed for good"):
        run(caller, prompt(caller.nc, org.org, "cto", envelope), 30)
    assert org.stats()["failed"] == 3  # max_deliver attempts, then the dead letter


def test_an_agentlab_role_backed_by_another_organisations_gateway(gateway, org, org_lab,
                                                                  unique):
    """agentlab calling agentlab through the protocol: the remote task runs once."""
    buyer = Organisation(org_lab, f"buyer{unique}", ack_wait=2, heartbeat_interval=0.2,
                         roles={"tech": remote_role(AGENT_NAME, owner=org.org,
                                                    session="cto")}).start()
    try:
        done = org_lab.subscribe(buyer.subjects.tasks_completed(buyer.org))
        task = buyer.assign("Choose a queue", to="tech")
        [completion] = [m.json() for m in done.messages(count=1, timeout=20)]
        remote_id = prompt_task_id(org.org, "cto", task.id)  # prompt_id = the task's id
        record = TaskLedger.declare(org_lab).get(org.org, remote_id)
        assert record is not None and completion["result"]["answer"] == record["result"]
        assert completion["result"]["session"] == "cto"
        assert org.stats()["processed"] == 1
    finally:
        buyer.stop()
