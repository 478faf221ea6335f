"""A real three-node JetStream cluster on 127.0.0.1, from the configs docker compose mounts.

The failover test is the point: while tasks flow into AGENT_TASKS (three replicas), the
stream's leader node is killed (a crash), then later another leader is stopped (an orderly
shutdown). Each time a new leader is elected within seconds, publishing resumes, and the
stopped node catches up once it is back. At the end every acknowledged message is in the
stream, stored once, and all three nodes hold the same copy.

How soon publishing resumes: after an orderly stop the leader hands over at once (well
under a second). After a crash the other nodes first wait out nats-server's Raft election
timeout, 4 to 9 s after the last heartbeat (compiled into nats-server, not configurable);
the publisher then resumes within a tenth of a second of the election.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import agentlab
from agentlab import EmbeddedServer, StreamSpec, find_nats_server
from agentlab.cluster import (
    LEADER_ELECTED,
    ROUTES_SETTLE,
    AckedPublisher,
    LocalCluster,
    NodeConfig,
    config_dir,
    missing_acked,
    node_config_paths,
    parse_conf,
)
from agentlab.errors import NoMessage
from agentlab.org import declare_replicated_streams

ROOT = Path(__file__).resolve().parents[1]
STREAM = "AGENT_TASKS"
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="/proc and PR_SET_PDEATHSIG are Linux-only")


def alive(pid: int) -> bool:
    """True while pid is a live process (a zombie counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    state = re.search(r"^State:\s+(\S)", status, re.M)
    return bool(state) and state.group(1) not in ("Z", "X")


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.02)
    return [p for p in pids if alive(p)]


# ---------------------------------------------------------------------------------------------
# the node config files


def test_the_node_configs_are_the_repository_files_and_nats_server_accepts_them():
    paths = node_config_paths()
    assert config_dir() == ROOT / "deploy" / "nats"
    assert [p.name for p in paths] == ["node-1.conf", "node-2.conf", "node-3.conf"]
    configs = [NodeConfig.read(p) for p in paths]
    assert [c.server_name for c in configs] == ["nats-1", "nats-2", "nats-3"]
    assert {c.cluster_name for c in configs} == {"agentlab"}
    for config in configs:
        assert {host for host, _ in config.route_targets()} == {"nats-1", "nats-2", "nats-3"}
        assert "store_dir" not in config.settings["jetstream"]
        checked = subprocess.run([str(find_nats_server()), "-t", "-c", str(config.path)],
                                 capture_output=True, text=True, timeout=30)
        assert checked.returncode == 0, checked.stderr + checked.stdout


def test_parse_conf_reads_the_nats_config_format_the_files_use():
    text = textwrap.dedent("""\
        # a comment
        server_name = "n1"   // another comment
        port 4222
        http: 127.0.0.1:8222
        debug: false
        jetstream { max_memory_store: 128MB, max_file_store: 1GB }
        cluster {
          name: c
          routes: [nats-route://a:6222, "nats-route://b:6222"
                   nats-route://c:6222]   # mixed separators
        }
        """)
    conf = parse_conf(text)
    assert conf == {"server_name": "n1", "port": 4222, "http": "127.0.0.1:8222", "debug": False,
                    "jetstream": {"max_memory_store": "128MB", "max_file_store": "1GB"},
                    "cluster": {"name": "c", "routes": ["nats-route://a:6222",
                                                        "nats-route://b:6222",
                                                        "nats-route://c:6222"]}}
    with pytest.raises(ValueError, match="line 2: 'include'"):
        parse_conf("port: 1\ninclude ./other.conf\n")
    with pytest.raises(ValueError, match="set twice"):
        parse_conf("port: 1\nport: 2\n")


def test_a_store_dir_in_a_node_config_is_refused_with_the_reason(tmp_path):
    text = (ROOT / "deploy/nats/node-1.conf").read_text()
    bad = tmp_path / "node-1.conf"
    bad.write_text(text.replace("jetstream {", "jetstream {\n  store_dir: /data", 1))
    with pytest.raises(ValueError, match="--store_dir"):
        NodeConfig.read(bad)


