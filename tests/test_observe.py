"""The observer against a real server and a real organisation: what it records, bounded."""

from __future__ import annotations

import functools
import io

import pytest
from rich.console import Console

import agentlab
import helpers
from agentlab.observe import Observer
from agentlab.observe.recorder import matcher
from agentlab.org import Organisation

wait_for = functools.partial(helpers.wait_for, timeout=10.0, interval=0.05)


@pytest.fixture(scope="module")
def running(org_server):
    lab = agentlab.Client.open(org_server.url, name="observe-test")
    org = Organisation(lab, "acme", ack_wait=1.0, heartbeat_interval=0.5,
                       monitor_interval=0.5).start()
    obs = Observer(lab, poll_interval=0.3).start()
    yield lab, org, obs
    obs.stop()
    org.stop()
    lab.close()


def kinds_for(obs: Observer, title: str) -> list[str]:
    return [e.kind for e in obs.flow(limit=10_000).events if e.title == title]


def test_a_task_is_published_delivered_and_acked_with_one_trace(running):
    lab, org, obs = running
    task = org.assign("Observe me", to="cto")
    assert wait_for(lambda: "ack" in kinds_for(obs, "Observe me"))
    events = [e for e in obs.flow(limit=10_000).events if e.title == "Observe me"]
    publish = next(e for e in events if e.kind == "publish" and e.stream == "AGENT_TASKS")
    assert (publish.sender, publish.receiver, publish.type) == ("board", "AGENT_TASKS", "task")
    assert publish.msg_id == task.id and publish.size > 0
    deliver = next(e for e in events if e.kind == "deliver")
    assert (deliver.sender, deliver.receiver, deliver.consumer) == ("AGENT_TASKS", "cto", "cto")
    assert deliver.deliveries == 1 and not deliver.redelivered and deliver.stream_seq > 0
    ack = next(e for e in events if e.kind == "ack")
    assert (ack.sender, ack.receiver) == ("cto", "AGENT_TASKS")
    assert ack.subject == "genbrain.agents.cto.tasks" and ack.stream_seq == deliver.stream_seq
    completed = next(e for e in events if e.type == "task.completed")
    assert completed.sender == "cto" and completed.stream == "AGENT_EVENTS"
    assert {e.trace_id for e in events} == {task.id}  # one trace: the task id


def test_a_flaky_task_shows_nak_and_redelivery(running):
    _, org, obs = running
    org.assign("Flaky observed", to="cto", details={"fail_times": 1})
    assert wait_for(lambda: kinds_for(obs, "Flaky observed").count("ack") == 1)
    kinds = kinds_for(obs, "Flaky observed")
    assert "nak" in kinds
    redelivery = [e for e in obs.flow(limit=10_000).events
                  if e.title == "Flaky observed" and e.kind == "deliver" and e.redelivered]
    assert redelivery and redelivery[0].deliveries == 2


def test_poison_is_termed_and_dead_lettered(running):
    lab, _, obs = running
    lab.js.publish("genbrain.agents.cfo.tasks", b"{poison!", msg_id="observe-poison")
    assert wait_for(lambda: any(e.is_dead_letter for e in obs.flow(limit=10_000).events))
    assert wait_for(lambda: any(e.is_term for e in obs.flow(limit=10_000).events))
    letter = next(e for e in obs.flow(limit=10_000).events if e.is_dead_letter)
    assert letter.receiver == "DEAD_LETTERS" and letter.sender == "cfo"
    assert wait_for(lambda: any(e.kind == "advisory" and e.type == "terminated"
                                for e in obs.flow(limit=10_000).events))


def test_state_is_polled_with_changes_and_rates(running):
    _, org, obs = running
    org.assign("Rate me", to="cfo")
    assert wait_for(lambda: "ack" in kinds_for(obs, "Rate me"))
    polls = obs.state().polls
    assert wait_for(lambda: obs.state().polls >= polls + 2)
    state = obs.state()
    assert "AGENT_TASKS" in state.streams.names
    assert {row.name for row in state.consumer_rows() if row.stream == "AGENT_TASKS"} >= \
        {"ceo", "cto", "cfo"}
    assert sum(sum(v) for v in state.rates.values()) >= 1   # the acks seen, per second
    assert all(len(v) == 60 for v in state.rates.values())


