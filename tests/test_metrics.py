"""Prometheus metrics (agentlab.metrics, `agentlab metrics`) scraped over real HTTP from a real
server, parsed with prometheus-client's own parser; and `agentlab status`'s monitoring link.

The acceptance test: the CTO consumer's pending count rises while the CTO is scaled to zero
and falls after it scales up. Every Organisation here uses the same ack_wait/max_deliver:
orgs on one server share a role's durable consumer ("cto"), whose settings the last
declaration wins.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

import agentlab
from agentlab import ConsumerSpec, EmbeddedServer, StreamSpec
from agentlab.cluster import LocalCluster
from agentlab.metrics import (
    METRICS,
    MetricsExporter,
    MetricsPortUnavailable,
    collect_text,
    find_monitoring,
    monitoring_line,
)
from agentlab.org import Organisation
from helpers import credentials_env, wait_for

CLI = [sys.executable, "-m", "agentlab.programs.cli"]
TASKS = ("stream", "AGENT_TASKS")
pytestmark = pytest.mark.timeout(90)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# -- helpers -------------------------------------------------------------------------------
def parse(text: str) -> Samples:
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return parse(response.read().decode())


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def with_name(samples: Samples, name: str) -> list[dict[str, str]]:
    return [dict(labels) for (sample, labels), _ in samples.items() if sample == name]


def pending(samples: Samples, consumer: str = "cto") -> float | None:
    return value(samples, "agentlab_consumer_pending_messages", stream="AGENT_TASKS",
                 consumer=consumer)


def org_of(org_lab, name: str) -> Organisation:
    return Organisation(org_lab, name, ack_wait=1.0, max_deliver=2,
                        heartbeat_interval=0.2).start()


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items()
            if k not in ("AGENTLAB_NATS_URL", "AGENTLAB_MONITOR_URL")}
    for url in (a for a in args if a.startswith("nats://")):
        base.update(credentials_env(url))  # the login of the (closed) server named
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60,
                          env=base | {"PYTHONUNBUFFERED": "1"} | (env or {}))


@pytest.fixture
def exporter(org_lab, connect):
    """A MetricsExporter on a free port, on a connection of its own (stopped after)."""
    with MetricsExporter(connect("metrics"), port=0) as running:
        yield running


# -- the acceptance test -------------------------------------------------------------------
def test_cto_pending_rises_while_scaled_to_zero_and_falls_after_it_scales_up(
        org_lab, exporter, unique):
    org = org_of(org_lab, f"org{unique}")
    try:
        assert exporter.url is not None and exporter.url.endswith("/metrics")
        wait_for(lambda: pending(scrape(exporter.url)) == 0, 10, "an empty cto queue")
        org.scale("cto", 0)
        up = wait_for(lambda: (s := scrape(exporter.url)) and not [
            a for a in with_name(s, "agentlab_agent_up") if a["org"] == org.org
            and a["role"] == "cto"] and s, 10, "the CTO gone from agentlab_agent_up")
        # Agents up by role and instance: the CEO and the CFO still are.
        roles = {a["role"]: a["instance"] for a in with_name(up, "agentlab_agent_up")
                 if a["org"] == org.org}
        assert set(roles) == {"ceo", "cfo"} and roles["ceo"].startswith("ceo-")

        for n in range(3):
            org.assign(f"Review design {n}", to="cto")
        waiting = wait_for(lambda: (s := scrape(exporter.url)) and pending(s) == 3 and s, 10,
                           "3 tasks pending for the CTO")
        labels = dict(stream="AGENT_TASKS", consumer="cto")
        assert value(waiting, "agentlab_consumer_ack_pending_messages", **labels) == 0
        time.sleep(1.1)  # past the scrape cache: the oldest task has visibly waited
        waiting = scrape(exporter.url)
        assert value(waiting, "agentlab_consumer_oldest_unprocessed_age_seconds",
                     **labels) >= 1.0
        assert value(waiting, "agentlab_stream_messages", stream="AGENT_TASKS") >= 3
        assert value(waiting, "agentlab_nats_up") == 1.0

        org.scale("cto", 1)
        done = wait_for(lambda: (s := scrape(exporter.url)) and pending(s) == 0 and value(
            s, "agentlab_consumer_ack_pending_messages", **labels) == 0 and value(
            s, "agentlab_handler_duration_seconds_count", org=org.org, role="cto") == 3 and s,
            15, "the CTO's queue worked off")
        assert value(done, "agentlab_consumer_oldest_unprocessed_age_seconds", **labels) == 0
        [cto] = [a for a in with_name(done, "agentlab_agent_up")
                 if a["org"] == org.org and a["role"] == "cto"]
        assert value(done, "agentlab_tasks_processed_total", **cto) == 3
        assert value(done, "agentlab_tasks_failed_total", **cto) == 0
        assert value(done, "agentlab_tasks_in_flight", **cto) == 0
        # The reference CTO answers in milliseconds: every observation in the 1 s bucket.
        assert value(done, "agentlab_handler_duration_seconds_bucket", org=org.org,
                     role="cto", le="1.0") == 3
        assert value(done, "agentlab_handler_duration_seconds_sum", org=org.org,
                     role="cto") < 3
        # Durable consumers only: the exporter's own dead-letter feed is not a series.
        assert {c["stream"] for c in with_name(done, "agentlab_consumer_pending_messages")
                } <= {"AGENT_TASKS", "TOOL_REQUESTS", "TOOL_RESULTS", "MEETINGS"}
    finally:
        org.stop()


def test_every_metric_has_a_help_and_the_prometheus_naming(exporter):
    text = exporter.text()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    for name, spec in METRICS.items():
        assert name.startswith("agentlab_")
        assert families[name].documentation == spec.help and len(spec.help) > 30
        assert families[name].type == spec.kind
    assert families["agentlab_handler_duration_seconds"].type == "histogram"
    assert "agentlab_dead_letters_total" in text and "agentlab_tasks_processed_total" in text


# -- dead letters --------------------------------------------------------------------------
def test_a_dead_letter_is_counted_by_source_stream_consumer_and_reason(org_lab, exporter,
                                                                       unique):
    labels = dict(stream="AGENT_TASKS", consumer="cto", reason="max_deliveries")
    before = value(scrape(exporter.url), "agentlab_dead_letters_total", **labels) or 0
    org = org_of(org_lab, f"dl{unique}")
    try:
        org.assign("Migrate the billing database", to="cto", details={"always_fail": True})
        def counted() -> Samples | None:
            s = scrape(exporter.url)
            # The letter is counted as it arrives; the agents are read once a second.
            ctos = [a for a in with_name(s, "agentlab_agent_up")
                    if a["org"] == org.org and a["role"] == "cto"]
            ok = value(s, "agentlab_dead_letters_total", **labels) == before + 1 and ctos
            return s if ok and value(s, "agentlab_tasks_failed_total", **ctos[0]) else None

        after = wait_for(counted, 15, "the dead letter counted")
        [cto] = [a for a in with_name(after, "agentlab_agent_up")
                 if a["org"] == org.org and a["role"] == "cto"]
        assert value(after, "agentlab_tasks_failed_total", **cto) == 2  # max_deliver=2
        assert value(after, "agentlab_tasks_processed_total", **cto) == 0
        assert value(after, "agentlab_stream_messages", stream="DEAD_LETTERS") >= 1
    finally:
        org.stop()
    # A new exporter counts the letters stored before it started (one replay, then it
    # follows): the same count, without reading every letter on each scrape.
    assert value(parse(collect_text(org_lab)), "agentlab_dead_letters_total",
                 **labels) == before + 1


# -- the exporter --------------------------------------------------------------------------
def test_concurrent_scrapes_share_one_read_of_the_server(exporter):
    time.sleep(1.1)  # nothing cached
    reads = []
    original = exporter.collector._aread

    async def counted():
        reads.append(1)
        return await original()

    exporter.collector._aread = counted
    results: list[Samples] = []
    threads = [threading.Thread(target=lambda: results.append(scrape(exporter.url)))
               for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert len(results) == 5 and len(reads) == 1
    assert all(value(r, "agentlab_nats_up") == 1.0 for r in results)


def test_a_server_that_goes_away_reads_as_nats_up_0_then_1_when_it_is_back(tmp_path):
    with EmbeddedServer(name="metrics-outage", store_dir=tmp_path / "store") as server, \
            agentlab.Client.open(server.url, name="metrics") as client, \
            MetricsExporter(client, port=None, cache_seconds=0, read_timeout=1.0,
                            discovery_timeout=0.1) as exporter:
        client.js.declare_stream(StreamSpec("OUTAGE", ["outage.>"]))
        assert value(parse(exporter.text()), "agentlab_nats_up") == 1.0
        server.stop()
        started = time.monotonic()
        down = parse(exporter.text())
        assert time.monotonic() - started < 5  # bounded by read_timeout, not the 15 s lists
        assert value(down, "agentlab_nats_up") == 0.0
        assert not with_name(down, "agentlab_stream_messages")  # no stale numbers
        server.restart()
        wait_for(lambda: value(parse(exporter.text()), "agentlab_stream_messages",
                               stream="OUTAGE") == 0, 15, "the exporter reading again")


def test_a_port_in_use_names_the_port_and_the_fix(org_lab, connect):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        exporter = MetricsExporter(connect("metrics-busy"), port=port)
        with pytest.raises(MetricsPortUnavailable) as caught:
            exporter.start()
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message and "--port" in message and "port=0" in message
    assert not exporter.is_running and exporter.url is None


def test_without_prometheus_client_the_error_says_what_to_install(org_server):
    code = ("import sys; sys.modules['prometheus_client'] = None\n"
            "import agentlab.metrics.monitoring  # the status link needs no extra\n"
            "from agentlab.programs.cli import main\n"
            f"sys.exit(main(['metrics', '--url', {org_server.url!r}]))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2, result.stderr
    message = " ".join(result.stderr.split())
    assert "pip install 'agentlab-nats[metrics]'" in message
    assert "Traceback" not in result.stderr


# -- the command ---------------------------------------------------------------------------
def test_agentlab_metrics_serves_until_sigterm(org_lab, org_server):
    env = {k: v for k, v in os.environ.items() if k != "AGENTLAB_NATS_URL"}
    proc = subprocess.Popen([*CLI, "metrics", "--port", "0", "--url", org_server.url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env | {"PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
                            | credentials_env(org_server.url))
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        while line and "/metrics" not in line:
            line = proc.stdout.readline()
        assert "Serving Prometheus metrics of" in line, proc.stderr.read() if proc.stderr else ""
        url = line[line.index("http://"):].split()[0]
        samples = scrape(url)
        assert value(samples, "agentlab_nats_up") == 1.0
        assert value(samples, "agentlab_stream_messages", stream="DEAD_LETTERS") is not None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_agentlab_metrics_without_a_url_says_how_to_get_one():
    result = run_cli("metrics", "--port", "0")
    assert result.returncode == 2 and result.stdout == ""
    message = " ".join(result.stderr.split())
    assert "agentlab server" in message and "AGENTLAB_NATS_URL" in message
    assert "--url" in message and "Traceback" not in result.stderr


# -- agentlab status: the server's monitoring endpoint -------------------------------------
@pytest.fixture(scope="module")
def monitored():
    """A server with its monitoring endpoint on (agentlab's are off unless asked for)."""
    with EmbeddedServer(name="monitored", monitor=True) as server:
        yield server


def test_status_links_the_servers_monitoring_endpoint(monitored):
    given = run_cli("status", "--url", monitored.url, "--monitor-url", monitored.monitor_url)
    assert given.returncode == 0, given.stderr
    assert f"Monitoring: {monitored.monitor_url} (/varz /jsz /connz)" in given.stdout
    from_env = run_cli("status", "--url", monitored.url,
                       env={"AGENTLAB_MONITOR_URL": monitored.monitor_url + "/varz"})
    assert f"Monitoring: {monitored.monitor_url} (/varz /jsz /connz)" in from_env.stdout


def test_status_says_when_there_is_no_monitoring_endpoint(org_lab, org_server):
    # The embedded server's monitoring port is random: neither 8222 nor port + 4000 is it
    # (and whatever answers there is another server, which is not shown as this one's).
    result = run_cli("status", "--url", org_server.url)
    assert result.returncode == 0, result.stderr
    line = " ".join(result.stdout[result.stdout.index("Monitoring:"):].split())
    assert line.startswith("Monitoring: none found (tried http://127.0.0.1:8222")
    assert "-m PORT" in line and "--monitor-url" in line and "AGENTLAB_MONITOR_URL" in line
    assert "agentlab server --monitor" in line and "start(monitor=True)" in line


def test_a_lab_without_monitoring_says_it_is_off(lab):
    assert lab.monitor_url is None
    assert monitoring_line(lab) == "Monitoring: off (start(monitor=True))"


def test_find_monitoring_checks_which_server_answers(monkeypatch, monitored):
    import agentlab.lab

    monkeypatch.delenv("AGENTLAB_NATS_URL", raising=False)
    monkeypatch.setattr(agentlab.lab, "_current", None)  # leave the session's lab running
    lab = agentlab.start(fresh=True, monitor=True, name="monitored-lab")
    try:
        with agentlab.Client.open(monitored.url, name="monitoring") as client:
            found = find_monitoring(client, monitored.monitor_url)
            assert found is not None and found.ours and found.server_name == "monitored"
            # Another server's endpoint, named explicitly, is shown as another server's.
            other = monitoring_line(client, lab.monitor_url)
            assert f"answers for another server ({lab.server.name})" in other
        # A lab's embedded server started with monitor=True knows its own endpoint.
        assert find_monitoring(lab) is not None and find_monitoring(lab).ours
    finally:
        lab.close()


# -- a cluster: pending comes from the leader ----------------------------------------------
def test_in_a_cluster_pending_is_the_leaders_even_through_a_follower(tmp_path, unique):
    stream, subject = unique.upper(), f"{unique}.tasks"
    with LocalCluster(store_dir=tmp_path / "cluster") as cluster:
        with cluster.connect("setup") as setup:
            setup.js.declare_stream(StreamSpec(stream, [f"{unique}.>"], replicas=3))
            setup.js.declare_consumer(stream, ConsumerSpec("worker", filter_subject=subject))
            for n in range(10):
                setup.js.publish(subject, {"n": n})
            leader = setup.js.consumer_info(stream, "worker").cluster.leader
        follower = next(name for name in cluster.names if name != leader)
        with agentlab.Client.open(cluster.node(follower).url, name="metrics") as client:
            samples = parse(collect_text(client))
        labels = dict(stream=stream, consumer="worker")
        assert value(samples, "agentlab_consumer_pending_messages", **labels) == 10
        assert value(samples, "agentlab_stream_messages", stream=stream) == 10

        def jsz_pending(node: str) -> int | None:
            jsz = cluster.node(node)._monitor("jsz", consumers=True)
            for account in jsz.get("account_details", []):
                for detail in account.get("stream_detail", []):
                    for consumer in detail.get("consumer_detail") or []:
                        if detail["name"] == stream and consumer["name"] == "worker":
                            return consumer.get("num_pending")
            return None

        # The leader's own page agrees; a follower's may not (nats-server 2.x reports 0
        # there): the exporter never reads it.
        assert jsz_pending(leader) == 10, {n: jsz_pending(n) for n in cluster.names}
