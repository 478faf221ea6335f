"""Event-driven triggers on the real server: one copy per agent type, open to new types.

Event types start with the per-test ``unique`` token, so tests sharing the module's server
never see each other's events.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter

import pytest

from agentlab import BadSubject, Subjects
from agentlab.org import Event, aemit_event, aon_event, emit_event, event_subject, on_event


class Tally:
    """Thread-safe record of which instance of which agent type got which event."""

    def __init__(self):
        self.lock = threading.Lock()
        self.seen: list[tuple[str, str, str]] = []  # (agent type, instance, event id)

    def handler(self, agent_type: str, instance: str):
        def handle(event: Event) -> None:
            with self.lock:
                self.seen.append((agent_type, instance, event.id))
        return handle

    def ids(self, agent_type: str) -> list[str]:
        with self.lock:
            return [e for t, _, e in self.seen if t == agent_type]

    def instances(self, agent_type: str) -> set[str]:
        with self.lock:
            return {i for t, i, _ in self.seen if t == agent_type}


def settle(check, timeout: float = 3.0, quiet: float = 0.2) -> None:
    """Wait until ``check()`` holds, then a little longer so that extra copies would show."""
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(quiet)


def test_each_agent_type_gets_each_event_exactly_once(connect, unique):
    tally = Tally()
    for agent_type in ("billing", "notification"):
        for n in (1, 2):  # two instances of each type, each on its own connection
            on_event(connect(f"{agent_type}-{n}"), f"{unique}.payment_processed",
                     tally.handler(agent_type, f"{agent_type}-{n}"), group=agent_type)
    shop = connect("shop")
    sent = [emit_event(shop, f"{unique}.payment_processed", {"order": i}, source="checkout")
            for i in range(20)]
    shop.flush()
    settle(lambda: len(tally.seen) >= 40)
    for agent_type in ("billing", "notification"):
        ids = tally.ids(agent_type)
        assert sorted(ids) == sorted(e.id for e in sent)  # every event, and only once
        assert Counter(ids).most_common(1)[0][1] == 1
    # Both instances of a type share the work (a queue group), they do not duplicate it.
    assert tally.instances("billing") <= {"billing-1", "billing-2"}


def test_a_new_agent_type_needs_no_change_to_the_emitter(connect, unique):
    tally = Tally()
    on_event(connect("triage"), f"{unique}.conversation_started",
             tally.handler("triage", "t1"), group="triage")
    shop = connect("shop")

    def emit(n: int) -> list[Event]:  # the emitter: the same code before and after
        events = [emit_event(shop, f"{unique}.conversation_started", {"n": i}, source="web")
                  for i in range(n)]
        shop.flush()
        return events

    before = emit(3)
    settle(lambda: len(tally.ids("triage")) >= 3)
    on_event(connect("analytics"), f"{unique}.conversation_started",
             tally.handler("analytics", "a1"), group="analytics")  # deployed later
    after = emit(4)
    settle(lambda: len(tally.ids("analytics")) >= 4)
    assert tally.ids("triage") == [e.id for e in before + after]
    assert tally.ids("analytics") == [e.id for e in after]  # subsequent events only


def test_dotted_types_and_wildcard_subscriptions(connect, unique):
    tally = Tally()
    listener = connect("listener")
    on_event(listener, f"{unique}.deploy.*", tally.handler("deployer", "d"), group="deployer")
    on_event(listener, f"{unique}.>", tally.handler("auditor", "a"), group="auditor")
    on_event(listener, f"{unique}.deploy.finished", tally.handler("pager", "p"), group="pager")
    shop = connect("ci")
    started = emit_event(shop, f"{unique}.deploy.started", source="ci")
    finished = emit_event(shop, f"{unique}.deploy.finished", {"ok": True}, source="ci")
    build = emit_event(shop, f"{unique}.build.started", source="ci")
    nested = emit_event(shop, f"{unique}.deploy.canary.started", source="ci")
    shop.flush()
    settle(lambda: len(tally.ids("auditor")) >= 4)
    assert tally.ids("deployer") == [started.id, finished.id]  # '*' is exactly one part
    assert tally.ids("auditor") == [started.id, finished.id, build.id, nested.id]
    assert tally.ids("pager") == [finished.id]


def test_group_empty_gives_every_instance_a_copy(connect, unique):
    tally = Tally()
    for n in (1, 2):
        on_event(connect(f"dash-{n}"), f"{unique}.tick", tally.handler("dash", f"d{n}"), group="")
    emit_event(connect("clock"), f"{unique}.tick", source="clock")
    settle(lambda: len(tally.seen) >= 2)
    assert sorted(i for _, i, _ in tally.seen) == ["d1", "d2"]


def test_event_on_the_wire_is_plain_json(connect, unique):
    sub = connect("raw").subscribe(Subjects().event(unique))
    event = emit_event(connect("src"), unique, {"x": 1}, source="src", correlation_id="wf-1")
    msg = sub.next(timeout=2)
    assert msg.subject == f"genbrain.events.{unique}"
    body = msg.json()
    assert body["type"] == unique and body["payload"] == {"x": 1}
    assert body["source"] == "src" and body["correlation_id"] == "wf-1" and body["id"] == event.id


def test_event_subjects_are_validated():
    assert event_subject("deploy") == "genbrain.events.deploy"
    assert event_subject("a.b", Subjects("acme")) == "acme.events.a.b"
    assert event_subject("deploy.*", pattern=True) == "genbrain.events.deploy.*"
    assert event_subject(">", pattern=True) == "genbrain.events.>"
    for bad in ("", "a..b", "a b", "a.>.b", "a*", ".a", 7):
        with pytest.raises(BadSubject):
            event_subject(bad, pattern=True)
    for pattern in ("deploy.*", ">", "*"):  # emitted types are concrete
        with pytest.raises(BadSubject, match="wildcard"):
            event_subject(pattern)


def test_bad_group_and_bad_payload_are_rejected(connect, unique):
    client = connect("x")
    with pytest.raises(BadSubject):
        on_event(client, unique, print, group="two words")
    with pytest.raises(BadSubject):
        on_event(client, unique, print, group="*")
    with pytest.raises(BadSubject):
        emit_event(client, f"{unique}.*", {}, source="x")


def test_undecodable_events_are_counted_not_fatal(connect, unique):
    got: list[Event] = []
    sub = on_event(connect("strict"), unique, got.append, group="strict")
    sender = connect("foreign")
    sender.publish(Subjects().event(unique), {"event_type": "seed-style", "payload": {}})
    emit_event(sender, unique, {"fine": True}, source="ok")
    settle(lambda: len(got) >= 1)
    assert [e.payload for e in got] == [{"fine": True}]
    assert sub.errors == 1


def test_async_twins_and_async_handlers(connect, unique):
    client = connect("async")
    got: list[Event] = []

    async def handle(event: Event) -> None:  # runs on the bridge loop
        got.append(event)

    async def scenario():
        await aon_event(client, unique, handle, group="async")
        await aemit_event(client, unique, {"n": 1}, source="me")
        await client.aflush()

    asyncio.run(scenario())
    settle(lambda: got, quiet=0)
    assert [e.payload for e in got] == [{"n": 1}]