def test_snapshots_render_as_html_rich_and_mermaid(running):
    _, org, obs = running
    org.assign("Render me", to="cto")
    assert wait_for(lambda: "ack" in kinds_for(obs, "Render me"))
    snap = obs.snapshot(limit=200)
    page = snap._repr_html_()
    for text in ("Streams", "Consumers", "Message flow", "Topology", "Ack Pending",
                 "Oldest Unprocessed", "First Seq", "<svg", "Render me"):
        assert text in page, text
    out = io.StringIO()
    Console(file=out, width=200).print(snap)
    assert "Render me" in out.getvalue() and "AGENT_TASKS" in out.getvalue()
    mermaid = obs.flow("genbrain.agents.cto.tasks", limit=200).to_mermaid()
    assert mermaid.startswith("sequenceDiagram")
    assert "board->>AGENT_TASKS: task · Render me" in mermaid
    assert "AGENT_TASKS-->>cto: task · Render me" in mermaid
    assert "cto-)AGENT_TASKS: ack · Render me" in mermaid
    assert snap.topology.count("AGENT_TASKS", "cto") >= 1


def test_the_filter_and_noise_switch(running):
    _, _, obs = running
    assert wait_for(lambda: any(e.type == "heartbeat"
                                for e in obs.flow(hide_noise=False, limit=10_000).events))
    assert not any(e.type == "heartbeat" for e in obs.flow(limit=10_000).events)
    only_cto = obs.flow("genbrain.agents.cto.>", limit=10_000, hide_noise=False).events
    assert only_cto and all(e.subject.startswith("genbrain.agents.cto.") for e in only_cto)


def test_buffers_stay_bounded(org_server):
    lab = agentlab.Client.open(org_server.url, name="bounded")
    obs = Observer(lab, capacity=200, root="bounded").start()
    try:
        for n in range(3_000):
            lab.publish(f"bounded.load.s{n % 50}", b"x" * 64)
        lab.flush()
        assert wait_for(lambda: obs.recorder.received >= 3_000)
        obs.flow()
        rec = obs.recorder
        assert len(rec.events) <= 200 and len(rec._raw) <= 200
        assert rec.recorded + rec.dropped == 3_000
        assert len(obs.flow(limit=50).events) == 50
    finally:
        obs.stop()
        lab.close()


@pytest.mark.parametrize("pattern, subject, expected", [
    (">", "a.b", True), ("a.>", "a.b.c", True), ("a.>", "a", False), ("a.*", "a.b", True),
    ("a.*", "a.b.c", False), ("a.*.c", "a.x.c", True), ("a.b", "a.b", True),
    ("a.b", "a.c", False), ("", "x", True)])
def test_matcher(pattern, subject, expected):
    assert matcher(pattern)(subject) is expected


def test_poll_reads_state_now_not_at_the_next_interval(org_server, unique):
    lab = agentlab.Client.open(org_server.url, name="observe-poll")
    stream = f"POLL_NOW_{unique}"
    try:
        lab.js.declare_stream(agentlab.StreamSpec(stream, subjects=[f"pollnow.{stream}"]))
        obs = Observer(lab, poll_interval=3600).start()   # no timed poll during the test
        try:
            assert obs.state().streams.row(stream).messages == 0
            for n in range(3):
                lab.js.publish(f"pollnow.{stream}", {"n": n})
            assert obs.state().streams.row(stream).messages == 0
            obs.poll()
            assert obs.state().streams.row(stream).messages == 3
        finally:
            obs.stop()
        with pytest.raises(agentlab.ClientClosed):
            obs.poll()
    finally:
        lab.js.delete_stream(stream)
        lab.close()


def test_meeting_and_tool_messages_name_their_sender_and_kind():
    from agentlab.observe.events import body_info
    from agentlab.org import MeetingEntry, MeetingInvitation, ToolCall, ToolResult

    invitation = MeetingInvitation(meeting_id="m1", topic="Budget", organizer="ceo",
                                   invitee="cfo", invitees=["cfo"], messages_subject="a",
                                   decisions_subject="b")
    decision = MeetingEntry(meeting_id="m1", kind="decision", sender="ceo", text="Go")
    call = ToolCall(tool="search", conversation_id="c1", requested_by="cto")
    result = ToolResult(call_id=call.id, tool="search", conversation_id="c1", status="ok")
    seen = {name: body_info(model.model_dump_json().encode(), None) for name, model in
            (("invitation", invitation), ("decision", decision), ("call", call),
             ("result", result))}
    assert (seen["invitation"].sender, seen["invitation"].type, seen["invitation"].receiver,
            seen["invitation"].trace_id) == ("ceo", "meeting.invitation", "cfo", "m1")
    assert (seen["decision"].sender, seen["decision"].type, seen["decision"].title) == \
        ("ceo", "meeting.decision", "Go")
    assert (seen["call"].sender, seen["call"].type, seen["call"].trace_id) == \
        ("cto", "tool call: search", call.id)
    assert (seen["result"].sender, seen["result"].type, seen["result"].trace_id) == \
        ("tool-search", "tool result: ok", call.id)


