"""MCP servers' tools for agents (agentlab.mcp.toolservers): a real MCP server
(tests/mcp_servers/arith.py), over stdio and streamable HTTP, called through tools.execute.*."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentlab.mcp import McpServerError, McpToolServer
from agentlab.org.tools import ToolClient, ToolError

ARITH = str(Path(__file__).parent / "mcp_servers" / "arith.py")
ARITH_TOOLS = ["add", "shout", "fail", "slow", "crash", "bad_name"]  # 'bad.name' mapped


@pytest.fixture
def mcp_servers():
    """McpToolServers made in a test, stopped after it (even when it fails)."""
    made: list[McpToolServer] = []

    def make(*args, **kwargs) -> McpToolServer:
        kwargs.setdefault("max_deliver", 1)  # an MCP failure is final; keep timeouts quick
        server = McpToolServer(*args, **kwargs)
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop()


@pytest.fixture
def tools(org_lab, connect, unique):
    with ToolClient(connect("caller"), f"conv-{unique}") as client:
        yield client


@pytest.fixture
def arith_http():
    """arith.py serving streamable HTTP on a free port: its /mcp URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, ARITH, "--http", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"arith.py --http {port} did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_stdio_tools_reach_agents(org_lab, connect, tools, mcp_servers, unique):
    server = mcp_servers(connect("mcp-host"), [sys.executable, ARITH],
                         prefix=f"{unique}-").start()
    names = {f"{unique}-{name}": name for name in ARITH_TOOLS}
    assert list(server.tools) == list(names)
    add = server.tools[f"{unique}-add"]
    assert (add.name, add.description) == ("add", "Add two integers.")
    assert add.input_schema["required"] == ["a", "b"]
    assert server.tools[f"{unique}-bad_name"].name == "bad.name"

    # MCPServer wraps a plain return value as the structured content {"result": ...}.
    assert tools.call(f"{unique}-add", a=2, b=3, timeout=10) == {"result": 5}
    assert tools.call(f"{unique}-shout", text="hi", timeout=10) == "HI!"  # text content
    assert tools.call(f"{unique}-bad_name", timeout=10) == {"result": "unreachable"}

    with pytest.raises(ToolError) as failed:
        tools.call(f"{unique}-fail", reason="on purpose", timeout=10)
    assert failed.value.error_type == "McpToolError" and not failed.value.retryable
    assert "failing on purpose: on purpose" in failed.value.remote_message
    assert failed.value.result.attempts == 1
    with pytest.raises(ToolError, match="validation error") as invalid:
        tools.call(f"{unique}-add", a="x", b=1, timeout=10)
    assert invalid.value.error_type == "McpToolError"

    # Each call went through TOOL_REQUESTS to the tool's own pool.
    stats = {name: server.pools[name].stats for name in names}
    assert (stats[f"{unique}-add"].ok, stats[f"{unique}-add"].errors) == (1, 1)
    assert stats[f"{unique}-shout"].ok == stats[f"{unique}-bad_name"].ok == 1
    assert (stats[f"{unique}-fail"].errors, stats[f"{unique}-fail"].retries) == (1, 0)

    server.stop()
    assert (server.tools, server.pools, server.is_running) == ({}, {}, False)


def test_only_the_tools_asked_for(org_lab, connect, tools, mcp_servers, unique):
    server = mcp_servers(connect("mcp-host"), [sys.executable, ARITH], tools=["add"],
                         prefix=f"{unique}-").start()
    assert list(server.tools) == list(server.pools) == [f"{unique}-add"]
    assert tools.call(f"{unique}-add", a=40, b=2, timeout=10) == {"result": 42}

    unknown = mcp_servers(connect("mcp-host-2"), [sys.executable, ARITH],
                          tools=["add", "nope"], prefix=f"{unique}x-")
    with pytest.raises(ValueError, match=r"has no tool 'nope'; it offers: add, shout, fail"):
        unknown.start()
    assert unknown.service_state == "stopped" and unknown.pools == {}


