"""Asynchronous tool execution (seed 002) on a real server: pools, callers, retries, big
payloads."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter

import pytest

from agentlab import ObjectBucket, Subjects
from agentlab.org import TaskLedger
from agentlab.org.tools import (
    RetryableToolError,
    ToolClient,
    ToolError,
    ToolResult,
    ToolTimeout,
    ToolWorkerPool,
)
from agentlab.wire import json_schemas
from helpers import wait_for

S = Subjects()


@pytest.fixture
def pools():
    """Pools started in a test, stopped after it (even when it fails)."""
    started: list[ToolWorkerPool] = []

    def make(*args, **kwargs) -> ToolWorkerPool:
        pool = ToolWorkerPool(*args, **kwargs)
        started.append(pool)
        return pool

    yield make
    for pool in started:
        pool.stop()


def add(a: int, b: int) -> int:
    return a + b


def test_wire_models_are_registered():
    assert {"ToolCall", "ToolResult"} <= set(json_schemas())


def test_round_trip(org_lab, connect, pools, unique):
    tool = f"add_{unique}"
    pool = pools(connect("tool-host"), tool, add, workers=1).start()
    with ToolClient(connect("caller"), f"conv-{unique}") as tools:
        assert tools.call(tool, timeout=5, a=2, b=3) == 5
        call_id = tools.call_async(tool, a=40, b=2)
        result = tools.result(call_id, timeout=5)
    assert isinstance(result, ToolResult) and result.ok
    assert (result.value, result.call_id, result.tool, result.attempts) == (42, call_id, tool, 1)
    assert result.conversation_id == f"conv-{unique}"
    assert result.worker == f"{pool.name}.w0"
    stats = pool.stats
    assert (stats.calls, stats.ok, stats.errors, stats.retries) == (2, 2, 0, 0)


def test_async_tool_and_async_caller_with_handler(org_lab, connect, pools, unique):
    tool = f"echo_{unique}"

    async def echo(text: str) -> dict:
        await asyncio.sleep(0.01)
        return {"echo": text}

    pools(connect("tool-host"), tool, echo).start()
    tools = ToolClient(connect("caller"), f"conv-{unique}")
    seen: list[str] = []
    tools.on_result(lambda r: seen.append(r.call_id))

    async def main():  # another event loop, as in a notebook cell with top-level await
        value = await tools.acall(tool, timeout=5, text="hi")
        call_id = await tools.acall_async(tool, text="again")
        got = [r async for r in tools.aresults(count=1, timeout=5)]
        return value, call_id, got

    value, call_id, got = asyncio.run(main())
    tools.close()
    assert value == {"echo": "hi"}
    assert [r.call_id for r in got] == [call_id] and got[0].value == {"echo": "again"}
    assert len(seen) == 2 and seen[1] == call_id


def test_caller_continues_with_other_conversations(org_lab, connect, pools, unique):
    tool = f"slow_{unique}"
    duration = 1.0

    def slow(topic: str) -> str:
        time.sleep(duration)
        return f"report on {topic}"

    pools(connect("tool-host"), tool, slow, workers=3).start()
    agent = connect("triage")
    conversations = [ToolClient(agent, f"conv-{unique}-{i}") for i in range(3)]
    for tools in conversations:
        tools.start()
    started = time.monotonic()
    call_ids = [tools.call_async(tool, topic=f"topic {i}")
                for i, tools in enumerate(conversations)]
    published = time.monotonic() - started
    # The agent is free while the tools run: all three calls are out, none answered yet.
    assert published < 0.5 * duration
    assert all(tools.in_flight == [cid]
               for tools, cid in zip(conversations, call_ids, strict=True))
    results = [tools.result(cid, timeout=5)
               for tools, cid in zip(conversations, call_ids, strict=True)]
    elapsed = time.monotonic() - started
    assert [r.value for r in results] == [f"report on topic {i}" for i in range(3)]
    assert duration <= elapsed < 1.8 * duration, f"took {elapsed:.2f} s: the calls ran in series"
    for tools in conversations:
        tools.close()


def test_pool_of_three_splits_thirty_calls(org_lab, connect, pools, unique):
    tool = f"work_{unique}"
    conversation = f"conv-{unique}"

    def work(n: int) -> int:
        time.sleep(0.02)
        return n * n

    pool = pools(connect("tool-host"), tool, work, workers=3).start()
    caller = connect("caller")
    wire = caller.subscribe(S.tool_result(conversation))  # every result message, raw
    tools = ToolClient(caller, conversation)
    call_ids = {tools.call_async(tool, n=n): n for n in range(30)}
    results = list(tools.results(count=30, timeout=10))
    assert sorted(r.call_id for r in results) == sorted(call_ids)
    assert all(r.ok and r.value == call_ids[r.call_id] ** 2 for r in results)
    assert list(tools.results(timeout=0.3)) == []  # nothing more arrives
    on_wire = Counter(m.json()["call_id"] for m in wire.messages(timeout=0.3))
    assert on_wire == Counter(dict.fromkeys(call_ids, 1))  # each call answered exactly once
    stats = pool.stats
    assert sorted(stats.per_worker) == [f"{pool.name}.w{i}" for i in range(3)]
    assert all(count > 0 for count in stats.per_worker.values()), stats.per_worker
    assert sum(stats.per_worker.values()) == stats.calls == stats.ok == 30
    tools.close()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_timeout_becomes_an_error_result_after_retries(org_lab, connect, pools, unique, kind):
    tool = f"hang_{kind}_{unique}"
    started = Counter()

    def hang_sync() -> str:
        started["n"] += 1
        time.sleep(1.0)  # its thread outlives the 0.3 s timeout; the result is discarded
        return "too late"

    async def hang_async() -> str:
        started["n"] += 1
        await asyncio.sleep(5)
        return "too late"

    fn = hang_sync if kind == "sync" else hang_async
    pool = pools(connect("tool-host"), tool, fn, timeout=0.3, max_deliver=2,
                 retry_delay=0.1).start()
    tools = ToolClient(connect("caller"), f"conv-{unique}")
    began = time.monotonic()
    result = tools.result(tools.call_async(tool), timeout=5)
    assert time.monotonic() - began < 2.0
    assert not result.ok and result.timed_out
    assert result.error.type == "ToolTimeout" and result.error.retryable
    assert result.attempts == 2 and started["n"] == 2
    stats = pool.stats
    assert (stats.timeouts, stats.retries, stats.errors, stats.ok) == (2, 1, 1, 0)
    with pytest.raises(ToolError, match=rf"Tool '{tool}' call \w+ .* 2 attempts.*ToolTimeout"):
        tools.call(tool, timeout=5)
    tools.close()


def test_retryable_error_succeeds_on_second_attempt(org_lab, connect, pools, unique):
    tool = f"flaky_{unique}"
    attempts = Counter()

    def flaky(key: str) -> str:
        attempts[key] += 1
        if attempts[key] == 1:
            raise RetryableToolError("rate limited, try again")
        return f"{key} done"

    pool = pools(connect("tool-host"), tool, flaky, retry_delay=0.1).start()
    tools = ToolClient(connect("caller"), f"conv-{unique}")
    result = tools.result(tools.call_async(tool, key="k1"), timeout=5)
    assert result.ok and result.value == "k1 done"
    assert result.attempts == 2 and attempts["k1"] == 2
    assert (pool.stats.retries, pool.stats.ok, pool.stats.errors) == (1, 1, 0)
    tools.close()


def test_non_retryable_error_is_answered_at_once(org_lab, connect, pools, unique):
    tool = f"strict_{unique}"
    calls = Counter()

    def strict(order: str) -> str:
        calls["n"] += 1
        raise ValueError(f"order {order!r} does not exist")

    pool = pools(connect("tool-host"), tool, strict, retry_delay=0.1).start()
    tools = ToolClient(connect("caller"), f"conv-{unique}")
    call_id = tools.call_async(tool, order="A-1")
    result = tools.result(call_id, timeout=5)
    assert not result.ok and not result.timed_out
    assert (result.error.type, result.error.retryable, result.attempts) == ("ValueError", False, 1)
    assert "does not exist" in result.error.message
    with pytest.raises(ToolError) as raised:
        tools.call(tool, timeout=5, order="B-2")
    text = str(raised.value)
    assert tool in text and raised.value.call_id in text and "ValueError" in text
    assert "'B-2' does not exist" in text and raised.value.call_id != call_id
    time.sleep(0.4)  # a retry would have come by now
    assert calls["n"] == 2 and pool.stats.retries == 0 and pool.stats.errors == 2
    info = org_lab.js.consumer_info("TOOL_REQUESTS", pool.consumer_name)
    assert info.num_pending == 0 and info.num_ack_pending == 0  # termed: gone from the queue
    tools.close()


def test_arguments_that_do_not_fit_the_function(org_lab, connect, pools, unique):
    tool = f"add_{unique}"
    pools(connect("tool-host"), tool, add).start()
    tools = ToolClient(connect("caller"), f"conv-{unique}")
    with pytest.raises(ToolError, match=r"InvalidArguments: .*'b'"):
        tools.call(tool, timeout=5, a=1)
    tools.close()


def test_big_argument_and_result_go_through_the_object_store(org_lab, connect, pools, unique):
    tool = f"big_{unique}"
    conversation = f"conv-{unique}"
    blob = "x" * (2 * 1024 * 1024)
    received: list[int] = []

    def enlarge(text: str) -> str:
        received.append(len(text))
        return text.upper() + "!"

    pools(connect("tool-host"), tool, enlarge).start()
    caller = connect("caller")
    requests_wire = caller.subscribe(S.tool_execute(tool))
    results_wire = caller.subscribe(S.tool_result(conversation))
    tools = ToolClient(caller, conversation)
    call_id = tools.call_async(tool, text=blob)
    result = tools.result(call_id, timeout=10)
    assert result.ok and result.value == blob.upper() + "!" and received == [len(blob)]
    request, answer = requests_wire.next(timeout=1), results_wire.next(timeout=1)
    assert len(request.data) < 2048 and len(answer.data) < 2048
    assert json.loads(request.data)["arguments"] == {
        "$ref": f"obj://TOOL_PAYLOADS/{call_id}/arguments"}
    assert json.loads(answer.data)["value"] == {"$ref": f"obj://TOOL_PAYLOADS/{call_id}/result"}
    stored = ObjectBucket.declare(org_lab, "TOOL_PAYLOADS").get(f"{call_id}/result")
    assert len(stored) == len(blob) + 3  # JSON string: quotes and the '!'
    tools.close()


def test_stopped_pool_calls_wait_and_run_when_started(org_lab, connect, pools, unique):
    tool = f"later_{unique}"
    pool = pools(connect("tool-host"), tool, add).start()
    pool.stop()
    tools = ToolClient(connect("caller"), f"conv-{unique}")
    call_ids = [tools.call_async(tool, a=i, b=i) for i in range(3)]
    with pytest.raises(ToolTimeout, match="is the pool stopped") as raised:
        tools.result(call_ids[0], timeout=0.3)
    assert raised.value.consumer_exists is True
    info = org_lab.js.consumer_info("TOOL_REQUESTS", pool.consumer_name)
    assert info.num_pending == 3 and info.num_ack_pending == 0
    pool.start()
    results = [tools.result(cid, timeout=5) for cid in call_ids]
    assert [r.value for r in results] == [0, 2, 4]
    assert org_lab.js.consumer_info("TOOL_REQUESTS", pool.consumer_name).num_pending == 0
    tools.close()


def test_unknown_tool_times_out_and_the_call_waits_in_the_stream(org_lab, connect, unique):
    tool = f"nobody_{unique}"
    tools = ToolClient(connect("caller"), f"conv-{unique}")
    began = time.monotonic()
    with pytest.raises(ToolTimeout) as raised:
        tools.call(tool, timeout=0.5, q=1)
    assert 0.5 <= time.monotonic() - began < 2.0
    text = str(raised.value)
    assert f"Tool '{tool}'" in text and "0.5 s" in text
    assert "No worker pool is consuming" in text and S.tool_execute(tool) in text
    assert raised.value.consumer_exists is False and isinstance(raised.value, TimeoutError)
    waiting = org_lab._bridge.run(
        org_lab.nc.jetstream().get_last_msg("TOOL_REQUESTS", S.tool_execute(tool)),
        operation="get_last_msg")
    assert json.loads(waiting.data)["id"] == raised.value.call_id
    tools.close()


def test_bad_tool_name_is_refused_before_publishing(org_lab, connect, unique):
    tools = ToolClient(connect("caller"), f"conv-{unique}")
    with pytest.raises(ValueError, match="tool"):
        tools.call_async("web.search", q=1)
    tools.close()


def test_sync_caller_from_many_threads(org_lab, connect, pools, unique):
    tool = f"add_{unique}"
    pools(connect("tool-host"), tool, add, workers=2).start()
    tools = ToolClient(connect("caller"), f"conv-{unique}")
    out: dict[int, int] = {}

    def worker(i: int) -> None:
        out[i] = tools.call(tool, timeout=5, a=i, b=1)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert out == {i: i + 1 for i in range(8)}
    tools.close()


def test_a_task_handler_calls_tools_through_its_context(org_lab, connect, agents, pools,
                                                        unique):
    """ctx.call_tool (sync handler) and ctx.acall_tool (async) go through one ToolClient of
    the agent's, whose results consumer goes when the agent stops."""
    tool, org = f"add_{unique}", f"org{unique}"
    pools(connect("tool-host"), tool, add, workers=1).start()

    def sync_handler(task, ctx):
        return {"sum": ctx.call_tool(tool, timeout=5, a=2, b=3)}

    async def async_handler(task, ctx):
        return {"sum": await ctx.acall_tool(tool, timeout=5, a=40, b=2)}

    ledger = TaskLedger.declare(org_lab)
    for role, handler, expected in ((f"s{unique}", sync_handler, 5),
                                    (f"a{unique}", async_handler, 42)):
        agent = agents(role, org, handler).start()
        sent = agent.delegate(role, "Add")
        record = wait_for(lambda sent=sent: ledger.get(org, sent.id), 10, "the completion")
        assert record["result"] == {"sum": expected}
        consumer = agent._tools.consumer_name
        assert consumer in {c.name for c in org_lab.js.consumers("TOOL_RESULTS")}
        agent.stop()
        assert agent._tools is None
        assert consumer not in {c.name for c in org_lab.js.consumers("TOOL_RESULTS")}
