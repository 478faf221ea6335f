"""Hostile input at the wire: whatever a caller passes, the server receives exactly the one
message (or subscription) asked for, or the call raises a clear error. Never an extra
protocol command.

The server's own per-connection counters are the witness (``/connz``): after each call and a
flush, the caller's connection has sent exactly one more message (publish, request,
JetStream publish) or one more subscription (subscribe), or nothing at all when the call
raised; and it is the same connection (an injected bad command would make the server close
it, and the client reconnect).
"""

from __future__ import annotations

import itertools
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentlab import BadSubject, Client, EmbeddedServer, PayloadTooLarge, RequestTimeout, StreamSpec
from agentlab.errors import AgentlabError, NoResponders

INJECTION = "r 0\r\n\r\nPUB evil 2\r\nhi\r\nPUB z"

# Characters that mean something to the NATS protocol, plus ordinary ones.
_PIECES = st.sampled_from([
    "a", "b", "Z", "0", "-", "_", ".", "*", ">", " ", "\t", "\r", "\n", "\r\n", ":", "\x00",
    "\x0c", "é", "PUB ", "SUB ", "UNSUB 1", "HPUB ", "PING", "+OK", "$JS.API", "_INBOX.",
    INJECTION,
])
hostile = st.lists(_PIECES, min_size=0, max_size=8).map("".join)
maybe_hostile = st.one_of(st.just(""), hostile, st.text(max_size=12))
header_maps = st.one_of(
    st.none(),
    st.dictionaries(st.one_of(hostile, st.text(max_size=6)), maybe_hostile, max_size=3))

EXPECTED_REFUSALS = (BadSubject, ValueError, TypeError, PayloadTooLarge)
_ids = itertools.count()


@pytest.fixture(scope="module")
def server():
    with EmbeddedServer(name="wire-input", monitor=True) as server:  # the witness: /connz
        yield server


@pytest.fixture(scope="module")
def caller(server):
    name = f"caller-{uuid.uuid4().hex[:8]}"
    client = Client.open(server.url, name=name)
    client.js.declare_stream(StreamSpec("FUZZ", ["fz.js.>"], storage="memory", max_msgs=1000))
    yield client
    client.close()


def _connection(server: EmbeddedServer, name: str) -> dict:
    conns = [c for c in server._monitor("connz", subs=True)["connections"] if c.get("name") == name]
    assert len(conns) == 1, f"expected one connection named {name}, found {len(conns)}"
    return conns[0]


class Witness:
    """The caller's connection as the server counts it, before and after one call."""

    def __init__(self, server: EmbeddedServer, client: Client):
        self.server, self.client = server, client
        self.before = _connection(server, client.name)
        self.reconnects = client.nc.stats["reconnects"]

    def sent(self) -> tuple[int, int]:
        self.client.flush()
        after = _connection(self.server, self.client.name)
        assert after["cid"] == self.before["cid"], "the server closed the caller's connection"
        assert self.client.nc.stats["reconnects"] == self.reconnects
        return (after["in_msgs"] - self.before["in_msgs"],
                after.get("subscriptions", 0) - self.before.get("subscriptions", 0))


def _call(witness: Witness, action) -> tuple[bool, tuple[int, int]]:
    try:
        action()
    except EXPECTED_REFUSALS as error:
        assert str(error), "a refusal must say why"
        return False, witness.sent()
    except (RequestTimeout, NoResponders):
        return True, witness.sent()  # sent, and nobody answered: fine
    return True, witness.sent()


def test_the_reported_injection_raises_and_sends_nothing(server, caller):
    witness = Witness(server, caller)
    with pytest.raises(BadSubject, match="Reply subject"):
        caller.publish("a.b", b"x", reply=INJECTION)
    assert witness.sent() == (0, 0)


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(subject=hostile, reply=maybe_hostile, headers=header_maps, data=st.binary(max_size=16))
def test_publish_sends_one_message_or_raises(server, caller, subject, reply, headers, data):
    witness = Witness(server, caller)
    base = f"fz.pub.{next(_ids)}"
    ok, (msgs, subs) = _call(witness, lambda: caller.publish(
        base + subject, data, reply=reply, headers=headers))
    assert (msgs, subs) == ((1, 0) if ok else (0, 0))


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(subject=hostile, headers=header_maps)
def test_request_sends_one_message_or_raises(server, caller, subject, headers):
    witness = Witness(server, caller)
    ok, (msgs, subs) = _call(witness, lambda: caller.request(
        f"fz.req.{next(_ids)}{subject}", b"?", headers=headers, timeout=0.05))
    assert (msgs, subs) == ((1, 0) if ok else (0, 0))


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(subject=hostile, queue=maybe_hostile)
def test_subscribe_adds_one_subscription_or_raises(server, caller, subject, queue):
    witness = Witness(server, caller)
    made = []
    ok, (msgs, subs) = _call(witness, lambda: made.append(
        caller.subscribe(f"fz.sub.{next(_ids)}{subject}", queue=queue)))
    assert (msgs, subs) == ((0, 1) if ok else (0, 0))
    for sub in made:
        sub.unsubscribe()


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(subject=hostile, msg_id=st.one_of(st.none(), maybe_hostile), headers=header_maps)
def test_jetstream_publish_sends_one_message_or_raises(server, caller, subject, msg_id, headers):
    witness = Witness(server, caller)
    try:
        ok, (msgs, subs) = _call(witness, lambda: caller.js.publish(
            f"fz.js.{next(_ids)}{subject}", b"x", msg_id=msg_id, headers=headers, timeout=1))
    except AgentlabError as error:  # e.g. a literal subject no stream captures
        assert str(error)
        ok, (msgs, subs) = True, witness.sent()
    assert (msgs, subs) == ((1, 0) if ok else (0, 0))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(stream=maybe_hostile, consumer=maybe_hostile)
def test_stream_and_consumer_names_are_checked(server, caller, stream, consumer):
    witness = Witness(server, caller)
    try:
        caller.js.consumer_info(stream, consumer)
    except BadSubject as error:
        assert "name" in str(error)
        assert witness.sent() == (0, 0)
    except AgentlabError:  # a well-formed name that does not exist: one API request
        assert witness.sent() == (1, 0)


def test_tenant_client_refuses_the_injection_too(monkeypatch):
    import agentlab
    import agentlab.lab

    monkeypatch.delenv("AGENTLAB_NATS_URL", raising=False)
    monkeypatch.setattr(agentlab.lab, "_current", None)  # leave the session's lab running
    lab = agentlab.start(tenants=["acme", "globex"], fresh=True, name="wire-input-tenants")
    try:
        acme = lab.tenant("acme")
        with pytest.raises(BadSubject, match="Reply subject"):
            acme.publish("genbrain.org.acme.x", b"x", reply=INJECTION)
        with pytest.raises(ValueError, match="Header name"):
            acme.publish("genbrain.org.acme.x", b"x", headers={"A\r\nPUB evil 2": "v"})
        with pytest.raises(BadSubject):
            acme.subscribe("genbrain.org.acme.x", queue="q\r\nPUB evil 2\r\nhi")
    finally:
        lab.close()
