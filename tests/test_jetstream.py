"""JetStream from specs, against the real server: streams, publish receipts, pull and ack.

Every stream is named from the per-test ``unique`` prefix (the server is shared by the
session) and deleted when the test ends. Ack waits are 1 s so redelivery tests stay short.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone

import pytest

from agentlab import (
    ConsumerNotFound,
    ConsumerSpec,
    JetStreamError,
    NotAStream,
    PayloadTooLarge,
    PubAck,
    StreamNotFound,
    StreamSpec,
)


@pytest.fixture
def streams(lab):
    """``declare(spec)`` through the lab's connection; every stream declared is deleted after."""
    names: list[str] = []

    def declare(spec: StreamSpec, client=None):
        info = (client or lab).js.declare_stream(spec)
        if spec.name not in names:
            names.append(spec.name)
        return info

    yield declare
    for name in names:
        try:
            lab.js.delete_stream(name)
        except StreamNotFound:
            pass


def eventually(check, timeout: float = 2.0):
    """Poll ``check()`` until it is truthy (server-side ack processing is asynchronous)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


def stored(client, stream: str) -> int:
    return client.js.stream_info(stream).state.messages


def work_queue(client, streams, unique, *, ack_wait: float = 1, max_deliver: int = 3):
    """A work-queue stream on ``<unique>.tasks.*`` and a pull consumer on ``<unique>.tasks.cto``."""
    name = f"{unique.upper()}_TASKS"
    streams(StreamSpec(name, [f"{unique}.tasks.*"], retention="workqueue"))
    spec = ConsumerSpec("cto", filter_subject=f"{unique}.tasks.cto", ack_wait=ack_wait,
                        max_deliver=max_deliver)
    consumer = client.js.pull(name, client.js.declare_consumer(name, spec))
    return name, consumer


# -- streams ---------------------------------------------------------------------------------

def test_declare_stream_creates_is_idempotent_and_updates_limits(client, streams, unique):
    name = unique.upper()
    spec = StreamSpec(name, [f"{unique}.>"], max_msgs=100)
    created = streams(spec, client)
    assert created.config.name == name and created.config.max_msgs == 100
    assert client.js.stream_info(name).config.subjects == [f"{unique}.>"]

    client.js.publish(f"{unique}.a", "kept")
    again = client.js.declare_stream(spec)  # same spec: nothing changes, nothing is lost
    assert again.created == created.created
    assert again.state.messages == 1

    updated = client.js.declare_stream(StreamSpec(name, [f"{unique}.>"], max_msgs=5))
    assert updated.config.max_msgs == 5 and updated.created == created.created
    assert client.js.stream_info(name).config.max_msgs == 5
    assert name in [s.config.name for s in client.js.streams()]


def test_changing_retention_of_existing_stream_says_what_to_do(client, streams, unique):
    name = unique.upper()
    streams(StreamSpec(name, [f"{unique}.>"], retention="limits"), client)
    with pytest.raises(JetStreamError) as caught:
        client.js.declare_stream(StreamSpec(name, [f"{unique}.>"], retention="workqueue"))
    text = str(caught.value)
    assert f"'{name}'" in text and "retention" in text
    assert "delete it first or use a new name" in text
    assert client.js.stream_info(name).config.retention == "limits"  # untouched


def test_stream_info_on_missing_stream_names_it(client, unique):
    missing = f"{unique.upper()}_NOPE"
    with pytest.raises(StreamNotFound, match=missing) as caught:
        client.js.stream_info(missing)
    assert isinstance(caught.value, LookupError) and caught.value.stream == missing
    with pytest.raises(StreamNotFound, match=missing):
        client.js.consumers(missing)
    with pytest.raises(StreamNotFound, match=missing):
        client.js.delete_stream(missing)


# -- publishing ---------------------------------------------------------------------------

def test_publish_returns_receipt_and_deduplicates_by_msg_id(client, streams, unique):
    name = unique.upper()
    streams(StreamSpec(name, [f"{unique}.>"]))
    first = client.js.publish(f"{unique}.orders", {"n": 1}, msg_id="order-1")
    assert first == PubAck(name, 1, duplicate=False)
    again = client.js.publish(f"{unique}.orders", {"n": 1}, msg_id="order-1")
    assert again.duplicate is True and again.seq == 1 and again.stream == name
    assert stored(client, name) == 1

    other = client.js.publish(f"{unique}.orders", {"n": 2}, msg_id="order-2")
    assert other == PubAck(name, 2, duplicate=False)
    assert stored(client, name) == 2


def test_publish_to_subject_no_stream_captures_names_the_subject(client, unique):
    with pytest.raises(NotAStream, match=f"'{unique}.nowhere'") as caught:
        client.js.publish(f"{unique}.nowhere", "lost?")
    assert isinstance(caught.value, JetStreamError) and caught.value.subject == f"{unique}.nowhere"


def test_publish_answered_by_a_plain_responder_is_a_clear_jetstream_error(client, lab, unique):
    lab.serve(f"{unique}.svc", lambda msg: "not a receipt")
    with pytest.raises(JetStreamError, match=f"'{unique}.svc'") as caught:
        client.js.publish(f"{unique}.svc", "x")
    assert "not a stream's receipt" in str(caught.value)


def test_message_ttl_expires_one_message(client, streams, unique):
    name = unique.upper()
    streams(StreamSpec(name, [f"{unique}.>"], allow_msg_ttl=True))
    ack = client.js.publish(f"{unique}.ephemeral", "soon gone", ttl=1)
    assert ack.seq == 1 and stored(client, name) == 1
    time.sleep(1.2)
    assert eventually(lambda: stored(client, name) == 0, timeout=1.5), "TTL message still stored"
    late = client.js.pull(name, client.js.declare_consumer(name, ConsumerSpec("late")))
    assert late.fetch(batch=5, timeout=0.3) == []


def test_message_ttl_needs_allow_msg_ttl_and_whole_seconds(client, streams, unique):
    name = unique.upper()
    streams(StreamSpec(name, [f"{unique}.>"]))
    with pytest.raises(JetStreamError, match="allow_msg_ttl") as caught:
        client.js.publish(f"{unique}.a", "x", ttl=1)
    assert f"'{unique}.a'" in str(caught.value)
    with pytest.raises(ValueError, match="whole number of seconds"):
        client.js.publish(f"{unique}.a", "x", ttl=0.5)
    with pytest.raises(ValueError):
        client.js.publish(f"{unique}.a", "x", ttl=0)
    assert stored(client, name) == 0


def test_max_msg_size_names_the_stream_limit(client, streams, unique):
    name = unique.upper()
    streams(StreamSpec(name, [f"{unique}.>"], max_msg_size=1024))
    with pytest.raises(PayloadTooLarge) as caught:
        client.js.publish(f"{unique}.big", b"x" * 2000)
    text = str(caught.value)
    assert f"max_msg_size of stream '{name}'" in text and "1,024" in text and "2,000" in text
    assert caught.value.limit == 1024 and caught.value.size == 2000
    assert client.js.publish(f"{unique}.big", b"x" * 900).seq == 1  # under the limit is fine


# -- work queue: fetch and the ack verbs -----------------------------------------------------

def test_fetch_in_order_and_ack_removes_from_work_queue(client, streams, unique):
    name, consumer = work_queue(client, streams, unique)
    for i in range(3):
        client.js.publish(f"{unique}.tasks.cto", {"task": i})
    msgs = consumer.fetch(batch=10, timeout=1)
    assert [m.json()["task"] for m in msgs] == [0, 1, 2]
    assert [m.info.stream_seq for m in msgs] == [1, 2, 3]
    assert all(m.info.stream == name and m.info.consumer == "cto" for m in msgs)
    assert not msgs[0].info.redelivered and msgs[2].info.num_pending == 0

    msgs[0].ack()
    assert eventually(lambda: stored(client, name) == 2), stored(client, name)
    msgs[1].ack()
    msgs[2].ack()
    assert eventually(lambda: stored(client, name) == 0), stored(client, name)
    assert consumer.fetch(batch=10, timeout=0.3) == []


def test_nak_redelivers_at_once(client, streams, unique):
    _, consumer = work_queue(client, streams, unique)
    client.js.publish(f"{unique}.tasks.cto", "retry me")
    first, = consumer.fetch(timeout=1)
    first.nak()
    started = time.monotonic()
    again, = consumer.fetch(timeout=1)
    assert time.monotonic() - started < 0.5  # well before ack_wait
    assert again.text == "retry me" and again.info.stream_seq == first.info.stream_seq
    assert again.info.num_delivered == 2 and again.info.redelivered
    again.ack()


def test_nak_with_delay_waits_before_redelivery(client, streams, unique):
    _, consumer = work_queue(client, streams, unique, ack_wait=5)
    client.js.publish(f"{unique}.tasks.cto", "later")
    msg, = consumer.fetch(timeout=1)
    msg.nak(delay=1)
    naked = time.monotonic()
    assert consumer.fetch(timeout=0.6) == []
    again = consumer.fetch(timeout=1.5)
    assert len(again) == 1 and again[0].info.num_delivered == 2
    assert 0.9 <= time.monotonic() - naked < 2.0
    again[0].ack()


def test_no_ack_redelivers_after_ack_wait(client, streams, unique):
    _, consumer = work_queue(client, streams, unique)
    client.js.publish(f"{unique}.tasks.cto", "forgotten")
    msg, = consumer.fetch(timeout=1)
    delivered = time.monotonic()
    assert consumer.fetch(timeout=0.5) == []  # still within ack_wait
    again = consumer.fetch(timeout=1.5)
    assert len(again) == 1 and again[0].info.redelivered and again[0].text == "forgotten"
    assert time.monotonic() - delivered >= 0.9
    again[0].ack()


def test_in_progress_extends_ack_wait(client, streams, unique):
    name, consumer = work_queue(client, streams, unique)  # ack_wait=1
    client.js.publish(f"{unique}.tasks.cto", "slow job")
    msg, = consumer.fetch(timeout=1)
    held = time.monotonic()
    while time.monotonic() - held < 1.8:
        time.sleep(0.5)
        msg.in_progress()
    assert consumer.fetch(timeout=0.3) == [], "redelivered although in_progress() was sent"
    assert client.js.consumer_info(name, "cto").num_redelivered == 0
    msg.ack()
    assert eventually(lambda: stored(client, name) == 0)


def test_term_never_redelivers_and_removes_from_work_queue(client, streams, unique):
    name, consumer = work_queue(client, streams, unique)
    client.js.publish(f"{unique}.tasks.cto", "poison")
    msg, = consumer.fetch(timeout=1)
    msg.term("cannot parse")
    assert eventually(lambda: stored(client, name) == 0), stored(client, name)
    assert consumer.fetch(timeout=1.3) == []  # past ack_wait: still nothing


def test_each_message_takes_one_final_ack(client, streams, unique, lab):
    name, consumer = work_queue(client, streams, unique)
    client.js.publish(f"{unique}.tasks.cto", "once")
    msg, = consumer.fetch(timeout=1)
    msg.in_progress()  # not final
    msg.ack()
    with pytest.raises(ValueError, match=f"{name}#1 was already acknowledged"):
        msg.ack()
    with pytest.raises(ValueError):
        msg.nak()
    with pytest.raises(ValueError):
        msg.term()

    sub = lab.subscribe(f"{unique}.core")
    client.publish(f"{unique}.core", "plain")
    core = sub.next(timeout=1)
    assert not core.is_jetstream
    with pytest.raises(ValueError, match="did not come from a JetStream consumer"):
        core.ack()
    with pytest.raises(ValueError, match="no JetStream metadata"):
        core.info  # noqa: B018


def test_fetch_returns_empty_list_within_timeout(client, streams, unique):
    _, consumer = work_queue(client, streams, unique)
    for batch, timeout in [(1, 0.3), (10, 0.5)]:
        started = time.monotonic()
        assert consumer.fetch(batch=batch, timeout=timeout) == []
        assert time.monotonic() - started < timeout + 0.4


def test_many_short_empty_fetches_never_raise(client, streams, unique):
    # nats-py sometimes raises a plain asyncio.TimeoutError (not nats.errors.TimeoutError)
    # when the server's 408 lands right at the deadline; fetch must still return [].
    _, consumer = work_queue(client, streams, unique)
    for _ in range(200):
        assert consumer.fetch(batch=10, timeout=0.005) == []


# -- consumers --------------------------------------------------------------------------------

def test_consumer_info_counts_and_listing(client, streams, unique):
    name, consumer = work_queue(client, streams, unique)
    for i in range(3):
        client.js.publish(f"{unique}.tasks.cto", str(i))
    info = client.js.consumer_info(name, "cto")
    assert info.num_pending == 3 and info.num_ack_pending == 0

    first, second = consumer.fetch(batch=2, timeout=1)
    info = consumer.info()
    assert info.num_pending == 1 and info.num_ack_pending == 2 and info.num_redelivered == 0

    # The server handles acks and pull requests on different goroutines, so a nak is not
    # guaranteed to be seen before the next pull: fetch both the redelivery and seq 3.
    second.ack()
    first.nak()
    rest = consumer.fetch(batch=2, timeout=1)
    if len(rest) < 2:
        rest += consumer.fetch(batch=2 - len(rest), timeout=1)
    by_seq = {m.info.stream_seq: m for m in rest}
    assert sorted(by_seq) == [1, 3]
    assert by_seq[1].info.redelivered and not by_seq[3].info.redelivered

    def after_ack_of_second():
        info = client.js.consumer_info(name, "cto")
        return info if info.num_ack_pending == 2 else None

    info = eventually(after_ack_of_second)
    assert info is not None and info.num_redelivered == 1 and info.num_pending == 0

    for msg in rest:
        msg.ack()
    assert eventually(lambda: client.js.consumer_info(name, "cto").num_ack_pending == 0)

    client.js.declare_consumer(name, ConsumerSpec("cfo", filter_subject=f"{unique}.tasks.cfo"))
    assert sorted(c.name for c in client.js.consumers(name)) == ["cfo", "cto"]
    assert eventually(lambda: stored(client, name) == 0)


def test_pull_missing_consumer_names_stream_and_consumer(client, streams, unique):
    name = unique.upper()
    streams(StreamSpec(name, [f"{unique}.>"]))
    with pytest.raises(ConsumerNotFound) as caught:
        client.js.pull(name, "ghost")
    assert "'ghost'" in str(caught.value) and f"'{name}'" in str(caught.value)
    assert caught.value.stream == name and caught.value.consumer == "ghost"
    with pytest.raises(ConsumerNotFound, match="ghost"):
        client.js.consumer_info(name, "ghost")
    with pytest.raises(StreamNotFound, match=f"{name}_NOPE"):
        client.js.pull(f"{name}_NOPE", "ghost")


def test_overlapping_consumers_on_work_queue_are_refused_with_a_hint(client, streams, unique):
    name, _ = work_queue(client, streams, unique)  # "cto" filters <unique>.tasks.cto
    with pytest.raises(JetStreamError) as caught:
        client.js.declare_consumer(name, ConsumerSpec("all", filter_subject=f"{unique}.tasks.*"))
    text = str(caught.value)
    assert "'all'" in text and f"'{name}'" in text
    assert "non-overlapping" in text and "filter_subject" in text

    other = f"{name}_2"
    streams(StreamSpec(other, [f"{unique}.jobs.*"], retention="workqueue"))
    client.js.declare_consumer(other, ConsumerSpec("first"))
    with pytest.raises(JetStreamError, match="filter_subject") as caught:
        client.js.declare_consumer(other, ConsumerSpec("second"))  # two unfiltered consumers
    assert caught.value.err_code == 10099
    assert [c.name for c in client.js.consumers(other)] == ["first"]


def test_deliver_by_start_time_and_all(client, streams, unique):
    name = unique.upper()
    streams(StreamSpec(name, [f"{unique}.>"]))
    for i in range(3):
        client.js.publish(f"{unique}.log", f"old-{i}")
    time.sleep(0.05)
    cut = datetime.now(timezone.utc)
    time.sleep(0.05)
    for i in range(2):
        client.js.publish(f"{unique}.log", f"new-{i}")

    since = client.js.pull(name, client.js.declare_consumer(
        name, ConsumerSpec("since", deliver="by_start_time", start_time=cut)))
    assert [m.text for m in since.fetch(batch=10, timeout=0.5)] == ["new-0", "new-1"]

    everything = client.js.pull(name, client.js.declare_consumer(name, ConsumerSpec("all")))
    assert [m.text for m in everything.fetch(batch=10, timeout=0.5)] == [
        "old-0", "old-1", "old-2", "new-0", "new-1"]

    with pytest.raises(ValueError, match="start_time"):
        client.js.declare_consumer(name, ConsumerSpec("bad", deliver="by_start_time"))


def test_durable_position_survives_a_new_connection(lab, streams, unique):
    first = lab.connect(f"{unique}-first")
    name, consumer = work_queue(first, streams, unique, ack_wait=5)
    for i in range(5):
        first.js.publish(f"{unique}.tasks.cto", str(i))
    done = consumer.fetch(batch=2, timeout=1)
    assert [m.text for m in done] == ["0", "1"]
    for msg in done:
        msg.ack()
    first.flush()
    consumer.close()
    first.close()

    second = lab.connect(f"{unique}-second")
    try:
        resumed = second.js.pull(name, "cto")
        rest = resumed.fetch(batch=10, timeout=1)
        assert [m.text for m in rest] == ["2", "3", "4"]
        assert not any(m.info.redelivered for m in rest)
        for msg in rest:
            msg.ack()
        assert eventually(lambda: stored(second, name) == 0)
    finally:
        second.close()


def test_async_twins_from_a_foreign_event_loop(client, streams, unique):
    name = unique.upper()

    async def main():
        info = await client.js.adeclare_stream(StreamSpec(name, [f"{unique}.>"]))
        acks = [await client.js.apublish(f"{unique}.a", {"n": i}, msg_id=f"m{i}")
                for i in range(3)]
        dup = await client.js.apublish(f"{unique}.a", {"n": 0}, msg_id="m0")
        consumer = await client.js.apull(
            name, await client.js.adeclare_consumer(name, ConsumerSpec("reader")))
        msgs = await consumer.afetch(batch=10, timeout=1)
        for msg in msgs:
            msg.ack()
        empty = await consumer.afetch(batch=10, timeout=0.2)
        state = (await client.js.astream_info(name)).state
        return info, acks, dup, [m.json()["n"] for m in msgs], empty, state

    try:
        info, acks, dup, got, empty, state = asyncio.run(main())
    finally:
        streams(StreamSpec(name, [f"{unique}.>"]))  # register for deletion
    assert info.config.name == name
    assert [a.seq for a in acks] == [1, 2, 3] and dup.duplicate and dup.seq == 1
    assert got == [0, 1, 2] and empty == [] and state.messages == 3