def test_bad_command_fails_start_quickly(org_lab, connect, mcp_servers, unique):
    started = time.monotonic()
    missing = mcp_servers(connect("mcp-host"), [f"/nonexistent/{unique}", "serve"])
    with pytest.raises(McpServerError, match=rf"/nonexistent/{unique} serve.*on PATH"):
        missing.start()
    crashing = mcp_servers(connect("mcp-host"), [sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(McpServerError, match="exited before it answered"):
        crashing.start()
    assert time.monotonic() - started < 10
    assert missing.service_state == crashing.service_state == "stopped"


def test_a_silent_process_times_out(org_lab, connect, mcp_servers):
    mute = mcp_servers(connect("mcp-host"), [sys.executable, "-c", "import time; time.sleep(60)"],
                       start_timeout=1)
    started = time.monotonic()
    with pytest.raises(McpServerError, match=r"did not answer the MCP handshake.* within 1 s"):
        mute.start()
    assert time.monotonic() - started < 8  # the timeout, then the subprocess's shutdown


def test_server_arguments_are_checked(client):
    with pytest.raises(ValueError, match=r"pass a command as a list, e.g. \['python', 'srv.py'\]"):
        McpToolServer(client, "python srv.py")
    with pytest.raises(ValueError, match="non-empty list of str"):
        McpToolServer(client, [])
    with pytest.raises(ValueError, match="'a.b'"):
        McpToolServer(client, ["x"], prefix="a.b")


def test_a_slow_call_times_out_and_the_session_carries_on(org_lab, connect, tools,
                                                          mcp_servers, unique):
    mcp_servers(connect("mcp-host"), [sys.executable, ARITH], tools=["slow", "add"],
                prefix=f"{unique}-", timeout=0.5).start()
    with pytest.raises(ToolError) as slow:
        tools.call(f"{unique}-slow", seconds=1.5, timeout=10)
    assert slow.value.timed_out
    assert tools.call(f"{unique}-add", a=1, b=1, timeout=10) == {"result": 2}


def test_a_server_that_dies_fails_calls_clearly_and_start_reconnects(org_lab, connect, tools,
                                                                     mcp_servers, unique):
    server = mcp_servers(connect("mcp-host"), [sys.executable, ARITH],
                         tools=["crash", "add"], prefix=f"{unique}-").start()
    with pytest.raises(ToolError, match="McpServerError: The session with MCP server"):
        tools.call(f"{unique}-crash", timeout=10)
    with pytest.raises(ToolError, match=r"has ended .*start\(\) the McpToolServer again") as gone:
        tools.call(f"{unique}-add", a=1, b=2, timeout=10)
    assert gone.value.error_type == "McpServerError"
    assert not server.is_running
    server.start()
    assert server.is_running
    assert tools.call(f"{unique}-add", a=1, b=2, timeout=10) == {"result": 3}


def test_streamable_http(org_lab, connect, tools, mcp_servers, arith_http, unique):
    server = mcp_servers(connect("mcp-host"), arith_http, prefix=f"{unique}-").start()
    assert list(server.tools) == [f"{unique}-{name}" for name in ARITH_TOOLS]
    assert tools.call(f"{unique}-add", a=2, b=3, timeout=10) == {"result": 5}
    assert server.pools[f"{unique}-add"].stats.ok == 1


def test_no_http_server_fails_start(org_lab, connect, mcp_servers):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/mcp"
    with pytest.raises(McpServerError, match=rf"{url}: .*streamable-HTTP endpoint"):
        mcp_servers(connect("mcp-host"), url).start()


def test_without_the_sdk_the_import_error_says_what_to_install():
    code = "import sys; sys.modules['mcp'] = None; import agentlab.mcp"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode != 0
    assert "pip install 'agentlab-nats[mcp]'" in run.stderr


def test_a_model_backed_role_calls_an_mcp_servers_tool(org_lab, connect, mcp_servers, unique):
    """The MCP ecosystem's tools, offered to a model by their own schemas, called through
    tools.execute.* by a model-backed agent."""
    from agentlab.core.subjects import Subjects
    from agentlab.llm import model_role
    from agentlab.llm.scripted import ScriptedModel, answer, tool_call
    from agentlab.org import Agent, Task, TaskLedger, publish_task
    from helpers import wait_for

    server = mcp_servers(connect("mcp-host"), [sys.executable, ARITH], tools=["add"],
                         prefix=f"{unique}-").start()
    specs = server.tool_specs()
    assert [(s.name, s.parameters["required"]) for s in specs] == [(f"{unique}-add", ["a", "b"])]
    with ScriptedModel() as model:
        model.script = [tool_call(f"{unique}-add", {"a": 20, "b": 22}), answer("It is 42.")]
        role = f"cto{unique}"
        agent = Agent(connect(role), role, "acme", model_role("You add.", tools=specs,
                                                               config=model.config()),
                      ack_wait=5).start()
        try:
            task = Task(org="acme", role=role, title="What is 20 + 22?", requested_by="ceo")
            publish_task(org_lab, Subjects(), task)
            ledger = TaskLedger.declare(org_lab)
            record = wait_for(lambda: ledger.get("acme", task.id), 20, "the completion")
        finally:
            agent.stop()
        result = record["result"]
        assert result["answer"] == "It is 42."
        assert result["tool_calls"] == [{"name": f"{unique}-add",
                                         "arguments": {"a": 20, "b": 22}, "ok": True}]
        # the model was told the tool's answer, as the MCP server gave it
        tool_message = model.requests[1]["body"]["messages"][-1]
        assert tool_message["role"] == "tool" and "42" in tool_message["content"]
    assert server.pools[f"{unique}-add"].stats.ok == 1
