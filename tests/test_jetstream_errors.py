"""When JetStream cannot answer, the error says why and what to do, against real servers:
no JetStream on the server, none for the account, a server that does not answer, and a
stream electing a leader on a 3-node cluster. None of them is reported as NotAStream,
which only a JetStream that says no stream captures the subject earns.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from agentlab import Client, EmbeddedServer, NotAStream, RequestTimeout, StreamSpec
from agentlab.cluster import LocalCluster
from agentlab.errors import (
    JetStreamNotEnabled,
    JetStreamTimeout,
    JetStreamUnavailable,
    LeaderElection,
    PublishTimeout,
)
from helpers import wait_for

pytestmark = pytest.mark.timeout(90)


class ServerWithoutJetStream(EmbeddedServer):
    """A plain core-NATS server: the same config as the embedded one, minus its jetstream
    block, so nothing at all answers the JetStream API."""

    def _config(self) -> str:
        text = super()._config()
        start = text.index("jetstream {")
        return text[:start] + text[text.index("}", start) + 1:]


def pause(server: EmbeddedServer) -> None:
    """SIGSTOP: alive, connected, answering nothing. Returns once the kernel has stopped
    it (the signal is asynchronous: a request sent at once could still be answered)."""
    os.kill(server.pid, signal.SIGSTOP)
    wait_for(lambda: Path(f"/proc/{server.pid}/stat").read_text().split(") ")[1][0] == "T",
             2, "the server to stop", interval=0.005)


def test_a_server_without_jetstream_is_named_as_such_not_as_a_missing_stream():
    with ServerWithoutJetStream(name="core-only") as server, \
            Client.open(server.url, name="no-js") as client:
        with pytest.raises(JetStreamUnavailable) as read:
            client.js.stream_info("AGENT_TASKS")
        assert str(read.value).startswith(
            "No JetStream responded when asked to read stream 'AGENT_TASKS' (no responders)")
        assert "-js" in str(read.value) and isinstance(read.value, ConnectionError)

        with pytest.raises(JetStreamUnavailable) as published:
            client.js.publish("genbrain.agents.cto.tasks", {"title": "x"})
        assert not isinstance(published.value, NotAStream)
        assert "store the message published on 'genbrain.agents.cto.tasks'" in \
            str(published.value)
        assert "for the publish nor the API" in str(published.value)


def test_an_account_without_jetstream_is_told_to_enable_it():
    accounts = ("accounts { NOJS: { users: [{user: plain, password: plain}] }, "
                "JS: { jetstream: enabled, users: [{user: js, password: js}] } }")
    with EmbeddedServer(name="accounts", extra_config=accounts) as server, \
            Client.open(server.url, name="plain", user="plain", password="plain") as client:
        with pytest.raises(JetStreamNotEnabled) as read:
            client.js.stream_info("AGENT_TASKS")
        assert read.value.err_code == 10039
        assert "JetStream not enabled for account (err_code 10039)" in str(read.value)
        assert "`jetstream: enabled`" in str(read.value)
        with pytest.raises(JetStreamNotEnabled):  # the publish, asked through the API
            client.js.publish("genbrain.agents.cto.tasks", {"title": "x"})


def test_a_server_that_does_not_answer_times_out_with_the_action_named():
    with EmbeddedServer(name="paused") as server, \
            Client.open(server.url, name="patient") as client:
        client.js.declare_stream(StreamSpec("PAUSED", ["paused.>"]))
        pause(server)
        try:
            started = time.monotonic()
            with pytest.raises(JetStreamTimeout) as caught:
                client.js.stream_info("PAUSED")
            assert 4.5 < time.monotonic() - started < 8
        finally:
            os.kill(server.pid, signal.SIGCONT)
        assert isinstance(caught.value, TimeoutError)
        assert str(caught.value).startswith(
            "JetStream did not answer within 5 s when asked to read stream 'PAUSED'")
        assert client.js.stream_info("PAUSED").config.name == "PAUSED"  # and it recovers

        pause(server)
        try:
            with pytest.raises(PublishTimeout) as unacknowledged:
                client.js.publish("paused.a", b"x", msg_id="paused-1", timeout=0.5)
        finally:
            os.kill(server.pid, signal.SIGCONT)
        assert str(unacknowledged.value).startswith(
            "No stream acknowledged the message published on 'paused.a' within 0.5 s, so it "
            "may or may not be stored.")
        assert isinstance(unacknowledged.value, RequestTimeout)  # what it was before
        # The resend the error advises: stored once, whichever copy got there.
        receipt = client.js.publish("paused.a", b"x", msg_id="paused-1")
        assert receipt.seq == 1 and client.js.stream_info("PAUSED").state.messages == 1


def test_a_publish_while_the_stream_elects_a_leader_says_so(tmp_path):
    """Kill the node leading an R3 stream: until the others elect a new leader, no stream
    listens on its subjects (a publish gets "no responders"), yet the stream exists. The
    JetStream API says so, and the error says to retry; after the election it works."""
    with LocalCluster(3, store_dir=tmp_path / "cluster") as cluster:
        meta = cluster.wait_for_meta_leader()
        admin = Client.open(cluster.node(meta).url, name="admin")
        try:
            admin.js.declare_stream(StreamSpec("ELECT", ["elect.>"], replicas=3))
            leader = cluster.wait_for_stream_leader("ELECT")
            while leader == meta:  # losing the meta leader too would make the API wait
                admin.request("$JS.API.STREAM.LEADER.STEPDOWN.ELECT", timeout=5)
                leader = cluster.wait_for_stream_leader("ELECT", other_than=leader)
            admin.js.publish("elect.a", b"before")
            routes = cluster.node(meta).varz()["routes"]

            cluster.stop_node(leader, kill=True)
            # Until this node has dropped its routes to the dead one, a publish is still
            # forwarded there and times out (PublishTimeout) instead of finding no one.
            wait_for(lambda: cluster.node(meta).varz()["routes"] < routes, 5,
                     "the routes to the killed node to close")
            with pytest.raises(LeaderElection) as caught:
                admin.js.publish("elect.a", b"during")
            error = caught.value
            assert not isinstance(error, NotAStream) and error.stream == "ELECT"
            assert str(error).startswith(
                "JetStream is electing a leader for stream 'ELECT' and could not store the "
                "message published on 'elect.a' (stream 'ELECT' captures the subject, but "
                "no leader of it took the publish); retry in a moment.")
            assert isinstance(error, JetStreamUnavailable)  # one except for "not now"

            cluster.wait_for_stream_leader("ELECT", timeout=30, other_than=leader)
            deadline = time.monotonic() + 10
            while True:  # the new leader may take a moment to listen on the subjects
                try:
                    receipt = admin.js.publish("elect.a", b"after")
                    break
                except LeaderElection:
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
            assert receipt.stream == "ELECT" and receipt.seq == 2
        finally:
            admin.close()
