"""`agentlab mcp` as a subprocess, driven by the official MCP SDK's clients (stdio and HTTP).

The organisation runs in this test process on the module's own nats-server; the hub joins
it through AGENTLAB_NATS_URL, as a hub started by Claude Desktop would join a running one.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from typing import Any

import pytest

mcp = pytest.importorskip("mcp")

from mcp import Client  # noqa: E402
from mcp.client.stdio import StdioServerParameters  # noqa: E402

from agentlab.mcp.server import HUB_TOOLS  # noqa: E402
from agentlab.org import Organisation, TaskLedger  # noqa: E402
from helpers import wait_for  # noqa: E402

ORG = "mcporg"
ACK_WAIT = 2.0


@pytest.fixture(scope="module")
def organisation(org_server, org_lab):
    org = Organisation(org_lab, ORG, ack_wait=ACK_WAIT, heartbeat_interval=0.5).start()
    yield org
    org.stop()


def hub_env(org_server) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTLAB_LLM_")}
    return env | org_server.client_env()  # AGENTLAB_NATS_URL and the login's file


def hub_command(*extra: str) -> list[str]:
    return ["-m", "agentlab", "mcp", "--org", ORG, "--ack-wait", str(ACK_WAIT), *extra]


def stdio_hub(org_server, *extra: str) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=hub_command(*extra),
                                 env=hub_env(org_server))


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 90))


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, f"{tool}{arguments}: {result.content}"
    assert result.structured_content is not None
    return result.structured_content


def completions_of(org_lab, task_id: str) -> list[Any]:
    from agentlab.org.streams import EVENTS_STREAM

    return [m for m in org_lab.js.read(EVENTS_STREAM, f"genbrain.org.{ORG}.tasks.completed")
            if m.json().get("task_id") == task_id]


async def delegate_and_work(client: Client, organisation, org_lab) -> None:
    """The acceptance flow, on any transport."""
    names = {tool.name for tool in (await client.list_tools()).tools}
    assert names == set(HUB_TOOLS)

    # delegate_task to the CTO: its completion, and progress notifications on the way
    notes: list[str] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        notes.append(message or "")

    result = await client.call_tool("delegate_task", {"role": "cto", "title": "Pick a queue",
                                                      "wait_s": 30}, progress_callback=on_progress)
    assert not result.is_error, result.content
    done = result.structured_content
    assert done["state"] == "completed" and done["role"] == "cto"
    assert done["result"]["decision"] in ("build it in-house", "use a managed service",
                                          "prototype first")
    assert any("stored in AGENT_TASKS" in n for n in notes), notes
    assert any("CTO looking at 'Pick a queue'" in n for n in notes), notes

    # next_task / complete_task: the LLM is the CTO for a task the CEO delegated
    organisation.scale("cto", 0)
    try:
        goal = organisation.assign("Open an office in Lisbon")
        held = await call(client, "next_task", role="cto", wait_s=20)
        assert held["title"] == "Technical plan: Open an office in Lisbon", held
        assert held["requested_by"] == "ceo" and held["state"] == "in_progress"
        status = await call(client, "get_task", id=held["id"])
        assert status["state"] == "in_progress" and status["held_by"] == "mcp"
        finished = await call(client, "complete_task", id=held["id"],
                              result={"decision": "rent a small office first"})
        assert finished["state"] == "completed" and finished["recorded_now"] is True
        record = TaskLedger.declare(org_lab).get(ORG, held["id"])
        assert record["instance"] == "mcp" and record["result"]["decision"].startswith("rent")
        wait_for(lambda: completions_of(org_lab, held["id"]), 10, "the completion announced")
        again = await client.call_tool("complete_task", {"id": held["id"], "result": "twice"})
        assert again.is_error and "not held" in again.content[0].text
        time.sleep(0.5)
        assert len(completions_of(org_lab, held["id"])) == 1, "recorded once"
        assert (await call(client, "get_task", id=held["id"]))["state"] == "completed"
        assert (await call(client, "get_task", id=goal.id))["state"] == "completed"

        # fail_task(retry=False): a dead letter with the error, at once
        doomed = organisation.assign("Rewrite it in COBOL", to="cto")
        held = await call(client, "next_task", role="cto", wait_s=20)
        assert held["id"] == doomed.id
        failed = await call(client, "fail_task", id=doomed.id, error="no COBOL programmers",
                            retry=False)
        assert failed["state"] == "failed"
        status = await call(client, "get_task", id=doomed.id)
        assert status["state"] == "dead_lettered" and status["reason"] == "given_up"
        assert "no COBOL programmers" in status["error"]
        letters = (await call(client, "list_dead_letters"))["dead_letters"]
        assert any(letter["task_id"] == doomed.id for letter in letters)
    finally:
        organisation.scale("cto", 1)


def test_stdio_hub_delegates_and_works_the_ctos_queue(org_server, org_lab, organisation):
    async def scenario() -> None:
        async with Client(stdio_hub(org_server)) as client:
            await delegate_and_work(client, organisation, org_lab)
    run(scenario())


MALFORMED: list[tuple[str, dict[str, Any], str]] = [
    ("delegate_task", {}, "role"),
    ("delegate_task", {"role": "cto"}, "title"),
    ("delegate_task", {"role": "a.b", "title": "x", "wait_s": 0}, "role"),
    ("delegate_task", {"role": "cto", "title": "x", "wait_s": -1}, "wait_s"),
    ("delegate_task", {"role": "cto", "title": "x", "details": "not an object"}, "details"),
    ("delegate_task", {"role": "", "title": "x"}, "role"),
    ("get_task", {"id": "has.a.dot"}, "id"),
    ("get_task", {"id": "no-such-task"}, "no task"),
    ("get_task", {"id": 42}, "id"),
    ("next_task", {"role": ">"}, "role"),
    ("next_task", {"role": "cto", "wait_s": 0}, "wait_s"),
    ("next_task", {"role": "cto", "hold_s": 99999}, "hold_s"),
    ("complete_task", {"id": "never-taken", "result": {}}, "not held"),
    ("complete_task", {"id": "never-taken"}, "result"),
    ("fail_task", {"id": "never-taken", "error": "x"}, "not held"),
    ("fail_task", {"id": "never-taken", "error": ""}, "error"),
    ("post_to_meeting", {"meeting_id": "*", "text": "hi"}, "meeting_id"),
    ("read_meeting", {"meeting_id": "a b"}, "meeting_id"),
    ("call_tool", {"tool": "no spaces please"}, "tool"),
    ("redrive_dead_letter", {"seq": 999999}, "dead letter"),
    ("consumer_report", {"stream": "NO_SUCH_STREAM"}, "NO_SUCH_STREAM"),
    ("no_such_tool", {}, "no_such_tool"),
]


def test_malformed_calls_are_tool_errors_and_the_hub_keeps_serving(org_server, organisation):
    async def scenario() -> None:
        async with Client(stdio_hub(org_server)) as client:
            for tool, arguments, named in MALFORMED:
                result = await client.call_tool(tool, arguments)
                text = " ".join(getattr(part, "text", "") for part in result.content)
                assert result.is_error, f"{tool}{arguments} answered {result.content}"
                assert named.lower() in text.lower(), f"{tool}{arguments}: {text}"
            agents = await call(client, "list_agents")
            roles = {entry["role"]: entry for entry in agents["roles"]}
            assert {"ceo", "cto", "cfo"} <= set(roles)
            assert roles["cto"]["instances"], roles["cto"]
    run(scenario())
    assert len(MALFORMED) >= 20


def test_an_abandoned_task_returns_to_its_queue_as_a_redelivery(org_server, organisation):
    async def scenario() -> None:
        async with Client(stdio_hub(org_server)) as client:
            organisation.scale("cto", 0)
            try:
                task = organisation.assign("Think about it, then forget", to="cto")
                first = await call(client, "next_task", role="cto", hold_s=0.5)
                assert first["id"] == task.id and first["delivery"] == 1
                # no answer: the hold runs out, then the ack wait; delivered again
                again = await call(client, "next_task", role="cto", wait_s=ACK_WAIT + 10)
                assert again["id"] == task.id and again["redelivered"] is True
                assert again["delivery"] == 2
                await call(client, "complete_task", id=task.id, result="done at last")
            finally:
                organisation.scale("cto", 1)
    run(scenario())


def test_meetings_tools_and_reports(org_server, organisation):
    async def scenario() -> None:
        async with Client(stdio_hub(org_server)) as client:
            await call(client, "post_to_meeting", meeting_id="mcp-q3", text="Ship in May?")
            await call(client, "post_to_meeting", meeting_id="mcp-q3", text="Ship in May",
                       sender="ceo", decision=True)
            meeting = await call(client, "read_meeting", meeting_id="mcp-q3")
            assert [e["text"] for e in meeting["transcript"]] == ["Ship in May?", "Ship in May"]
            assert [e["sender"] for e in meeting["decisions"]] == ["ceo"]
            report = (await call(client, "stream_report"))["report"]
            assert "AGENT_TASKS" in report and "DEAD_LETTERS" in report
            consumers = (await call(client, "consumer_report"))["report"]
            assert "cto" in consumers
            resources = {str(r.uri) for r in (await client.list_resources()).resources}
            assert {"agentlab://protocol/asyncapi.json", "agentlab://streams/report"} <= resources
            doc = await client.read_resource("agentlab://protocol/asyncapi.json")
            assert '"asyncapi": "3.0.0"' in doc.contents[0].text
    run(scenario())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_streamable_http_hub(org_server, org_lab, organisation):
    port = free_port()
    hub = subprocess.Popen([sys.executable, *hub_command("--http", str(port))],
                           env=hub_env(org_server), stderr=subprocess.PIPE, text=True)
    try:
        def listening() -> bool:
            if hub.poll() is not None:
                raise AssertionError(f"the hub exited: {hub.stderr.read()}")
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", port)) == 0
        wait_for(listening, 30, "the hub's HTTP port")

        async def scenario() -> None:
            async with Client(f"http://127.0.0.1:{port}/mcp") as client:
                await delegate_and_work(client, organisation, org_lab)
        run(scenario())
    finally:
        hub.terminate()
        try:
            hub.wait(10)
        except subprocess.TimeoutExpired:
            hub.kill()
            hub.wait()


def test_on_its_own_the_hub_runs_an_embedded_organisation_the_llm_joins():
    """What Claude Desktop gets from `agentlab mcp --llm-plays cto`: a server and the
    organisation without a CTO agent; the LLM works the CTO's queue."""
    env = {k: v for k, v in os.environ.items()
           if k != "AGENTLAB_NATS_URL" and not k.startswith("AGENTLAB_LLM_")}
    params = StdioServerParameters(command=sys.executable, env=env,
                                   args=["-m", "agentlab", "mcp", "--llm-plays", "cto"])

    async def scenario() -> None:
        async with Client(params) as client:
            agents = await call(client, "list_agents")
            up = {e["role"] for e in agents["roles"] if e["instances"]}
            assert up == {"ceo", "cfo"}, agents
            done = await call(client, "delegate_task", role="ceo", title="Enter Brazil",
                              wait_s=30)
            assert done["state"] == "completed" and len(done["result"]["delegated"]) == 2
            held = await call(client, "next_task", role="cto", wait_s=20)
            assert held["title"] == "Technical plan: Enter Brazil"
            assert held["id"] in done["result"]["delegated"]
            finished = await call(client, "complete_task", id=held["id"],
                                  result="hire a local team")
            assert finished["result"] == {"answer": "hire a local team"}
    run(scenario())
