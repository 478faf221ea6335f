"""OpenTelemetry traces: one goal is one trace across agents and processes; none when off."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from agentlab import StreamSpec, telemetry
from agentlab.observe.events import body_info
from agentlab.org import Organisation
from agentlab.programs.worker import WorkerProcess
from helpers import wait_for


@pytest.fixture
def spans():
    """An SDK provider with an in-memory exporter, given to agentlab only (the global
    provider can be set once per process); tracing is back to "follow the global one",
    which is off here, afterwards."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.enable(provider)
    yield exporter
    telemetry.reset()
    provider.shutdown()


def named(exporter, prefix: str, **attributes):
    return [s for s in exporter.get_finished_spans() if s.name.startswith(prefix)
            and all(s.attributes.get(k) == v for k, v in attributes.items())]


def hex_id(value: int, width: int) -> str:
    return f"0x{value:0{width}x}"


def test_one_assignment_is_one_trace_across_the_ceo_cto_and_cfo(org_lab, unique, spans):
    org = Organisation(org_lab, f"org{unique}", heartbeat_interval=0.2).start()
    try:
        goal = org.assign("Open an office in Lisbon")
        # Each of the three tasks is settled (acked) inside its delivery's span.
        acked = wait_for(lambda: len(named(spans, "ack genbrain.agents.")) >= 3 and
                         named(spans, "ack genbrain.agents."), 15, "three acks")
    finally:
        org.stop()
    root = named(spans, "delegate ceo", **{"agentlab.task.id": goal.id})[0]
    trace_id = root.context.trace_id
    processes = [s for s in named(spans, "process genbrain.agents.") if s.name.endswith(".tasks")]
    by_role = {s.attributes["agentlab.role"]: s for s in processes}
    assert set(by_role) == {"ceo", "cto", "cfo"}
    assert {s.context.trace_id for s in [*processes, *acked]} == {trace_id}
    assert {s.attributes["agentlab.instance"].split("-")[0] for s in processes} == \
        {"ceo", "cto", "cfo"}
    # Every span an agent made carries the goal's trace: nothing went to a trace of its own.
    mine = [s for s in spans.get_finished_spans() if "agentlab.instance" in s.attributes]
    assert {s.context.trace_id for s in mine} == {trace_id}

    by_id = {s.context.span_id: s for s in spans.get_finished_spans()}
    cto = by_role["cto"]
    sent = by_id[cto.parent.span_id]  # the CTO's delivery is a child of the delegating publish
    assert sent.name == "publish genbrain.agents.cto.tasks"
    assert sent.kind == SpanKind.PRODUCER and cto.kind == SpanKind.CONSUMER
    assert cto.links[0].context.span_id == sent.context.span_id
    # ... which the CEO's handler made, inside the CEO's delivery of the goal.
    delegate = by_id[sent.parent.span_id]
    assert delegate.name == "delegate cto"
    assert by_id[delegate.parent.span_id] is by_role["ceo"]
    # The CTO's handler ran in its delivery's span: what it published is the span's child.
    progress = named(spans, "publish genbrain.agents.ceo.inbox")
    assert cto.context.span_id in {s.parent.span_id for s in progress}

    attrs = cto.attributes
    assert attrs["messaging.system"] == "nats"
    assert attrs["messaging.operation.type"] == "process"
    assert attrs["messaging.destination.name"] == "genbrain.agents.cto.tasks"
    assert attrs["messaging.consumer.group.name"] == "cto"
    assert attrs["messaging.nats.delivery_count"] == 1
    assert attrs["messaging.message.id"] == delegate.attributes["agentlab.task.id"]
    assert attrs["messaging.message.conversation_id"] == goal.id  # the goal's correlation
    ack = next(s for s in acked if s.name == "ack genbrain.agents.cto.tasks")
    assert ack.attributes["messaging.operation.type"] == "settle"
    assert ack.parent.span_id == cto.context.span_id
    ledger = next(s for s in named(spans, "publish $KV.TASK_LEDGER.{org}.{task_id}")
                  if s.parent.span_id == cto.context.span_id)
    assert ledger.attributes["agentlab.ledger.recorded"] is True


