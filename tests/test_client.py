"""Core messaging through the sync bridge, against the real server."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest
from pydantic import BaseModel

import agentlab
from agentlab import (
    BadSubject,
    MessageDecodeError,
    NoMessage,
    NoResponders,
    PayloadTooLarge,
    RequestTimeout,
    ServerUnreachable,
    WrongThread,
)


class Task(BaseModel):
    title: str
    priority: int = 1


def test_publish_every_payload_kind_and_subscribe_with_wildcard(client, unique):
    sub = client.subscribe(f"{unique}.agents.*.inbox")
    client.publish(f"{unique}.agents.cto.inbox", b"raw")
    client.publish(f"{unique}.agents.cfo.inbox", "text")
    client.publish(f"{unique}.agents.cmo.inbox", {"k": [1, 2]})
    client.publish(f"{unique}.agents.cto.inbox", Task(title="ship"))
    client.publish(f"{unique}.agents.cto.tasks", "not matched by the pattern")
    got = sub.messages(count=5, timeout=1)
    assert [m.data for m in got] == [b"raw", b"text", b'{"k":[1,2]}',
                                     b'{"title":"ship","priority":1}']
    assert got[3].decode(Task) == Task(title="ship")
    assert got[1].subject == f"{unique}.agents.cfo.inbox"


def test_order_is_kept_across_many_publishes(client, unique):
    sub = client.subscribe(f"{unique}.seq")
    for i in range(5000):
        client.publish(f"{unique}.seq", str(i))
    got = sub.messages(count=5000, timeout=5)
    assert [int(m.text) for m in got] == list(range(5000))


def test_full_wildcard_and_headers(client, unique):
    sub = client.subscribe(f"{unique}.>")
    client.publish(f"{unique}.a.b.c", "x", headers={"traceparent": "00-abc-def-01"})
    msg = sub.next(timeout=1)
    assert msg.subject == f"{unique}.a.b.c" and msg.headers["traceparent"] == "00-abc-def-01"


def test_queue_group_splits_messages(lab, unique):
    workers = [lab.connect(f"worker-{i}") for i in range(3)]
    counts = [0, 0, 0]
    done = threading.Event()

    def make_handler(i):
        def handle(msg):
            counts[i] += 1
            if sum(counts) == 300:
                done.set()
        return handle

    for i, w in enumerate(workers):
        w.subscribe(f"{unique}.work", make_handler(i), queue="workers")
    for n in range(300):
        lab.publish(f"{unique}.work", str(n))
    assert done.wait(5), counts
    assert sum(counts) == 300 and all(c > 0 for c in counts), counts
    for w in workers:
        w.close()


def test_request_reply_and_gather(client, lab, unique):
    lab.serve(f"{unique}.double", lambda msg: {"value": msg.json()["value"] * 2})
    assert client.request(f"{unique}.double", {"value": 21}).json() == {"value": 42}
    answers = client.gather([(f"{unique}.double", {"value": i}) for i in range(5)]
                            + [(f"{unique}.nobody", {})], timeout=1)
    assert [a.json()["value"] for a in answers[:5]] == [0, 2, 4, 6, 8]
    assert isinstance(answers[5], NoResponders)


def test_gather_waits_once_for_slow_responders(client, lab, unique):
    lab.serve(f"{unique}.slow", lambda msg: time.sleep(2))
    started = time.monotonic()
    answers = client.gather([(f"{unique}.slow", i) for i in range(4)], timeout=0.5)
    assert all(isinstance(a, RequestTimeout) for a in answers)
    assert time.monotonic() - started < 1.5


def test_no_responders_and_timeout_are_distinct_errors(client, lab, unique):
    with pytest.raises(NoResponders, match=f"{unique}.none"):
        client.request(f"{unique}.none", "?", timeout=1)
    lab.subscribe(f"{unique}.silent")  # listening, never answering
    with pytest.raises(RequestTimeout, match=f"{unique}.silent") as caught:
        client.request(f"{unique}.silent", "?", timeout=0.3)
    assert isinstance(caught.value, TimeoutError)


def test_sync_handlers_run_in_pool_async_on_loop(client, unique):
    threads = {}

    def sync_handler(msg):
        threads["sync"] = threading.current_thread().name

    async def async_handler(msg):
        threads["async"] = threading.current_thread().name

    client.subscribe(f"{unique}.s", sync_handler)
    client.subscribe(f"{unique}.a", async_handler)
    client.publish(f"{unique}.s", "1")
    client.publish(f"{unique}.a", "1")
    client.flush()
    deadline = time.monotonic() + 2
    while len(threads) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threads["sync"].startswith("agentlab-handler")
    assert threads["async"] == "agentlab-loop"


def test_handler_exception_is_logged_with_subject_and_subscription_survives(client, unique, caplog):
    seen = []

    def handler(msg):
        if msg.text == "boom":
            raise RuntimeError("handler exploded")
        seen.append(msg.text)

    sub = client.subscribe(f"{unique}.h", handler)
    with caplog.at_level(logging.ERROR, logger="agentlab"):
        for text in ["ok-1", "boom", "ok-2"]:
            client.publish(f"{unique}.h", text)
        client.flush()
        deadline = time.monotonic() + 2
        # handled counts after the handler returns, so wait on it, not on `seen`.
        while sub.handled + sub.errors < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert seen == ["ok-1", "ok-2"]
    assert sub.errors == 1 and sub.handled == 2
    assert f"{unique}.h" in caplog.text and "handler exploded" in caplog.text


def test_serve_replies_with_error_when_handler_raises(client, lab, unique):
    def broken(msg):
        raise ValueError("bad input")

    lab.serve(f"{unique}.broken", broken)
    reply = client.request(f"{unique}.broken", "x")
    assert reply.headers["Agentlab-Error"] == "ValueError"
    assert "bad input" in reply.json()["error"]


def test_blocking_call_on_loop_thread_raises_instead_of_hanging(client, unique):
    errors = []

    async def handler(msg):
        try:
            client.request(f"{unique}.other", "x", timeout=5)
        except WrongThread as error:
            errors.append(error)
        await client.apublish(f"{unique}.done", "ok")  # the async twin works here

    done = client.subscribe(f"{unique}.done")
    client.subscribe(f"{unique}.trigger", handler)
    client.publish(f"{unique}.trigger", "go")
    assert done.next(timeout=2).text == "ok"
    assert len(errors) == 1 and "arequest" in str(errors[0])


def test_async_twins_from_another_event_loop(client, lab, unique):
    lab.serve(f"{unique}.echo", lambda msg: msg.data)

    async def main():
        sub = await client.asubscribe(f"{unique}.tail")
        await client.apublish(f"{unique}.tail", "one")
        first = await sub.anext(timeout=2)
        answer = await client.arequest(f"{unique}.echo", "hello", timeout=2)
        gathered = await client.agather([(f"{unique}.echo", "a"), (f"{unique}.echo", "b")])
        await client.aflush()
        return first.text, answer.text, [g.text for g in gathered]

    assert asyncio.run(main()) == ("one", "hello", ["a", "b"])


def test_interrupt_cancels_waiting_request_and_client_stays_usable(client, lab, unique):
    lab.subscribe(f"{unique}.never")  # a responder that never answers
    lab.serve(f"{unique}.echo", lambda msg: msg.data)
    main = threading.main_thread().ident
    assert threading.get_ident() == main
    timer = threading.Timer(0.3, lambda: __import__("signal").pthread_kill(main, 2))
    timer.start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        client.request(f"{unique}.never", "x", timeout=30)
    assert time.monotonic() - started < 5
    assert client._requests._waiters == {}
    assert client.request(f"{unique}.echo", "still here", timeout=2).text == "still here"


def test_interrupt_cancels_bridge_operation(client, lab, unique):
    from agentlab.core.bridge import get_bridge

    cancelled = threading.Event()

    async def long_operation():
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    main = threading.main_thread().ident
    threading.Timer(0.3, lambda: __import__("signal").pthread_kill(main, 2)).start()
    with pytest.raises(KeyboardInterrupt):
        get_bridge().run(long_operation(), operation="long_operation")
    assert cancelled.wait(2), "the coroutine on the loop was not cancelled"
    client.flush()


def test_bad_subjects_are_refused_at_the_call(client):
    with pytest.raises(BadSubject, match="wildcard"):
        client.publish("genbrain.agents.*.tasks", "x")
    with pytest.raises(BadSubject):
        client.publish("has space", "x")
    with pytest.raises(BadSubject):
        client.publish("", "x")
    with pytest.raises(BadSubject):
        client.subscribe("a.>.b")
    with pytest.raises(BadSubject):
        client.request("a..b", "x")


def test_oversized_payload_names_the_limit(client, unique):
    limit = client.max_payload
    assert limit == 1024 * 1024
    with pytest.raises(PayloadTooLarge, match="1,048,576") as caught:
        client.publish(f"{unique}.big", b"x" * (limit + 1))
    assert caught.value.subject == f"{unique}.big" and isinstance(caught.value, ValueError)
    with pytest.raises(PayloadTooLarge):
        client.request(f"{unique}.big", b"x" * (limit + 1))
    client.publish(f"{unique}.big", b"x" * (limit - 200))  # just under is fine
    client.flush()


def test_invalid_json_decode_names_the_subject(client, unique):
    sub = client.subscribe(f"{unique}.json")
    client.publish(f"{unique}.json", b"{not json")
    msg = sub.next(timeout=1)
    with pytest.raises(MessageDecodeError, match=f"{unique}.json"):
        msg.json()
    with pytest.raises(MessageDecodeError, match=f"{unique}.json"):
        msg.agent_message()


def test_unreachable_server_names_url_and_fix():
    with pytest.raises(ServerUnreachable, match="nats://127.0.0.1:1") as caught:
        agentlab.Client.open("nats://127.0.0.1:1", name="nowhere")
    assert "agentlab server" in str(caught.value)


def test_next_times_out_with_clear_error_and_unsubscribe_ends_iteration(client, unique):
    sub = client.subscribe(f"{unique}.quiet")
    with pytest.raises(NoMessage, match=f"{unique}.quiet"):
        sub.next(timeout=0.1)
    client.publish(f"{unique}.quiet", "last")
    client.flush()
    time.sleep(0.05)
    sub.unsubscribe()
    assert [m.text for m in sub] == ["last"]


def test_drain_delivers_what_was_published_then_closes(lab, unique):
    sub = lab.subscribe(f"{unique}.drain")
    publisher = lab.connect("drainer")
    for i in range(100):
        publisher.publish(f"{unique}.drain", str(i))
    publisher.drain()
    assert publisher.is_closed
    assert len(sub.messages(count=100, timeout=2)) == 100
    with pytest.raises(agentlab.ClientClosed):
        publisher.publish(f"{unique}.drain", "late")


def test_a_lambda_around_an_async_function_is_awaited(client, unique):
    import functools

    done = client.subscribe(f"{unique}.done")

    async def handle(msg, suffix):
        await client.apublish(f"{unique}.done", msg.text + suffix)

    client.subscribe(f"{unique}.lambda", lambda msg: handle(msg, "!"))
    client.subscribe(f"{unique}.partial", functools.partial(handle, suffix="?"))
    client.publish(f"{unique}.lambda", "a")
    client.publish(f"{unique}.partial", "b")
    assert sorted(m.text for m in done.messages(count=2, timeout=2)) == ["a!", "b?"]
