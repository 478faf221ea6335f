"""The fast path: batched writes, and requests written by the caller's own thread.

These tests attack the direct-write path: bytes from several threads and from nats-py's
own writes must never interleave, and one thread's messages must stay in order.
"""

from __future__ import annotations

import threading
import time

import agentlab
from agentlab import EmbeddedServer


def test_requests_are_written_by_the_calling_thread_when_the_socket_is_idle(client, lab, unique):
    lab.serve(f"{unique}.echo", lambda msg: msg.data)
    scheduled_drains = []
    original = client._outbound.drain
    client._outbound.drain = lambda: (scheduled_drains.append(1), original())[1]
    for i in range(50):
        assert client.request(f"{unique}.echo", str(i)).text == str(i)
    assert len(scheduled_drains) < 5  # the loop was not woken to write each request


def test_publishes_then_request_from_one_thread_arrive_in_order(client, lab, unique):
    seen = []

    def data_or_count(msg):  # one subscription: messages are handled in arrival order
        if msg.reply:
            msg.respond(str(len(seen)))
        else:
            seen.append(msg.text)

    lab.subscribe(f"{unique}.*", data_or_count)
    lab.flush()
    for round_ in range(30):
        for i in range(20):
            client.publish(f"{unique}.data", f"{round_}-{i}")
        # The request is written directly only if every publish before it is on the wire.
        assert client.request(f"{unique}.count", "n", timeout=2).text == str((round_ + 1) * 20)


def test_many_threads_mixing_publishes_and_requests_never_corrupt_the_stream(client, lab, unique):
    lab.serve(f"{unique}.echo", lambda msg: msg.data)
    received: dict[str, list[int]] = {}
    lock = threading.Lock()

    def record(msg):
        thread, n = msg.text.split(":")
        with lock:
            received.setdefault(thread, []).append(int(n))

    lab.subscribe(f"{unique}.mixed", record)
    lab.flush()
    errors = []

    def worker(name: str):
        try:
            for n in range(300):
                client.publish(f"{unique}.mixed", f"{name}:{n}")
                if n % 7 == 0:
                    payload = f"{name}/{n}" * 20
                    assert client.request(f"{unique}.echo", payload, timeout=5).text == payload
                if n % 50 == 0:
                    client.subscribe(f"{unique}.side.{name}.{n}")  # nats-py's own SUB writes
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    client.flush()
    deadline = time.monotonic() + 5
    while sum(map(len, received.values())) < 1800 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert errors == []
    assert client.nc.is_connected  # a corrupted protocol stream would have closed it
    assert {k: v for k, v in received.items()} == {f"w{i}": list(range(300)) for i in range(6)}


def test_direct_path_survives_a_server_restart():
    with EmbeddedServer(name="restart") as server:
        responder = agentlab.Client.open(server.url, name="responder")
        responder.serve("svc.echo", lambda msg: msg.data)
        caller = agentlab.Client.open(server.url, name="caller")
        assert caller.request("svc.echo", "before").text == "before"
        server.kill()
        server.restart()
        deadline = time.monotonic() + 10
        while not (caller.nc.is_connected and responder.nc.is_connected):
            assert time.monotonic() < deadline, "clients did not reconnect"
            time.sleep(0.05)
        answer = None
        while answer is None and time.monotonic() < deadline:
            try:
                answer = caller.request("svc.echo", "after", timeout=0.5).text
            except (agentlab.NoResponders, agentlab.RequestTimeout):
                time.sleep(0.05)  # the responder's SUB is replayed on reconnect
        assert answer == "after"
        assert caller._outbound._direct_transport is caller.nc._transport
        caller.close()
        responder.close()


def test_a_leaving_queue_member_delivers_everything_routed_to_it(lab, unique):
    """unsubscribe() drains: messages the server sent before it saw the UNSUB are kept."""
    for attempt in range(10):
        handled: list[str] = []
        members = [lab.connect(f"member-{attempt}-{i}") for i in range(2)]
        # Each attempt's handler and flood thread get that attempt's objects, not the loop's
        # variables: a straggler from one attempt must not write into the next one's.
        subs = [m.subscribe(f"{unique}.q{attempt}",
                            lambda msg, handled=handled: handled.append(msg.text),
                            queue="workers") for m in members]
        publisher = lab.connect(f"publisher-{attempt}")
        stop = threading.Event()

        def flood(publisher, subject, stop, sent):
            n = 0
            while not stop.is_set():
                publisher.publish(subject, str(n))
                n += 1
                if n % 50 == 0:
                    time.sleep(0.001)
            publisher.flush()
            sent.append(n)

        sent: list[int] = []
        thread = threading.Thread(target=flood,
                                  args=(publisher, f"{unique}.q{attempt}", stop, sent))
        thread.start()
        time.sleep(0.05)
        subs[0].unsubscribe()  # leaves mid-flood
        time.sleep(0.05)
        stop.set()
        thread.join(5)
        members[1].flush()
        deadline = time.monotonic() + 5
        while len(handled) < sent[0] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sorted(map(int, handled)) == list(range(sent[0])), f"attempt {attempt}"
        for client in [*members, publisher]:
            client.close()