def test_an_agent_in_another_process_joins_the_trace(org_lab, unique, spans, tmp_path):
    org_name, path = f"org{unique}", tmp_path / "spans.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AGENTLAB_"))}
    env |= {"AGENTLAB_TRACE_FILE": str(path), "OTEL_SERVICE_NAME": "cto-worker"}
    worker = WorkerProcess(org_lab.url, "cto", org=org_name, instance="cto-proc",
                           env=env, log_path=tmp_path / "worker.log",
                           options=["--heartbeat", "0.2"])
    org = Organisation(org_lab, org_name, instances={"cto": 0}, heartbeat_interval=0.2).start()
    try:
        worker.start(timeout=30)
        goal = org.assign("Hire a team in Porto")

        def cto_spans() -> list[dict]:
            if not path.exists():
                return []
            found = [json.loads(line) for line in path.read_text().splitlines() if line]
            names = {s["name"] for s in found}
            done = {"process genbrain.agents.cto.tasks", "ack genbrain.agents.cto.tasks"}
            return found if done <= names else []
        exported = wait_for(cto_spans, 30, "the worker's spans in its trace file")
    finally:
        worker.stop()
        org.stop()
    root = named(spans, "delegate ceo", **{"agentlab.task.id": goal.id})[0]
    sent = named(spans, "publish genbrain.agents.cto.tasks")[0]
    process = next(s for s in exported if s["name"] == "process genbrain.agents.cto.tasks")
    assert process["context"]["trace_id"] == hex_id(root.context.trace_id, 32)
    assert process["parent_id"] == hex_id(sent.context.span_id, 16)
    assert process["kind"] == "SpanKind.CONSUMER"
    assert process["attributes"]["agentlab.instance"] == "cto-proc"
    assert process["resource"]["attributes"]["service.name"] == "cto-worker"
    # All that process did for the task is in the same trace.
    assert {s["context"]["trace_id"] for s in exported} == {hex_id(root.context.trace_id, 32)}


def test_a_failing_handler_is_recorded_and_its_retry_naks_then_acks(org_lab, agents, names,
                                                                    spans):
    def flaky(task, ctx):
        if ctx.deliveries == 1:
            raise ValueError("the flaky dependency")
        return {"ok": True}

    cto = agents(names.cto, names.org, flaky).start()
    ceo = agents(names.ceo, names.org)  # only delegates: not started
    task = ceo.delegate(names.cto, "Ship it")
    acks = wait_for(lambda: named(spans, f"ack genbrain.agents.{names.cto}.tasks"), 15, "ack")
    deliveries = sorted(named(spans, f"process genbrain.agents.{names.cto}.tasks"),
                        key=lambda s: s.attributes["messaging.nats.delivery_count"])
    assert [d.attributes["messaging.nats.delivery_count"] for d in deliveries] == [1, 2]
    first, second = deliveries
    assert first.attributes["messaging.message.id"] == task.id
    assert first.status.status_code == StatusCode.ERROR
    assert first.attributes["error.type"] == "ValueError"
    event = next(e for e in first.events if e.name == "exception")
    assert event.attributes["exception.type"] == "ValueError"
    assert "the flaky dependency" in event.attributes["exception.message"]
    assert second.status.status_code != StatusCode.ERROR and not second.events
    # Both deliveries are children of the one publish: a retry stays in the goal's trace.
    assert first.parent.span_id == second.parent.span_id
    nak = named(spans, f"nak genbrain.agents.{names.cto}.tasks")[0]
    assert nak.parent.span_id == first.context.span_id
    assert acks[0].parent.span_id == second.context.span_id
    assert cto.stats["processed"] == 1


def test_poison_is_termed_in_its_span(org_lab, agents, names, spans, connect):
    agents(names.cto, names.org).start()
    board = connect("board")
    board.js.publish(f"genbrain.agents.{names.cto}.tasks", b"{not json", msg_id=f"p{names.org}")
    term = wait_for(lambda: named(spans, f"term genbrain.agents.{names.cto}.tasks"), 15, "term")
    process = named(spans, f"process genbrain.agents.{names.cto}.tasks")[0]
    assert term[0].parent.span_id == process.context.span_id
    assert process.status.status_code == StatusCode.ERROR
    assert process.attributes["error.type"] == "MessageDecodeError"
    sent = named(spans, f"publish genbrain.agents.{names.cto}.tasks")[0]
    assert sent.attributes["messaging.message.id"] == f"p{names.org}"
    assert process.parent.span_id == sent.context.span_id


def stored_headers(client, unique: str) -> list[dict]:
    client.js.declare_stream(StreamSpec(f"T{unique}", [f"{unique}.>"]))
    client.js.publish(f"{unique}.stored", {"n": 1}, msg_id="one")
    client.publish(f"{unique}.core", {"n": 2}, headers={"X-Kept": "yes"})
    client.flush()
    return [m.headers for m in client.js.read(f"T{unique}", timeout=5)]


def test_without_an_sdk_no_header_is_added(client, unique):
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        pytest.skip("this test process has a tracer provider (OTEL_* in the environment?)")
    assert not telemetry.tracing_enabled()  # the API's default provider: off
    first, second = stored_headers(client, unique)
    assert "traceparent" not in first and "traceparent" not in second
    assert second == {"X-Kept": "yes"}


def test_with_tracing_on_every_publish_carries_its_traceparent(client, unique, spans):
    first, second = stored_headers(client, unique)
    stored = named(spans, f"publish {unique}.stored")[0]
    core = named(spans, f"publish {unique}.core")[0]
    version, trace_id, span_id, flags = first["traceparent"].split("-")
    assert (trace_id, span_id) == (f"{stored.context.trace_id:032x}",
                                   f"{stored.context.span_id:016x}")
    assert int(flags, 16) & 1  # sampled
    assert stored.attributes["messaging.message.id"] == "one"
    assert stored.attributes["messaging.nats.stream"] == f"T{unique}"
    assert second["X-Kept"] == "yes" and second["traceparent"].split("-")[2] == \
        f"{core.context.span_id:016x}"
    # The observer colours a flow by the trace id the header carries.
    assert body_info(b'{"n": 2}', second).trace_id == f"{core.context.trace_id:032x}"