# ---------------------------------------------------------------------------------------------
# a running cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with LocalCluster(store_dir=tmp_path_factory.mktemp("cluster")) as running:
        yield running


@linux_only
def test_each_node_runs_its_deploy_file_on_loopback_only(cluster):
    assert cluster.meta_leader() in cluster.names
    for number, config in enumerate(cluster.configs, start=1):
        node = cluster.node(config.server_name)
        argv = Path(f"/proc/{node.pid}/cmdline").read_bytes().decode().split("\0")
        # The node's own config (0600), which includes the deploy file unchanged and closes it.
        closing = Path(argv[argv.index("-c") + 1])
        assert closing == node.config_path and closing.stat().st_mode & 0o077 == 0
        include = closing.read_text().split("include ", 1)[1].splitlines()[0].strip('"')
        assert (closing.parent / include).resolve() == ROOT / "deploy/nats" / f"node-{number}.conf"
        assert not any(cluster.login()["password"] in arg for arg in argv)
        varz = node.varz()
        assert varz["server_name"] == node.name
        assert varz["host"] == "127.0.0.1" and varz["http_host"] == "127.0.0.1"
        assert varz["cluster"]["name"] == "agentlab"
        assert varz["cluster"]["addr"] == "127.0.0.1"
        assert varz["jetstream"]["config"]["max_memory"] == 128 * 1024 * 1024
        assert Path(varz["jetstream"]["config"]["store_dir"]).is_relative_to(cluster.store_dir)
        # Routes to the other two nodes, on their loopback cluster ports.
        routes = node._monitor("routez")["routes"]
        assert {r["remote_name"] for r in routes} == set(cluster.names) - {node.name}


def test_a_client_given_the_url_list_connects_and_fails_over(cluster):
    assert cluster.url.count(",") == 2
    first = cluster.names[0]
    cluster.stop_node(first)
    try:
        with agentlab.Client.open(cluster.url, name="url-list") as client:
            # The first URL is down: the connection went to another node.
            assert str(client.nc.connected_url.port) != cluster.urls[0].rsplit(":", 1)[1]
            sub = client.subscribe("cluster.ping")
            client.publish("cluster.ping", "pong")
            assert sub.next(timeout=2).data == b"pong"
    finally:
        cluster.start_node(first)
    assert cluster.wait_for_meta_leader(timeout=20) in cluster.names


def test_in_a_cluster_a_pull_request_keeps_frequent_idle_heartbeats(cluster, unique):
    """A consumer leader on another node can die without a word to this connection, so
    there a long pull request asks for an idle heartbeat every CLUSTER_IDLE_HEARTBEAT; on a
    server of its own the heartbeat is rarer (agentlab/core/pull.py)."""
    from agentlab import ConsumerSpec
    from agentlab.core.pull import (
        CLUSTER_IDLE_HEARTBEAT,
        IDLE_LIFETIME,
        ContinuousPull,
        alone,
    )

    stream = f"P_{unique}"
    with agentlab.Client.open(cluster.url, name="pull-cluster") as client, \
            agentlab.Client.open(cluster.url, name="pull-watch") as watcher:
        assert not alone(client)
        client.js.declare_stream(StreamSpec(name=stream, subjects=[f"{unique}.>"]))
        client.js.declare_consumer(stream, ConsumerSpec("w", filter_subject=f"{unique}.w"))
        asked = watcher.subscribe(f"$JS.API.CONSUMER.MSG.NEXT.{stream}.w")
        watcher.flush()
        feed = ContinuousPull(client, stream, "w", lambda msg: None, lambda: 1)
        client._bridge.run(feed.astart(), operation="start the feed")
        try:
            body = json.loads(asked.next(timeout=5).data)
            assert (body["expires"], body["idle_heartbeat"]) == (
                IDLE_LIFETIME * 1e9, CLUSTER_IDLE_HEARTBEAT * 1e9), body
        finally:
            client._bridge.run(feed.astop(), operation="stop the feed")


