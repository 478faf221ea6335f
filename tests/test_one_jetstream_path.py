"""One JetStream path: only the core's JetStream and stores modules touch nats-py's JetStream
context, and the verbs everything else uses instead work against the real server.

Every stream is named from the per-test ``unique`` prefix and deleted when the test ends.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from agentlab import (
    BadSubject,
    ConsumerSpec,
    JetStreamUnavailable,
    MessageNotFound,
    StreamNotFound,
    StreamSpec,
)
from agentlab.core.jetstream import LIST_TIMEOUT
from helpers import wait_for

PACKAGE = Path(__file__).resolve().parent.parent / "agentlab"
# jetstream.py holds the one context the verbs share (and makes those with another timeout or
# API prefix); stores.py opens nats-py's KV and object stores, which live on that context.
ALLOWED = {PACKAGE / "core" / "jetstream.py", PACKAGE / "core" / "stores.py"}


def test_only_the_core_jetstream_and_stores_modules_open_a_jetstream_context():
    offending = [f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}"
                 for path in sorted(PACKAGE.rglob("*.py")) if path not in ALLOWED
                 for number, line in enumerate(path.read_text().splitlines(), 1)
                 if ".jetstream(" in line]
    assert not offending, ("Use client.js (agentlab/core/jetstream.py) instead of "
                           "nc.jetstream():\n" + "\n".join(offending))
    # The scan looks at the right tree: the allowed modules are where the calls are.
    assert all(".jetstream(" in path.read_text() for path in ALLOWED)


@pytest.fixture
def stream(client, unique, request):
    """A stream capturing ``<unique>.>`` with three messages on .a, .b, .a; deleted after.
    In memory unless parametrized (indirect) with "file"."""
    name = unique.upper()
    storage = getattr(request, "param", "memory")
    client.js.declare_stream(StreamSpec(name, [f"{unique}.>"], storage=storage))
    for i, leaf in enumerate(["a", "b", "a"], 1):
        client.js.publish(f"{unique}.{leaf}", {"n": i}, msg_id=f"m{i}", headers={"X-N": str(i)})
    yield name
    try:
        client.js.delete_stream(name)
    except StreamNotFound:
        pass


# -- get_message ------------------------------------------------------------------------------
@pytest.mark.parametrize("direct", [False, True])
def test_get_message_by_sequence(client, stream, unique, direct):
    stored = client.js.get_message(stream, 2, direct=direct)
    assert (stored.stream, stored.seq, stored.subject) == (stream, 2, f"{unique}.b")
    assert stored.json() == {"n": 2} and stored.time is not None
    assert stored.headers["X-N"] == "2" and stored.headers["Nats-Msg-Id"] == "m2"
    # A direct get's own headers (where it is stored) are not the message's.
    assert "Nats-Sequence" not in stored.headers and "Nats-Stream" not in stored.headers


@pytest.mark.parametrize("direct", [False, True])
def test_get_message_with_a_subject_is_the_first_match_from_that_sequence(client, stream,
                                                                         unique, direct):
    assert client.js.get_message(stream, 1, subject=f"{unique}.b", direct=direct).seq == 2
    assert client.js.get_message(stream, 2, subject=f"{unique}.a", direct=direct).seq == 3
    assert client.js.get_message(stream, 1, subject=f"{unique}.>", direct=direct).seq == 1
    with pytest.raises(MessageNotFound) as caught:
        client.js.get_message(stream, 3, subject=f"{unique}.b", direct=direct)
    assert isinstance(caught.value, LookupError) and caught.value.err_code == 10037
    assert stream in str(caught.value) and f"{unique}.b" in str(caught.value)


@pytest.mark.parametrize("direct", [False, True])
def test_get_message_past_the_end_is_message_not_found(client, stream, direct):
    with pytest.raises(MessageNotFound, match="at sequence 99"):
        client.js.get_message(stream, 99, direct=direct)


def test_get_message_refuses_bad_input_and_names_a_missing_stream(client, stream, unique):
    with pytest.raises(StreamNotFound, match=f"NO_{unique}"):
        client.js.get_message(f"NO_{unique}", 1)
    with pytest.raises(ValueError, match="start at 1"):
        client.js.get_message(stream, 0)
    with pytest.raises(BadSubject):
        client.js.get_message("a.b", 1)
    with pytest.raises(BadSubject):
        client.js.get_message(stream, 1, subject="has space")


# -- delete_message ---------------------------------------------------------------------------
@pytest.mark.parametrize("stream", ["memory", "file"], indirect=True)  # they say it differently
def test_delete_message_removes_it_and_a_second_delete_is_message_not_found(client, stream):
    client.js.delete_message(stream, 2)
    assert client.js.stream_info(stream).state.messages == 2
    with pytest.raises(MessageNotFound):
        client.js.get_message(stream, 2)
    with pytest.raises(MessageNotFound):
        client.js.delete_message(stream, 2)  # deleted already
    with pytest.raises(MessageNotFound):
        client.js.delete_message(stream, 99)  # never stored
    with pytest.raises(StreamNotFound):
        client.js.delete_message(stream + "_NO", 1)
    assert client.js.get_message(stream, 1, subject=">").seq == 1


# -- streams, consumers, stream_info, update_stream --------------------------------------------
def test_listing_takes_a_timeout_and_reads_every_page(client, stream):
    assert stream in [s.config.name for s in client.js.streams(timeout=LIST_TIMEOUT)]
    assert client.js.stream_info(stream, timeout=LIST_TIMEOUT).state.messages == 3
    # The server answers a list in pages of 256: more than one page must all come back.
    names = [f"c{i:03d}" for i in range(260)]
    for name in names:
        client.js.declare_consumer(stream, ConsumerSpec(name, inactive_threshold=60))
    assert sorted(c.name for c in client.js.consumers(stream, timeout=LIST_TIMEOUT)) == names
    with pytest.raises(StreamNotFound):
        client.js.consumers(stream + "_NO")


def test_update_stream_applies_a_whole_config(client, stream):
    config = client.js.stream_info(stream).config
    config.description, config.max_msgs_per_subject = "kept by update_stream", 1
    info = client.js.update_stream(config)
    assert info.config.description == "kept by update_stream"
    assert client.js.stream_info(stream).config.max_msgs_per_subject == 1
    config.name = stream + "_NO"
    with pytest.raises(StreamNotFound):
        client.js.update_stream(config)


# -- with_prefix ------------------------------------------------------------------------------
def test_with_prefix_talks_to_the_api_under_that_prefix(client, stream):
    assert stream in [s.config.name for s in client.js.with_prefix("$JS.API").streams()]
    assert client.js.with_prefix("$JS.API").get_message(stream, 1).seq == 1
    with pytest.raises(JetStreamUnavailable):  # no account's API answers there
        client.js.with_prefix("$JS.nobody_here.API").streams()
    with pytest.raises(BadSubject):
        client.js.with_prefix("$JS.a b.API")


# -- subscribe_ordered ------------------------------------------------------------------------
def test_subscribe_ordered_replays_then_follows_in_order_and_close_deletes_it(client, stream,
                                                                            unique):
    seen, lock = [], threading.Lock()

    def on_message(msg):  # a plain callback: runs in the handler pool, one at a time
        with lock:
            seen.append((msg.subject, msg.json()["n"]))

    feed = client.js.subscribe_ordered(stream, f"{unique}.>", on_message)
    assert len(client.js.consumers(stream)) == 1
    client.js.publish(f"{unique}.c", {"n": 4})
    wait_for(lambda: len(seen) == 4, what="four messages")
    assert seen == [(f"{unique}.a", 1), (f"{unique}.b", 2), (f"{unique}.a", 3),
                    (f"{unique}.c", 4)]
    feed.close()
    assert client.js.consumers(stream) == []
    feed.close()  # closing again does nothing


def test_subscribe_ordered_without_replay_sees_only_new_messages_async(client, stream, unique):
    async def main():
        got: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()

        async def on_message(msg):  # a coroutine callback: runs on the client's loop
            loop.call_soon_threadsafe(got.put_nowait, msg.json()["n"])

        feed = await client.js.asubscribe_ordered(stream, f"{unique}.b", on_message,
                                                  replay=False)
        await client.js.apublish(f"{unique}.a", {"n": 4})
        await client.js.apublish(f"{unique}.b", {"n": 5})
        first = await asyncio.wait_for(got.get(), 5)
        await feed.aclose()
        return first, got.empty()

    assert asyncio.run(main()) == (5, True)
    assert client.js.consumers(stream) == []


def test_subscribe_ordered_on_a_missing_stream_names_it(client, unique):
    with pytest.raises(StreamNotFound, match=f"NO_{unique}"):
        client.js.subscribe_ordered(f"NO_{unique}", f"{unique}.>", print)


# -- the async twins from a foreign loop ------------------------------------------------------
def test_message_verbs_async_twins_from_a_foreign_event_loop(client, stream, unique):
    async def main():
        first = await client.js.aget_message(stream, 1, subject=f"{unique}.a", direct=True)
        await client.js.adelete_message(stream, first.seq)
        after = await client.js.aget_message(stream, 1, subject=f"{unique}.a")
        listed = await client.js.astreams(timeout=LIST_TIMEOUT)
        read = await client.js.aread(stream, f"{unique}.>")
        return first.seq, after.seq, [s.config.name for s in listed], [m.json()["n"] for m in read]

    first, after, listed, read = asyncio.run(main())
    assert (first, after) == (1, 3) and stream in listed and read == [2, 3]


def test_a_listing_that_times_out_is_asked_once_more_then_raises(client, unique):
    """A list is a read: after a node loss the meta leader may answer only the second ask."""
    import time as _time

    from agentlab import JetStreamTimeout

    prefix = f"$JS.{unique}.API"
    silent = client.subscribe(f"{prefix}.>")  # hears the requests, never answers
    started = _time.monotonic()
    with pytest.raises(JetStreamTimeout, match="list the streams"):
        client.js.with_prefix(prefix).streams(timeout=0.3)
    asked = [m.subject for m in silent.messages(timeout=0.3)]
    assert asked == [f"{prefix}.STREAM.LIST", f"{prefix}.STREAM.LIST"]
    assert _time.monotonic() - started < 3