def test_agentlab_tracing_off_beats_everything(client, unique, spans, monkeypatch):
    monkeypatch.setenv("AGENTLAB_TRACING", "off")
    telemetry.enable(TracerProvider())  # read when tracing is decided again: now
    assert not telemetry.tracing_enabled()
    first, _ = stored_headers(client, unique)
    assert "traceparent" not in first and not spans.get_finished_spans()
    monkeypatch.delenv("AGENTLAB_TRACING")
    telemetry.reset()
    assert not telemetry.tracing_enabled()  # no global provider in this process: still off


def test_untraced_work_makes_no_spans(client, unique, spans):
    with telemetry.untraced():
        client.publish(f"{unique}.quiet", b"")
    client.publish(f"{unique}.loud", b"")
    assert [s.name for s in spans.get_finished_spans()] == [f"publish {unique}.loud"]


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AGENTLAB_"))}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=clean | env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_a_provider_set_after_agentlab_decided_is_followed():
    done = run_python("""
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from agentlab import telemetry
        assert not telemetry.tracing_enabled()          # decided, and cached: off
        trace.set_tracer_provider(TracerProvider())
        assert telemetry.tracing_enabled()              # the next check sees the new one
        assert not telemetry.configure_from_env()       # a provider is set: left alone
    """, OTEL_TRACES_EXPORTER="console")
    assert done.returncode == 0, done.stderr


def test_the_environment_configures_the_exporters():
    done = run_python("""
        from opentelemetry import trace
        from agentlab import telemetry
        from agentlab.telemetry import tracing
        assert telemetry.configure_from_env()
        span, headers = tracing.start_send(tracing.tracer(), "publish", "a.b", None)
        span.end()
        assert headers["traceparent"].startswith("00-")
        trace.get_tracer_provider().force_flush()
    """, OTEL_TRACES_EXPORTER="console,nosuch", OTEL_SERVICE_NAME="svc")
    assert done.returncode == 0, done.stderr
    assert '"name": "publish a.b"' in done.stdout and '"service.name": "svc"' in done.stdout
    assert "'nosuch', which no installed package provides" in done.stderr


def test_without_the_sdk_the_environment_only_warns():
    done = run_python("""
        import sys
        sys.modules["opentelemetry.sdk"] = None        # as if the otel extra were missing
        from agentlab import telemetry
        assert not telemetry.configure_from_env()
        assert not telemetry.tracing_enabled()
    """, OTEL_TRACES_EXPORTER="console")
    assert done.returncode == 0, done.stderr
    assert "pip install 'agentlab-nats[otel]'" in done.stderr


def test_tool_calls_sagas_and_meetings_are_traced(org_lab, connect, unique, spans):
    from agentlab.org import Meeting, Saga, ToolClient, ToolWorkerPool

    tool, charge = f"shout{unique}", f"genbrain.svc.{unique}.charge"
    pool = ToolWorkerPool(connect("pool"), tool, lambda text: text.upper(), workers=1,
                          discoverable=False).start()
    tools = ToolClient(connect("caller"), f"conv{unique}")
    connect("billing").serve(charge, lambda msg: {"charged": True})
    saga = Saga(connect("shop"), "order").step("charge", action=(charge, {"amount": 3}))
    try:
        assert tools.call(tool, text="hi", timeout=10) == "HI"
        assert saga.run({"order": 1}).ok
        meeting = Meeting.create(connect("ceo"), "plan", organizer="ceo")
        meeting.say("ceo", "hello")
    finally:
        tools.close()
        pool.stop()
    by_id = {s.context.span_id: s for s in spans.get_finished_spans()}

    def parent(span):
        return by_id[span.parent.span_id]

    call = named(spans, f"tool call {tool}")[0]
    execute = named(spans, f"process genbrain.tools.execute.{tool}")[0]
    assert parent(parent(execute)) is call  # call -> its publish -> the worker's execution
    result = wait_for(lambda: named(spans, f"process genbrain.tools.result.conv{unique}"), 5,
                      "the result's processing")[0]
    assert parent(parent(result)) is execute  # execution -> result publish -> its delivery
    assert {call.context.trace_id, result.context.trace_id} == {call.context.trace_id}

    step = named(spans, "saga step order.charge")[0]
    assert parent(step).name == "saga order" and parent(step).attributes["agentlab.saga.status"]
    served = named(spans, f"process {charge}")[0]
    assert parent(served).name == f"request {charge}" and parent(parent(served)) is step

    said = named(spans, "publish genbrain.meetings.{meeting_id}.messages",
                 **{"agentlab.meeting.id": meeting.id})[0]
    assert said.attributes["agentlab.sender"] == "ceo"