def test_on_a_single_server_the_streams_get_one_replica(unique):
    with EmbeddedServer(name="single") as single, \
            agentlab.Client.open(single.url, name="single") as client:
        names, replicas = declare_replicated_streams(client, 3)
        assert replicas == 1 and STREAM in names
        assert client.js.stream_info(STREAM).config.num_replicas == 1


# ---------------------------------------------------------------------------------------------
# failover


def test_failover_loses_no_acknowledged_task(tmp_path, unique):
    started = time.monotonic()
    with LocalCluster(store_dir=tmp_path / "cluster") as cluster:
        ops = cluster.connect("ops")
        _, replicas = declare_replicated_streams(ops, 3)
        assert replicas == 3
        info = ops.js.stream_info(STREAM)
        assert info.config.num_replicas == 3 and len(info.cluster.replicas) == 2

        publisher = AckedPublisher(cluster.connect("publisher"), f"genbrain.agents.{unique}.tasks",
                                   stream=STREAM, prefix=unique).start()
        rounds = []
        try:
            publisher.wait_for_acks(50, timeout=10)
            for kill in (True, False):  # a crash, then an orderly shutdown
                leader = cluster.wait_for_stream_leader(STREAM)
                stopped_at = time.monotonic()
                cluster.stop_node(leader, kill=kill)
                new_leader = cluster.wait_for_stream_leader(STREAM, timeout=30,
                                                            other_than=leader)
                elected = time.monotonic() - stopped_at
                # Publishing resumes under the new leader.
                publisher.wait_for_acks(len(publisher.acked) + 50, timeout=20)
                resumed = publisher.resumed_after(stopped_at)
                # The stopped node comes back and catches up while tasks keep flowing.
                cluster.start_node(leader)
                back_at = time.monotonic()
                cluster.wait_for_catch_up(leader, STREAM, timeout=30)
                # Caught up means current in the leader's eyes, after the routes settled:
                # stopping the next node sooner can leave the stream unable to take writes.
                assert time.monotonic() - back_at >= ROUTES_SETTLE
                in_charge = cluster.stream_leader(STREAM)
                peers = cluster.stream_detail(in_charge, STREAM)["cluster"]["replicas"]
                assert any(p["name"] == leader and p["current"] for p in peers), peers
                rounds.append((leader, new_leader, kill, elected, resumed))
                assert new_leader != leader
                assert elected < 20, f"no new leader for {elected:.1f} s after stopping {leader}"
                # The publisher follows the election closely: no request timeout to sit out.
                # Under load the new leader may still be replicating the copy it took just
                # before: the resend is then answered 409 "in process" (err_code 10158) and
                # asked again at once until the commit: replication, not a timeout waited out.
                late = [f for f in publisher.failures_since(stopped_at + elected)
                        if "err_code 10158" not in f]
                assert resumed < elected + 1.5 or not late, (kill, elected, resumed, late[-3:])
                if not kill:  # an orderly stop hands the leadership over at once
                    assert resumed < 2.0 or not late, (elected, resumed, late[-3:])
        finally:
            publisher.stop()
        print(f"\n{publisher!r}\nrounds (stopped, new leader, killed, elected s, resumed s): "
              f"{[(a, b, k, round(e, 2), round(r, 2)) for a, b, k, e, r in rounds]}")

        acked = publisher.acked
        assert len(acked) >= 150
        # Every acknowledged task is in the stream, at the sequence its receipt gave...
        assert missing_acked(ops, STREAM, acked) == []
        # ...stored once, however often it was resent during a failover...
        assert len(set(acked.values())) == len(acked)
        assert ops.js.stream_info(STREAM).state.messages == len(acked)
        # ...and all three nodes, the two that were stopped included, hold the same copy.
        last = max(acked.values())
        deadline = time.monotonic() + 20
        while True:
            states = {name: cluster.stream_state(name, STREAM) for name in cluster.names}
            if all(s and s["last_seq"] == last and s["messages"] == len(acked)
                   for s in states.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert all(s and s["last_seq"] == last and s["messages"] == len(acked)
                   for s in states.values()), states
    assert time.monotonic() - started < 90


def _answer_as_stream(client, subject: str, stream: str):
    """A responder that answers publishes on ``subject`` with a stream's receipt."""
    seqs = iter(range(1, 1_000_000))
    return client.serve(subject, lambda msg: {"stream": stream, "seq": next(seqs)})


def test_a_publish_the_old_leader_never_answers_is_sent_again_when_a_new_one_is_elected(
        client, unique):
    subject, stream = f"{unique}.tasks", f"S_{unique}"
    deposed = client.subscribe(subject)  # takes the publish and never answers it
    publisher = AckedPublisher(client, subject, stream=stream, prefix=unique, timeout=30)
    with publisher:
        first = deposed.next(timeout=5)
        assert first.headers["Nats-Msg-Id"] == publisher.msg_id(1)
        # Another stream's election is no reason to send again.
        client.publish(f"{LEADER_ELECTED}.OTHER", {"stream": "OTHER", "leader": "nats-9"})
        with pytest.raises(NoMessage):
            deposed.next(timeout=0.5)
        deposed.unsubscribe()
        _answer_as_stream(client, subject, stream)
        client.publish(f"{LEADER_ELECTED}.{stream}", {"stream": stream, "leader": "nats-2"})
        publisher.wait_for_acks(3, timeout=5)  # not the 30 s the first attempt would wait
    assert publisher.acked[publisher.msg_id(1)] == 1
    assert [f for _, f in publisher.failures] == [
        f"ResendNow: nats-2 was elected leader: {publisher.msg_id(1)} is sent again at once"]


def test_a_publish_whose_connection_is_lost_and_made_again_is_sent_again_at_once(unique):
    subject, stream = f"{unique}.tasks", f"S_{unique}"
    with EmbeddedServer(name="resend") as server, \
            agentlab.Client.open(server.url, name="publisher") as publishing, \
            agentlab.Client.open(server.url, name="deposed") as other:
        deposed = other.subscribe(subject)
        publisher = AckedPublisher(publishing, subject, stream=stream, prefix=unique,
                                   timeout=30)
        with publisher:
            deposed.next(timeout=5)
            deposed.unsubscribe()
            _answer_as_stream(other, subject, stream)
            restarted_at = time.monotonic()
            server.restart()  # same port: both connections come back to it
            publisher.wait_for_acks(3, timeout=10)
        assert publisher.resumed_after(restarted_at) < 5
    assert publisher.acked[publisher.msg_id(1)] == 1
    assert any(f.startswith("ResendNow: the connection was lost and made again")
               for _, f in publisher.failures), publisher.failures


def test_stop_does_not_wait_out_a_publish_in_flight(client, unique):
    subject = f"{unique}.tasks"
    silent = client.subscribe(subject)
    publisher = AckedPublisher(client, subject, stream=f"S_{unique}", timeout=30).start()
    silent.next(timeout=5)
    asked = time.monotonic()
    publisher.stop()
    assert time.monotonic() - asked < 1
    assert "stopped" in repr(publisher) and publisher.failures == []


def test_the_publisher_numbers_routes_and_paces_its_messages_and_times_them(client, unique):
    stream = f"S_{unique}"
    client.js.declare_stream(StreamSpec(name=stream, subjects=[f"{unique}.>"]))
    publisher = AckedPublisher(client, lambda n: f"{unique}.{'even' if n % 2 == 0 else 'odd'}",
                               stream=stream, ids=lambda n: f"task-{n}", count=5, rate=40,
                               payload=lambda n: {"n": n})
    with publisher:
        assert publisher.finished.wait(10)
    assert list(publisher.acked) == [f"task-{n}" for n in range(1, 6)]
    assert list(publisher.acked.values()) == [1, 2, 3, 4, 5]
    assert set(publisher.sent_at) == set(publisher.acked_at) == set(publisher.acked)
    assert all(publisher.sent_at[m] <= publisher.acked_at[m] for m in publisher.acked)
    # On schedule: five at 40 a second take at least 0.1 s from the first to the last.
    first, last = publisher.sent_at["task-1"], publisher.sent_at["task-5"]
    assert last - first >= 0.09
    stored = client.js.read(stream, timeout=5)
    assert [m.subject.rsplit(".", 1)[1] for m in stored] == ["odd", "even", "odd", "even",
                                                             "odd"]
    assert [m.headers["Nats-Msg-Id"] for m in stored] == list(publisher.acked)
    with pytest.raises(ValueError, match="rate=0"):
        AckedPublisher(client, unique, rate=0)


def test_a_connection_pings_as_often_as_the_environment_says(lab, monkeypatch):
    from agentlab.core.connecting import PING_INTERVAL_ENV

    monkeypatch.setenv(PING_INTERVAL_ENV, "0.5")
    with agentlab.Client.open(lab.url, name="pinging") as client:
        assert client.nc.options["ping_interval"] == 0.5
        assert client.nc.options["max_outstanding_pings"] == 2
    monkeypatch.setenv(PING_INTERVAL_ENV, "often")
    with pytest.raises(ValueError, match=f"{PING_INTERVAL_ENV}='often'"):
        agentlab.Client.open(lab.url, name="pinging")


def test_missing_acked_names_a_message_that_is_gone_and_only_that_one(client, unique):
    client.js.declare_stream(StreamSpec(name=f"S_{unique}", subjects=[f"{unique}.>"]))
    acked = {}
    for n in range(3):
        receipt = client.js.publish(f"{unique}.tasks", {"n": n}, msg_id=f"task-{n}")
        acked[f"task-{n}"] = receipt.seq
    assert missing_acked(client, f"S_{unique}", acked) == []
    client._bridge.run(client.nc.jetstream().delete_msg(f"S_{unique}", acked["task-1"]),
                       operation="delete_msg")
    wrong_place = {**acked, "task-2": acked["task-0"]}  # stored, but not at that sequence
    assert missing_acked(client, f"S_{unique}", wrong_place) == ["task-1", "task-2"]


# ---------------------------------------------------------------------------------------------
# agentlab.start(cluster=3), and no orphans


def _python(code: str, **kwargs) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "AGENTLAB_NATS_URL"}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