def _until(condition, timeout=10.0):
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.05)


def test_an_ephemeral_consumer_is_named_by_its_participant_everywhere(org_server, unique):
    """A stream read and an ordered feed get server-generated consumer names; the views name
    them by the connection that made them (the API audit says which), not by those names."""
    lab = agentlab.Client.open(org_server.url, name="observe-owners")
    stream = f"OWNED_{unique}"
    reader = lab.connect("cto-7")
    try:
        lab.js.declare_stream(agentlab.StreamSpec(stream, subjects=[f"owned.{unique}.>"]))
        obs = Observer(lab, poll_interval=0.2).start()
        try:
            lab.js.publish(f"owned.{unique}.a", {"sender": "ceo", "text": "hello"})
            assert len(reader.js.read(stream, f"owned.{unique}.>")) == 1
            feed = reader.js.subscribe_ordered(stream, f"owned.{unique}.>", lambda m: None,
                                               replay=True)
            _until(lambda: obs.recorder.ingest() >= 0 and len(obs.recorder.owners) >= 2)
            generated = set(obs.recorder.owners)
            assert set(obs.recorder.owners.values()) == {"cto-7"}
            _until(lambda: any(r.name in generated for r in obs.state().consumer_rows()))
            flow = obs.flow(pattern=f"owned.{unique}.>", limit=50)
            delivered = [e for e in flow.events if e.kind == "deliver"]
            assert delivered and all(e.receiver == "cto-7" for e in delivered)
            assert {e.consumer for e in delivered} <= generated  # the real name stays known
            assert "cto-7" in flow.lifelines() and not generated & set(flow.lifelines())
            assert "cto-7" in flow.to_mermaid()
            nodes = {name for _, name in obs.topology().nodes}
            assert "cto-7" in nodes and not generated & nodes
            from agentlab.observe.html import consumers_html

            html = consumers_html(obs.state())
            feed_name = next(r.name for r in obs.state().consumer_rows() if r.name in generated)
            assert f"cto-7 ({feed_name})" in html
            feed.close()
        finally:
            obs.stop()
    finally:
        lab.js.delete_stream(stream)
        lab.close()


def test_a_request_and_its_reply_show_the_requesters_inbox(org_server, unique):
    from agentlab.observe import subscriptions_snapshot

    lab = agentlab.Client.open(org_server.url, name="observe-requests")
    subject = f"tasks.{unique}.assign"
    try:
        obs = Observer(lab, subjects=[subject], replies=True, poll_interval=0.5).start()
        try:
            workers = [lab.connect(f"worker-{n}").serve(
                subject, lambda m, n=n: {"worker": f"worker-{n}", "ok": True}, queue="group")
                for n in range(2)]
            plain = lab.subscribe(subject)
            answer = lab.request(subject, {"text": "hi"}, timeout=5)
            for n in range(6):
                lab.publish(subject, {"n": n})
            _until(lambda: sum(w.received for w in workers) == 7 and plain.received == 7)
            _until(lambda: any(e.kind == "reply" for e in obs.flow(limit=50).events))
            events = obs.flow(limit=50).events
            [request] = [e for e in events if e.kind == "request"]
            [reply] = [e for e in events if e.kind == "reply"]
            assert request.reply.startswith("_INBOX.") and reply.subject == request.reply
            inbox = ".".join(request.reply.split(".")[:-1]) + ".*"
            assert request.sender == reply.receiver == inbox
            assert reply.sender == answer.json()["worker"]
            snap = subscriptions_snapshot(obs.flow(limit=50), [*workers, plain])
            assert snap.columns == (f"{subject} [group]", subject)
            assert [r.received for r in snap.rows][-1] == 7
            assert sum(r.received for r in snap.rows[:2]) == 7  # the group shares one copy
            assert len(snap.got(subject)) == 7
        finally:
            obs.stop()
    finally:
        lab.close()
