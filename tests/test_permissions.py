"""Permission violations raised at the call that caused them (DESIGN.md decision 5)."""

from __future__ import annotations

import time

import pytest

import agentlab
from agentlab import AuthenticationFailed, EmbeddedServer, PermissionDenied

AUTH = """
authorization {
  users = [
    {user: alice, password: alice-pw, permissions: {
        publish: {allow: ["alice.>", "$JS.API.>"]},
        subscribe: {allow: ["alice.>", "_INBOX.>"]},
        allow_responses: true
    }},
    {user: no_inbox, password: no-inbox-pw, permissions: {
        publish: {allow: [">"]},
        subscribe: {allow: ["no_inbox.>"]}
    }},
    {user: no_js, password: no-js-pw, permissions: {
        publish: {allow: ["no_js.>"]},
        subscribe: {allow: ["no_js.>", "_INBOX.>"]}
    }},
    {user: admin, password: admin-pw}
  ]
}
"""


@pytest.fixture(scope="module")
def server():
    with EmbeddedServer(extra_config=AUTH) as server:
        yield server


@pytest.fixture
def alice(server):
    client = agentlab.Client.open(server.url, name="alice", user="alice", password="alice-pw")
    yield client
    client.close()


@pytest.fixture
def admin(server):
    client = agentlab.Client.open(server.url, name="admin", user="admin", password="admin-pw")
    yield client
    client.close()


def test_forbidden_publish_raises_at_the_call(alice):
    with pytest.raises(PermissionDenied) as caught:
        alice.publish("bob.secret", "hello")
    error = caught.value
    assert isinstance(error, PermissionError)
    assert error.action == "publish" and error.subject == "bob.secret"
    assert "alice" in str(error) and "'bob.secret'" in str(error)
    # Permissions do not change mid-connection: the second attempt fails without a round trip.
    started = time.perf_counter()
    with pytest.raises(PermissionDenied):
        alice.request("bob.secret", "again", timeout=5)
    assert time.perf_counter() - started < 0.05


def test_allowed_publish_still_works_after_a_refusal(alice, admin):
    seen = admin.subscribe("alice.>")
    with pytest.raises(PermissionDenied):
        alice.publish("bob.secret", "x")
    alice.publish("alice.notes", "fine")
    assert seen.next(timeout=2).text == "fine"


def test_forbidden_subscribe_raises_at_the_call(alice):
    with pytest.raises(PermissionDenied, match="subscribe to 'bob.>'"):
        alice.subscribe("bob.>")
    with pytest.raises(PermissionDenied, match="subscribe to 'bob.work'"):
        alice.subscribe("bob.work", lambda m: None, queue="workers")
    assert alice.subscribe("alice.inbox") is not None


def test_forbidden_request_raises_permission_error_not_timeout(alice, admin):
    admin.serve("bob.svc", lambda msg: "answer for bob")
    started = time.perf_counter()
    with pytest.raises(PermissionDenied, match="publish to 'bob.svc'"):
        alice.request("bob.svc", "let me in", timeout=5)
    assert time.perf_counter() - started < 1.0  # not the 5 s timeout


def test_async_twins_raise_too(alice):
    import asyncio

    async def main():
        with pytest.raises(PermissionDenied):
            await alice.apublish("carol.secret", "x")
        with pytest.raises(PermissionDenied):
            await alice.asubscribe("carol.>")

    asyncio.run(main())


def test_missing_inbox_permission_is_explained_at_connect(server):
    with pytest.raises(PermissionDenied, match="_INBOX") as caught:
        agentlab.Client.open(server.url, name="no-inbox", user="no_inbox", password="no-inbox-pw")
    assert "inbox_prefix" in str(caught.value)


def test_wrong_password_is_an_authentication_error_without_the_password(server):
    with pytest.raises(AuthenticationFailed) as caught:
        agentlab.Client.open(server.url, name="intruder", user="alice", password="wrong-guess")
    assert "alice" in str(caught.value) and "wrong-guess" not in str(caught.value)
    with pytest.raises(AuthenticationFailed, match="anonymous"):
        agentlab.Client.open(server.url, name="anonymous")


def test_serve_and_acks_work_for_a_restricted_user(server, admin):
    """Replies go to the requester's inbox and acks to $JS.ACK: no first-use round trip."""
    alice = agentlab.Client.open(server.url, name="alice-svc", user="alice", password="alice-pw")
    try:
        served = alice.serve("alice.svc", lambda msg: "pong")
        assert admin.request("alice.svc", "ping", timeout=2).text == "pong"
        assert served.errors == 0

        async def async_responder(msg):
            msg.respond("async pong")
            alice.publish("bob.forbidden", "from the loop thread")  # logged, not raised here

        alice.subscribe("alice.async", async_responder)
        assert admin.request("alice.async", "ping", timeout=2).text == "async pong"
    finally:
        alice.close()


def test_forbidden_jetstream_call_fails_fast_for_any_restricted_user(server):
    """nats-py's own JetStream requests would wait out their timeout; they fail at once."""
    client = agentlab.Client.open(server.url, name="no-js", user="no_js", password="no-js-pw")
    try:
        started = time.perf_counter()
        with pytest.raises(PermissionDenied, match="STREAM.INFO"):
            client.js.stream_info("ANYTHING")
        assert time.perf_counter() - started < 1.0
    finally:
        client.close()
