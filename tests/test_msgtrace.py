"""lab.trace_message: NATS message tracing (nats-server 2.11+, ADR-41) on the real server.

A JetStream publish with a consumer attached shows how the message entered (ingress), the
stream that stored it (the server's JetStream event) and the hops it left by (egress: the
consumer, read from its info since the servers' trace ends at the stream, and any core
subscriber, from the trace itself). A core publish shows one egress per subscriber.
The cluster's routes are traced in test_nats211.py, on the cluster it starts.
"""

from __future__ import annotations

import threading
import time

from agentlab import ConsumerSpec, StreamSpec
from agentlab.core.msgtrace import TRACE_DEST, all_reported, parse_trace_event
from agentlab.reports.msgtrace import MessageTraceView


def test_a_jetstream_publish_with_a_consumer_shows_ingress_the_stream_and_egress(
        lab, client, unique):
    stream, subject = unique.upper(), f"{unique}.tasks.cto"
    lab.js.declare_stream(StreamSpec(stream, [f"{unique}.tasks.*"], retention="workqueue"))
    try:
        lab.js.declare_consumer(stream, ConsumerSpec("cto", filter_subject=subject))
        consumer = client.js.pull(stream, "cto")
        got: list = []
        fetching = threading.Thread(target=lambda: got.extend(consumer.fetch(1, timeout=5)))
        fetching.start()
        deadline = time.monotonic() + 5
        while not client.js.consumer_info(stream, "cto").num_waiting:  # the fetch is parked
            assert time.monotonic() < deadline
            time.sleep(0.02)
        tap = client.subscribe(f"{unique}.>")  # a core subscriber sees it too
        client.flush()

        view = lab.trace_message(subject, {"title": "ship it"})
        fetching.join(5)

        trace = view.trace
        assert isinstance(view, MessageTraceView) and trace.complete
        # In the order the server did them: the stream and the subscriber in either order.
        assert view.steps()[0] == "ingress" and {"jetstream", "egress"} <= set(view.steps())
        ingress = trace.ingress
        assert ingress.kind == "client" and ingress.name == lab.name
        assert ingress.subject == subject
        (stored,) = trace.jetstream
        assert (stored.name, stored.subject, stored.error) == (stream, subject, "")
        assert trace.receipt.stream == stream and trace.receipt.seq == 1
        # The consumer delivered it (its fetch was waiting): an egress from the stream.
        (hop,) = trace.consumers
        assert (hop.name, hop.mode, hop.delivered) == ("cto", "pull", True)
        assert [m.json() for m in got] == [{"title": "ship it"}]
        assert got[0].headers[TRACE_DEST]  # the stored copy says its tracing is done
        # ... and the core subscriber, an egress of the server's own trace. (Only ours:
        # the session's server may have other subscribers that match.)
        (egress,) = [e for e in trace.egresses if e.name == client.name]
        assert (egress.kind, egress.subject) == ("client", f"{unique}.>")
        assert tap.next(timeout=2).json() == {"title": "ship it"}
        # It shows itself: a table, a diagram, text.
        rows = {(r.step, r.via, r.name) for r in view.rows}
        assert {("ingress", "client", lab.name), ("jetstream", "stream", stream),
                ("egress", "pull consumer", "cto"), ("egress", "client", client.name)} <= rows
        page = view._repr_html_()
        assert "<svg" in page and f"stream {stream}" in page and "<table>" in page
        assert "pull consumer cto" in view.to_mermaid()
        assert view.to_mermaid().startswith("flowchart LR\n")
        text = str(view)
        assert f"stream {stream} (stored as seq 1)" in text and "Trace of a message" in text
        got[0].ack()
    finally:
        lab.js.delete_stream(stream)