@linux_only
def test_start_cluster_3_declares_the_reference_streams_with_three_replicas():
    proc = _python("""
        import json, agentlab
        lab = agentlab.start(cluster=3)
        infos = {i.config.name: i.config.num_replicas for i in lab.js.streams()}
        report = dict(url=lab.url, replicas=lab.replicas, streams=infos, embedded=lab.embedded,
                      meta=lab.cluster.meta_leader(), nodes=lab.cluster.names,
                      pids=[n.pid for n in lab.cluster.nodes.values()], repr=repr(lab))
        print(json.dumps(report), flush=True)
        lab.close()
        print(json.dumps([n.is_running for n in lab.cluster.nodes.values()]))
    """)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    first, second = out.strip().splitlines()
    report = json.loads(first)
    assert report["url"].count("nats://127.0.0.1:") == 3
    assert report["replicas"] == 3 and report["embedded"] is True
    assert report["meta"] in report["nodes"] == ["nats-1", "nats-2", "nats-3"]
    assert report["streams"] and set(report["streams"].values()) == {3}
    assert {"AGENT_TASKS", "AGENT_EVENTS", "DEAD_LETTERS"} <= set(report["streams"])
    assert "local cluster of 3 nodes" in report["repr"]
    assert json.loads(second) == [False, False, False]
    assert wait_gone(report["pids"], 5) == []


@linux_only
def test_the_nodes_die_with_the_process_that_started_them(tmp_path):
    # The store is the test's: a SIGKILLed owner cannot delete a temporary one.
    proc = _python(f"""
        import json, sys, time
        from agentlab.cluster import LocalCluster
        cluster = LocalCluster(store_dir={str(tmp_path / "cluster")!r}).start()
        print(json.dumps([n.pid for n in cluster.nodes.values()]), flush=True)
        time.sleep(60)
    """)
    try:
        pids = json.loads(proc.stdout.readline())
        assert len(pids) == 3 and all(alive(p) for p in pids)
        proc.send_signal(signal.SIGKILL)  # no atexit, no finally: only PDEATHSIG is left
        proc.wait(10)
        assert wait_gone(pids, 5) == [], "a cluster node outlived its owner"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
