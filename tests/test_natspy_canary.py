"""The canary for agentlab/core/_natspy/: is every nats-py internal it relies on still there?

Run this file on a new nats-py before widening the pin in pyproject.toml. It reads the same
``INTERNALS`` as the check each connection makes, against live objects of a real server; it
shows that the check names an internal that is gone; and it shows that a connection without
one still delivers everything, through nats-py's public API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import nats.js.errors
import pytest
from nats.aio.transport import TcpTransport

import agentlab
from agentlab import EmbeddedServer, StreamSpec
from agentlab.core import _natspy
from agentlab.core._natspy import internals

_GONE = object()


class Renamed:
    """``obj`` as a nats-py that renamed ``name`` would show it (or, given ``value``, as one
    that changed its kind)."""

    def __init__(self, obj, name, value=_GONE):
        self.__dict__.update(renamed_obj=obj, renamed_name=name, renamed_value=value)

    def __getattr__(self, attr):
        if attr == self.renamed_name:
            if self.renamed_value is _GONE:
                raise AttributeError(attr)
            return self.renamed_value
        return getattr(self.renamed_obj, attr)


@pytest.fixture(scope="module")
def server():
    # Its own server: a test elsewhere that starts a fresh lab closes the session's.
    with EmbeddedServer(name="natspy-canary") as server:
        yield server


@pytest.fixture
def client(server):
    client = agentlab.Client.open(server.url, name="canary")
    yield client
    client.close()


@pytest.fixture
def peer(server):
    """The other end: publishes to, subscribes to and answers the connection under test."""
    peer = agentlab.Client.open(server.url, name="peer")
    yield peer
    peer.close()


@pytest.fixture
def live(client, unique):
    """One live nats-py object per class named in INTERNALS, from a real connection."""
    sub = client.subscribe(f"{unique}.canary")
    yield {"Client": client.nc, "TcpTransport": client.nc._transport,
           "Subscription": sub._nats_sub, "JetStreamContext": client.nc.jetstream()}
    sub.unsubscribe()


def _owner(name):
    return name.partition(".")[0]


@pytest.mark.parametrize("name", list(_natspy.INTERNALS))
def test_each_internal_is_there_with_its_kind(live, name):
    kind = _natspy.INTERNALS[name][0]
    assert name not in _natspy.check(live[_owner(name)], _owner(name)), (
        f"nats-py {_natspy.nats_py_version()} has no {name} of kind {kind!r}: adapt "
        "agentlab/core/_natspy/ before widening the nats-py pin in pyproject.toml")


def test_the_installed_nats_py_gives_the_fast_path_all_it_needs(client):
    assert _natspy.fast_path_missing(client.nc) == []
    assert not client._outbound.public and client._outbound._direct_socket is not None


@pytest.mark.parametrize("name", list(_natspy.INTERNALS))
def test_the_check_names_an_internal_that_was_renamed(live, name):
    owner = _owner(name)
    assert _natspy.check(Renamed(live[owner], name.partition(".")[2]), owner) == [name]


@pytest.mark.parametrize("name", ["Client._pending", "Client._flush_queue", "Subscription._id"])
def test_the_check_names_an_internal_that_changed_kind(live, name):
    owner = _owner(name)
    changed = Renamed(live[owner], name.partition(".")[2], value="a string now")
    assert _natspy.check(changed, owner) == [name]


def test_the_connect_time_check_names_what_the_fast_path_lacks(client):
    assert _natspy.fast_path_missing(Renamed(client.nc, "_pending")) == ["Client._pending"]
    unconnected = Renamed(client.nc, "_transport", value=TcpTransport())  # no socket writer
    assert _natspy.fast_path_missing(unconnected) == ["TcpTransport._io_writer"]
    # Not needed to send: server_info() does without, and says so.
    assert _natspy.fast_path_missing(Renamed(client.nc, "_server_info")) == []


def test_nats_py_makes_its_own_api_requests_through_nc_request(client):
    """route_requests() (fail-fast permission errors) relies on this."""
    seen = []
    original = client.nc.request

    async def spy(subject, *args, **kwargs):
        seen.append(subject)
        return await original(subject, *args, **kwargs)

    _natspy.route_requests(client.nc, spy)

    async def api_calls():
        js = client.nc.jetstream()
        await js.account_info()
        for missing_bucket in (js.key_value("NO_SUCH_BUCKET"), js.object_store("NO_SUCH")):
            with contextlib.suppress(nats.js.errors.NotFoundError):  # the request is the point
                await missing_bucket

    client._bridge.run(api_calls(), operation="canary")
    assert seen == ["$JS.API.INFO", "$JS.API.STREAM.INFO.KV_NO_SUCH_BUCKET",
                    "$JS.API.STREAM.INFO.OBJ_NO_SUCH"]


def test_the_jetstream_prefix_is_nats_py_s_default(client):
    assert client.js.api_prefix == "$JS.API" == client.nc.jetstream()._prefix


@pytest.mark.parametrize("reply", ["", "_INBOX.x.1"])
@pytest.mark.parametrize("headers", [None, {"Nats-Msg-Id": "m-1", "X-Empty": ""}])
def test_commands_read_back_as_they_were_built(reply, headers):
    block = _natspy.encode_headers(headers) if headers else b""
    command = _natspy.pub_command("a.b", b"pay load\r\n", reply, block)
    assert _natspy.parse_pub(command) == ("a.b", reply, headers, b"pay load\r\n")


# -- without an internal: the public path ---------------------------------------------------
@pytest.fixture
def expect_renamed(monkeypatch):
    """``expect_renamed("Client._pending")``: agentlab expects the internal under a name the
    installed nats-py lacks, as if nats-py had renamed it. Warnings start afresh."""
    monkeypatch.setattr(internals, "_warned", set())

    def rename(name):
        entry = _natspy.INTERNALS[name]
        monkeypatch.delitem(_natspy.INTERNALS, name)
        monkeypatch.setitem(_natspy.INTERNALS, name + "_renamed", entry)
        return name + "_renamed"

    return rename


def _fallback_warnings(caplog):
    return [r.getMessage() for r in caplog.records if "nats-py's public API" in r.getMessage()]


def test_without_a_fast_path_internal_everything_still_delivers(server, peer, unique,
                                                                expect_renamed, caplog):
    missing = expect_renamed("Client._pending")
    with caplog.at_level(logging.WARNING, logger="agentlab"):
        slow = agentlab.Client.open(server.url, name="public-path")
        again = agentlab.Client.open(server.url, name="public-path-2")
        again.close()
    subs = []
    try:
        assert slow._outbound.public and slow._outbound.missing == [missing]
        assert slow._outbound._direct_socket is None
        [warning] = _fallback_warnings(caplog)  # one, however many connections fall back
        assert missing in warning and _natspy.nats_py_version() in warning

        inbox = slow.subscribe(f"{unique}.in")
        peer.publish(f"{unique}.in", "to the public path")
        assert inbox.next(timeout=2).text == "to the public path"

        out = peer.subscribe(f"{unique}.out")
        subs.append(out)
        peer.flush()
        sent = slow.nc.stats["out_msgs"]
        for i in range(300):
            slow.publish(f"{unique}.out", str(i), headers={"N": str(i)} if i % 2 else None)
        slow.flush()
        got = [out.next(timeout=2) for _ in range(300)]
        assert [m.text for m in got] == [str(i) for i in range(300)]  # all of them, in order
        assert got[1].headers["N"] == "1"
        assert slow.nc.stats["out_msgs"] - sent == 300  # each through nats-py's publish()

        subs.append(peer.serve(f"{unique}.echo", lambda msg: msg.data))
        assert slow.request(f"{unique}.echo", "ping", timeout=2).text == "ping"
        assert [m.text for m in slow.gather([(f"{unique}.echo", "a"), (f"{unique}.echo", "b")])
                ] == ["a", "b"]
        assert slow._bridge.run(slow.arequest(f"{unique}.echo", "async"),
                                operation="test").text == "async"
        slow.serve(f"{unique}.svc", lambda msg: "pong")  # its replies take the public path
        assert peer.request(f"{unique}.svc", timeout=2).text == "pong"

        stream = f"S{unique}"
        peer.js.declare_stream(StreamSpec(stream, [f"{unique}.js"]))
        try:
            assert slow.js.publish(f"{unique}.js", "stored").seq == 1
        finally:
            peer.js.delete_stream(stream)

        inbox.unsubscribe()  # nats-py's drain(): the server stops routing to it
        received = slow.nc.stats["in_msgs"]
        peer.publish(f"{unique}.in", "after")
        peer.flush()
        slow.flush()
        assert slow.nc.stats["in_msgs"] == received
    finally:
        for sub in subs:
            sub.unsubscribe()
        slow.close()


def test_without_a_subscription_internal_the_connection_falls_back_at_connect(
        server, peer, unique, expect_renamed, caplog):
    missing = expect_renamed("Subscription._stop_processing")
    with caplog.at_level(logging.WARNING, logger="agentlab"):
        slow = agentlab.Client.open(server.url, name="public-path-sub")
    try:
        assert slow._outbound.missing == [missing]
        assert missing in _fallback_warnings(caplog)[0]
        seen = []
        sub = slow.subscribe(f"{unique}.x", seen.append)
        peer.publish(f"{unique}.x", "one")
        slow._bridge.run(asyncio.sleep(0.2), operation="test")
        sub.unsubscribe()
        slow.publish(f"{unique}.y", "the connection still sends")
        slow.flush()
        assert [m.text for m in seen] == ["one"]
    finally:
        slow.close()