def test_a_core_publish_with_two_subscribers_shows_two_egresses(lab, client, unique):
    other = lab.connect(f"second-{unique}")
    try:
        first = client.subscribe(f"{unique}.news")
        second = other.subscribe(f"{unique}.*", queue="readers")
        client.flush(), other.flush()
        view = lab.trace_message(f"{unique}.news", "hello")
        trace = view.trace
        assert trace.complete and trace.jetstream == [] and trace.consumers == ()
        assert view.steps()[0] == "ingress" and set(view.steps()[1:]) == {"egress"}
        by_name = {e.name: e for e in trace.subscribers if e.name in (client.name, other.name)}
        assert set(by_name) == {client.name, other.name}
        assert by_name[client.name].subject == f"{unique}.news"
        assert (by_name[other.name].subject, by_name[other.name].queue) == (f"{unique}.*",
                                                                             "readers")
        assert first.next(timeout=2).text == "hello" and second.next(timeout=2).text == "hello"
        assert f'─deliver─▶ client "{other.name}" (sub {unique}.*; queue readers)' in str(view)
    finally:
        other.close()


def test_trace_only_delivers_nothing_and_stores_nothing(lab, client, unique):
    stream, subject = unique.upper(), f"{unique}.x"
    lab.js.declare_stream(StreamSpec(stream, [f"{unique}.>"]))
    try:
        sub = client.subscribe(subject)
        client.flush()
        view = lab.trace_message(subject, "only looking", trace_only=True)
        trace = view.trace
        assert trace.trace_only and trace.receipt is None
        assert [e.name for e in trace.jetstream] == [stream]
        assert client.name in [e.name for e in trace.subscribers]
        assert sub.messages(timeout=0.3) == []
        assert lab.js.stream_info(stream).state.messages == 0
        assert "not stored: traced only" in str(view)
    finally:
        lab.js.delete_stream(stream)


def test_a_trace_event_from_adr_41_reads_as_its_events():
    # The sample MsgTraceEvent of ADR-41 (nats-architecture-and-design), abridged.
    body = {"server": {"name": "n3-lon", "cluster": "lon"},
            "request": {"header": {"Nats-Trace-Dest": ["demo"]}, "msgsize": 36},
            "hops": 1,
            "events": [
                {"type": "in", "ts": "2024-02-22T13:18:48.400595984Z", "kind": 0,
                 "cid": 5390, "name": "NATS CLI Version development", "acc": "one",
                 "subj": "x"},
                {"type": "eg", "ts": "2024-02-22T13:18:48.40062456Z", "kind": 0,
                 "cid": 5376, "name": "NATS CLI Version development", "sub": "x"},
                {"type": "eg", "ts": "2024-02-22T13:18:48.400649361Z", "kind": 1,
                 "cid": 492, "name": "n1-lon", "hop": "1"}]}
    server = parse_trace_event(body)
    assert (server.server, server.hop, server.hops) == ("n3-lon", "", 1)
    ingress, local, route = server.events
    assert (ingress.what, ingress.kind, ingress.account, ingress.subject) == (
        "ingress", "client", "one", "x")
    assert ingress.timestamp.microsecond == 400595
    assert (local.kind, local.subject, local.cid) == ("client", "x", 5376)
    assert (route.what, route.kind, route.name, route.next_hop) == ("egress", "route",
                                                                     "n1-lon", "1")


def test_a_trace_is_complete_once_every_server_reported_in_whatever_order():
    def server(hop: str, hops: int):
        header = {"Nats-Trace-Dest": ["x"]} | ({"Nats-Trace-Hop": [hop]} if hop else {})
        return parse_trace_event({"server": {"name": f"n{hop or 0}"}, "hops": hops,
                                  "request": {"header": header}, "events": []})

    origin, one, two, one_one = server("", 2), server("1", 1), server("2", 0), server("1.1", 0)
    assert not all_reported([one])                   # the first server has not reported yet
    assert not all_reported([origin, one_one, two])  # "1" forwarded to "1.1": it is missing
    assert not all_reported([origin, one, two])      # "1.1" is missing
    assert all_reported([two, one_one, one, origin])
    assert all_reported([server("", 0)])
