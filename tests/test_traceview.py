"""A goal as one trace: spans recorded in memory, drawn as a waterfall, and the message flow
filtered by that trace. On the real server (tests/conftest.py's org_server)."""

from __future__ import annotations

import threading

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Status, StatusCode
from rich.console import Console

from agentlab import telemetry
from agentlab.observe import Observer, SpanRecorder, record_spans
from agentlab.org import Organisation
from agentlab.widgets import Dashboard, FlowView, TraceView
from helpers import wait_for

WIDGET = "application/vnd.jupyter.widget-view+json"


@pytest.fixture
def recorder():
    """Tracing on for agentlab through the notebook's one line; off again afterwards."""
    recorder = record_spans()
    assert telemetry.tracing_enabled()
    yield recorder
    recorder.stop()
    assert not telemetry.tracing_enabled()  # no global SDK provider here: off again


@pytest.fixture
def org(org_lab, unique):
    org = Organisation(org_lab, f"org{unique}", heartbeat_interval=0.2).start()
    yield org
    org.stop()


@pytest.fixture
def observer(org_lab):
    obs = Observer(org_lab, poll_interval=0.2).start()
    yield obs
    obs.stop()


def _done(recorder: SpanRecorder, trace_id: str, acks: int = 3) -> bool:
    """The goal's three tasks are acked (each inside its delivery's span)."""
    return sum(1 for s in recorder.spans(trace_id) if s.name.startswith("ack ")) >= acks


def _assign(org, recorder: SpanRecorder, title: str) -> tuple[object, str]:
    goal = org.assign(title)

    def trace_of_goal() -> str:
        for span in recorder.spans():
            if span.name == "delegate ceo" and span.attributes.get("agentlab.task.id") == goal.id:
                return span.trace_id
        return ""

    trace_id = wait_for(trace_of_goal, 10, "the goal's delegation span")
    wait_for(lambda: _done(recorder, trace_id), 15, "the goal's three acks")
    return goal, trace_id


def test_one_assignment_is_a_waterfall_of_the_ceo_cto_and_cfo_in_parent_order(
        org, observer, recorder):
    goal, trace_id = _assign(org, recorder, "Open an office in Lisbon")
    snap = recorder.trace()  # the latest trace: this goal's
    assert snap.trace_id == trace_id and len(trace_id) == 32
    names = snap.names()
    assert names[0] == "delegate ceo" and snap.rows[0].depth == 0
    assert snap.rows[0].who == "board"  # the board delegated the goal

    process = {row.span.role: (i, row) for i, row in enumerate(snap.rows)
               if row.span.name.startswith("process genbrain.agents.")
               and row.span.name.endswith(".tasks")}
    assert set(process) == {"ceo", "cto", "cfo"}
    for role, (_, row) in process.items():
        assert row.who.startswith(f"{role}-")  # the instance that ran it
    (ceo_at, ceo), (cto_at, cto), (cfo_at, cfo) = (process[r] for r in ("ceo", "cto", "cfo"))
    # The CTO's and CFO's deliveries sit under the CEO's, below its delegations to them.
    delegate_cto = names.index("delegate cto")
    delegate_cfo = names.index("delegate cfo")
    assert ceo_at < delegate_cto < cto_at < delegate_cfo < cfo_at
    assert cto.depth == cfo.depth == ceo.depth + 3  # process > delegate > publish > process
    assert snap.rows[delegate_cto].who == snap.rows[delegate_cfo].who == ceo.who
    # Every span comes after its parent, one level deeper.
    seen: dict[str, int] = {}
    for row in snap.rows:
        if row.span.parent_id:
            assert row.span.parent_id in seen, row.span.name
            assert row.depth == seen[row.span.parent_id] + 1
        seen[row.span.span_id] = row.depth
    assert snap.errors == 0 and not any(s.running for s in snap.spans)
    assert snap.start <= min(s.start for s in snap.spans) and snap.duration > 0

    # The observer's polls (stream reports, $SRV.PING) are no one's goal: never traced.
    assert not [s.name for s in recorder.spans() if "$SRV" in s.name or "$JS.API" in s.name]

    view = TraceView(recorder)
    try:
        assert view.trace_id == trace_id
        html = view.html.value
        for name in ("delegate ceo", "process genbrain.agents.ceo.tasks",
                     "process genbrain.agents.cto.tasks", "process genbrain.agents.cfo.tasks"):
            assert name in html
        assert "Open an office in Lisbon" in view.choice.label
    finally:
        view.close()


