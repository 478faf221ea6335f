"""Seed 004's NATS 2.11 operational features, each on the real server.

- Subject delete markers (ADR-43): when the last intent of a kind expires, CALL_INTENT keeps
  a marker in its place, which the kind's IntentQueue receives and notes as expired.
- JetStream ingest limits (max_buffered_msgs / max_buffered_size): a publish storm past them
  is refused, each refusal a clear error, and every acknowledged message is stored.
- cluster_traffic: the cluster's node configs (deploy/nats, which docker compose mounts too)
  send their account's Raft traffic through the account itself, and the cluster carries it
  so: a replicated stream's cluster info names the account. The failover tests in
  test_cluster.py run on the same files.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from agentlab import Client, EmbeddedServer, JetStreamError, StreamSpec
from agentlab.cluster import LocalCluster, NodeConfig, node_config_paths
from agentlab.core.msgtrace import trace_message
from agentlab.core.subjects import Subjects
from agentlab.errors import MessageNotFound
from agentlab.org import INTENT_STREAM, IntentQueue, publish_intent
from agentlab.org.intents import MARKER_REASON
from agentlab.org.streams import INTENT_MARKER_TTL

# ---------------------------------------------------------------------------------------------
# subject delete markers


def test_an_expired_intent_leaves_a_delete_marker_its_queue_reads_as_expired(org_lab, unique):
    kind = f"book{unique}"
    subject = Subjects().call_intent(kind)
    config = org_lab.js.stream_info(INTENT_STREAM).config
    assert config.subject_delete_marker_ttl == INTENT_MARKER_TTL and config.allow_msg_ttl
    queue = IntentQueue(org_lab, kind)  # declared first: nobody fetches before it expires
    stored = publish_intent(org_lab, kind, {"call": "stale"}, ttl=1)

    # The server checks TTLs about once a second; the marker lives INTENT_MARKER_TTL.
    deadline, marker = time.monotonic() + 5, None
    while marker is None and time.monotonic() < deadline:
        try:
            found = org_lab.js.get_message(INTENT_STREAM, stored.seq, subject=subject)
        except MessageNotFound:
            found = None
        if found is not None and found.seq > stored.seq:
            marker = found
        time.sleep(0.02)
    assert marker is not None, "no subject delete marker appeared where the intent expired"
    assert marker.data == b"" and marker.subject == subject
    assert marker.headers[MARKER_REASON] == "MaxAge"
    assert marker.headers["Nats-TTL"] == "1s"  # it expires in turn

    assert queue.fetch(batch=10, timeout=1) == []  # no intent to act on ...
    (expired,) = queue.expired                      # ... but the news that one went stale
    assert (expired.subject, expired.reason) == (subject, "MaxAge")
    assert queue.pending() == 0  # the marker was acknowledged out of the work queue


def test_markers_need_a_whole_second_and_bring_message_ttls_with_them():
    with pytest.raises(ValueError, match="at least 1 second"):
        StreamSpec("S", ["s.>"], subject_delete_marker_ttl=0.5).to_config()
    config = StreamSpec("S", ["s.>"], subject_delete_marker_ttl=60).to_config()
    assert config.allow_msg_ttl and config.allow_rollup_hdrs
    assert config.as_dict()["subject_delete_marker_ttl"] == 60 * 10**9
    assert "subject_delete_marker_ttl" not in StreamSpec("S", ["s.>"]).to_config().as_dict()


# ---------------------------------------------------------------------------------------------
# ingest limits


def test_a_publish_storm_past_the_ingest_limit_is_refused_and_no_acked_message_is_lost(
        unique):
    with EmbeddedServer(name="ingest", max_buffered_msgs=20) as server:
        assert "max_buffered_msgs: 20" in server.config_path.read_text()
        with Client.open(server.url, name="storm") as client:
            client.js.declare_stream(StreamSpec("STORM", [f"{unique}.>"]))
            count = 3000

            async def storm() -> list:
                return await asyncio.gather(
                    *(client.js.apublish(f"{unique}.load", {"n": n}, msg_id=f"m{n}",
                                         timeout=20) for n in range(count)),
                    return_exceptions=True)

            results = asyncio.run(storm())
            acked = {n for n, r in enumerate(results) if not isinstance(r, BaseException)}
            refused = [r for r in results if isinstance(r, BaseException)]
            assert refused, "the storm never reached the ingest limit"
            assert acked, "nothing was stored at all"
            # Every publish got an answer: stored, or refused with the reason and the fix.
            assert len(acked) + len(refused) == count
            for error in refused:
                assert isinstance(error, JetStreamError), repr(error)
                assert (error.code, error.err_code) == (429, 10167)
            text = str(refused[0])
            assert "too many requests" in text and "max_buffered_msgs" in text
            assert "max_buffered_size" in text and "Publish it again" in text
            # Every acknowledged message is in the stream, and nothing else.
            stored = {m.json()["n"] for m in client.js.read("STORM", timeout=5)}
            assert stored == acked
            # Sent again, as the error says, the refused ones are stored too.
            for n in sorted(set(range(count)) - acked)[:50]:
                assert not client.js.publish(f"{unique}.load", {"n": n},
                                             msg_id=f"m{n}").duplicate


def test_the_ingest_limits_are_options_of_the_embedded_server_and_the_lab():
    with pytest.raises(ValueError, match="max_buffered_msgs"):
        EmbeddedServer(max_buffered_msgs=0)
    with pytest.raises(ValueError, match="max_buffered_size"):
        EmbeddedServer(max_buffered_size="lots")
    with EmbeddedServer(max_buffered_msgs=500, max_buffered_size="8MB") as running:
        text = running.config_path.read_text()
        assert "  max_buffered_msgs: 500\n" in text and "  max_buffered_size: 8MB\n" in text


# ---------------------------------------------------------------------------------------------
# cluster_traffic, on the cluster the node configs make


def test_every_node_config_sends_its_accounts_raft_traffic_through_the_account():
    for path in node_config_paths():
        settings = NodeConfig.read(path).settings
        accounts = settings["accounts"]
        assert accounts["AGENTLAB"]["jetstream"]["cluster_traffic"] == "owner", path
        # Clients without credentials land in that account, as the jupyter service does.
        assert settings["no_auth_user"] in {u["user"] for u in accounts["AGENTLAB"]["users"]}
        assert settings["cluster"]["accounts"] == ["AGENTLAB"]  # its own routes
        assert settings["jetstream"]["max_buffered_msgs"] > 0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with LocalCluster(store_dir=tmp_path_factory.mktemp("cluster211")) as running:
        running.wait_for_meta_leader()
        yield running


def _declare(client: Client, spec: StreamSpec, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:  # just after the cluster forms, replicas may not be placeable yet
        try:
            client.js.declare_stream(spec)
            return
        except JetStreamError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_a_replicated_stream_replicates_in_its_own_account(cluster, unique):
    with Client.open(cluster.url, name="owner") as client:
        stream = unique.upper()
        _declare(client, StreamSpec(stream, [f"{unique}.>"], replicas=3))
        info = client.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=5).json()
        assert info["cluster"]["traffic_account"] == "AGENTLAB"
        assert len(info["cluster"]["replicas"]) == 2
        # The meta group (stream placement, elections) stays in the system account.
        raftz = cluster.node(cluster.names[0])._monitor("raftz")
        assert raftz["$SYS"]["_meta_"]["traffic_account"] == "$SYS"
        # And the account's own routes connect every node.
        for name in cluster.names:
            routes = cluster.node(name)._monitor("routez")["routes"]
            assert {r["remote_name"] for r in routes if r.get("account") == "AGENTLAB"} == \
                set(cluster.names) - {name}
        client.js.delete_stream(stream)


def test_a_trace_across_the_cluster_follows_the_routes(cluster, unique):
    first, second = cluster.urls[0], cluster.urls[1]
    with Client.open(first, name="pub-1") as publisher, \
            Client.open(second, name="sub-2") as subscriber:
        sub = subscriber.subscribe(f"{unique}.x")
        subscriber.flush()
        deadline = time.monotonic() + 10
        while True:  # interest crosses the route a moment after the subscription
            trace = trace_message(publisher, f"{unique}.x", "over there")
            if any(e.name == "sub-2" for e in trace.subscribers) or \
                    time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert trace.complete
        origin, *others = trace.servers
        assert origin.hop == "" and origin.hops >= 1
        route = next(e for e in origin.events if e.type == "eg" and e.kind == "route")
        remote = next(s for s in others if s.hop == route.next_hop)
        ingress = next(e for e in remote.events if e.type == "in")
        assert ingress.kind == "route" and ingress.name == origin.server
        assert ingress.account == "AGENTLAB"
        assert [e.name for e in remote.events if e.type == "eg"] == ["sub-2"]
        assert sub.next(timeout=2).text == "over there"