def test_the_flow_filtered_by_a_trace_shows_only_that_goals_messages(org, observer, recorder):
    _, first = _assign(org, recorder, "Hire a team in Porto")
    _, second = _assign(org, recorder, "Rent a van")
    assert first != second

    def delivered(trace_id: str):
        flow = observer.flow(trace=trace_id, limit=200)
        receivers = {e.receiver for e in flow.events if e.kind == "deliver"}
        acks = sum(1 for e in flow.events if e.kind == "ack")
        return flow if {"ceo", "cto", "cfo"} <= receivers and acks >= 3 else None

    flow = wait_for(lambda: delivered(first), 10, "the first goal's deliveries and acks")
    assert {e.trace_id for e in flow.events} == {first}
    assert any(e.title == "Technical plan: Hire a team in Porto" for e in flow.events)
    assert not any("Rent a van" in e.title for e in flow.events)
    everything = observer.flow(limit=500)
    assert {first, second} <= {e.trace_id for e in everything.events}

    view = FlowView(observer, trace=first[:8], limit=200)  # the 8 characters the tail shows
    try:
        assert {e.trace_id for e in view.snapshot().events} == {first}
        assert "Hire a team in Porto" in view.html.value
        assert "Rent a van" not in view.html.value
        assert "trace <code" in view.html.value and "only" in view.html.value
        view.trace.value = ""  # the box emptied: every trace again
        assert "Rent a van" in view.html.value
    finally:
        view.close()

    # The TraceView follows the latest trace, or shows the one it was given.
    latest, pinned = TraceView(recorder), TraceView(recorder, trace_id=first[:8])
    try:
        assert latest.trace_id == second and pinned.trace_id == first
        assert pinned.choice.value == first
        assert "Hire a team in Porto" in pinned.html.value
        pinned.choice.value = second
        assert "Rent a van" in pinned.html.value
    finally:
        latest.close()
        pinned.close()


def test_the_dashboard_shows_the_trace_and_filters_its_flow_by_it(org_lab, org, observer,
                                                                  recorder):
    board = Dashboard(org_lab, org, observer=observer, spans=recorder)
    try:
        assert board.traces in board.views and board.traces in board.children
        _, trace_id = _assign(org, recorder, "Open a shop")
        assert wait_for(lambda: "process genbrain.agents.cfo.tasks" in board.traces.html.value
                        and board.traces.trace_id == trace_id, 10, "the waterfall")
        assert board.traces.filter_flow is not None
        board.traces.filter_flow.value = True
        assert board.flow.trace.value == trace_id
        assert wait_for(lambda: "Open a shop" in board.flow.html.value, 10, "the flow")
        board.traces.filter_flow.value = False
        assert board.flow.trace.value == ""
    finally:
        board.close()
    assert observer.is_running  # the dashboard leaves an observer it was given running


def test_rendered_without_a_kernel_the_waterfall_is_html_and_svg_with_the_spans():
    recorder = SpanRecorder(capacity=100)
    provider = TracerProvider()
    provider.add_span_processor(recorder)
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("delegate cto"), \
            tracer.start_as_current_span("process genbrain.agents.cto.tasks",
                                         attributes={"agentlab.role": "cto",
                                                     "agentlab.instance": "cto-7"}):
        with tracer.start_as_current_span("tool call search") as failing:
            failing.set_status(Status(StatusCode.ERROR, "KeyError: 'jpy'"))
        running = tracer.start_span("publish genbrain.agents.ceo.inbox")
        snap = recorder.trace()
        assert [r.span.name for r in snap.rows if r.span.running] == \
            ["delegate cto", "process genbrain.agents.cto.tasks",
             "publish genbrain.agents.ceo.inbox"]
        running.end()
    snap = recorder.trace()
    assert snap.names() == ["delegate cto", "process genbrain.agents.cto.tasks",
                            "tool call search", "publish genbrain.agents.ceo.inbox"]
    assert [r.depth for r in snap.rows] == [0, 1, 2, 2]
    assert [r.who for r in snap.rows] == ["", "cto-7", "cto-7", "cto-7"]
    failed = snap.row("tool call search").span
    assert failed.failed and failed.error == "KeyError: 'jpy'" and snap.errors == 1

    html = snap._repr_html_()
    assert "<svg" in html and "al-waterfall" in html
    for name in snap.names():
        assert name in html
    assert "✖ tool call search" in html and "KeyError: &#x27;jpy&#x27;" in html
    assert recorder._repr_html_() == html or "tool call search" in recorder._repr_html_()

    view = TraceView(recorder)
    try:
        bundle = view._repr_mimebundle_()
        assert WIDGET in bundle  # live where a kernel runs ...
        assert "process genbrain.agents.cto.tasks" in bundle["text/html"]  # ... else static
    finally:
        view.close()

    console = Console(record=True, width=160)
    console.print(snap)
    text = console.export_text()
    assert "tool call search" in text and "cto-7" in text

    empty = SpanRecorder().trace()
    assert empty.trace_id == "" and empty.rows == ()
    assert "No spans yet" in empty._repr_html_()
    provider.shutdown()
    assert not recorder.recording  # the provider shut down: it records no more


def test_the_buffer_is_bounded_and_takes_spans_from_many_threads():
    recorder = SpanRecorder(capacity=50)
    provider = TracerProvider()
    provider.add_span_processor(recorder)
    tracer = provider.get_tracer("test")

    def work() -> None:
        for n in range(100):
            with tracer.start_as_current_span(f"step {n}"):
                pass

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(recorder.spans()) == 50
    assert (recorder.recorded, recorder.dropped) == (800, 750)
    assert len(recorder.traces()) == 50  # each root span its own trace
    recorder.stop()
    with tracer.start_as_current_span("after stop"):
        pass
    assert recorder.recorded == 800
    recorder.clear()
    assert recorder.spans() == [] and recorder.latest_trace_id == ""
    provider.shutdown()
    with pytest.raises(ValueError):
        SpanRecorder(capacity=0)
