"""Reports (nats CLI columns) and the HealthMonitor's metrics, scaling and health signals,
against a real server of this module's own (``org_server``)."""

from __future__ import annotations

import time

import pytest
from rich.console import Console

from agentlab import ConsumerSpec, Subjects
from agentlab.org import (
    Agent,
    AgentHealth,
    HealthMonitor,
    Heartbeat,
    ScalingSignal,
    SystemMetrics,
    Task,
    TaskCompleted,
)
from agentlab.reports.report import (
    AGENTLAB_CONSUMER_COLUMNS,
    CONSUMER_REPORT_COLUMNS,
    STREAM_REPORT_COLUMNS,
    ConsumerReport,
    StreamReport,
    consumer_report,
    format_bytes,
    format_duration,
    stream_report,
)

S = Subjects()
TASKS = "AGENT_TASKS"

# Copied from natscli (github.com/nats-io/natscli): cli/stream_command.go renderStreams and
# cli/consumer_command.go reportAction, table.AddHeaders(...).
NATS_STREAM_REPORT = ("Stream", "Storage", "Placement", "Consumers", "Messages", "Bytes",
                      "Lost", "Deleted", "API Level", "Replicas")
NATS_CONSUMER_REPORT = ("Consumer", "Mode", "Ack Policy", "Ack Wait", "Ack Pending",
                        "Redelivered", "Unprocessed", "Ack Floor", "API Level", "Cluster")


def task(role: str, n: int) -> Task:
    return Task(org="acme", role=role, title=f"task {n}", requested_by="test")


def queue(client, role: str, **spec) -> object:
    """A durable pull consumer named after ``role`` on AGENT_TASKS, as an Agent makes."""
    client.js.declare_consumer(TASKS, ConsumerSpec(role, filter_subject=S.tasks(role), **spec))
    return client.js.pull(TASKS, role)


def publish(client, role: str, count: int) -> None:
    for n in range(count):
        client.js.publish(S.tasks(role), task(role, n))


def wait_for(predicate, timeout: float = 5.0, step: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return predicate()


def headers(table) -> list[str]:
    return [str(column.header) for column in table.columns]


# -- reports ----------------------------------------------------------------------------
def test_report_columns_are_the_nats_cli_headers(org_lab):
    assert STREAM_REPORT_COLUMNS == NATS_STREAM_REPORT
    assert CONSUMER_REPORT_COLUMNS == NATS_CONSUMER_REPORT
    streams = stream_report(org_lab)
    assert headers(streams.to_table()) == list(NATS_STREAM_REPORT)
    assert streams.to_table().title == "Stream Report"
    consumers = consumer_report(org_lab, TASKS, extras=False)
    assert headers(consumers.to_table()) == list(NATS_CONSUMER_REPORT)
    with_extras = consumer_report(org_lab, TASKS)
    assert headers(with_extras.to_table()) == list(NATS_CONSUMER_REPORT +
                                                    AGENTLAB_CONSUMER_COLUMNS)
    page = streams._repr_html_()
    assert all(f">{name}</th>" in page for name in NATS_STREAM_REPORT)
    assert all(f">{name}</th>" in consumers._repr_html_() for name in NATS_CONSUMER_REPORT)


def test_formatting_follows_the_nats_cli():
    assert [format_bytes(n) for n in (0, 9, 512, 1536, 20480, 5 * 2**20)] == \
        ["0 B", "9 B", "512 B", "1.5 KiB", "20 KiB", "5.0 MiB"]
    assert [format_duration(s) for s in (0.25, 4.2, 30, 300, 3723, None)] == \
        ["250ms", "4.20s", "30.00s", "5m0s", "1h2m3s", ""]


def test_report_values_match_stream_and_consumer_info(org_lab, unique):
    role = f"{unique}-worker"
    pull = queue(org_lab, role, ack_wait=30)
    publish(org_lab, role, 6)
    got = pull.fetch(batch=3, timeout=2)
    assert len(got) == 3
    got[0].ack()
    got[1].ack()                # the third stays delivered but unacknowledged
    org_lab.flush()
    wait_for(lambda: org_lab.js.consumer_info(TASKS, role).ack_floor.stream_seq > 0)

    consumers = consumer_report(org_lab, TASKS)
    streams = stream_report(org_lab)
    info = org_lab.js.consumer_info(TASKS, role)
    sinfo = org_lab.js.stream_info(TASKS)

    assert isinstance(consumers, ConsumerReport) and isinstance(streams, StreamReport)
    row = consumers.row(role)
    assert (row.ack_pending, row.unprocessed, row.redelivered) == \
        (info.num_ack_pending, info.num_pending, info.num_redelivered) == (1, 3, 0)
    assert row.ack_floor == info.ack_floor.stream_seq > 0
    assert row.depth == 4
    assert (row.mode, row.ack_policy, row.ack_wait) == ("Pull", "Explicit", 30.0)
    assert row.filter_subjects == (S.tasks(role),)
    cells = dict(zip(CONSUMER_REPORT_COLUMNS, row.cells(), strict=True))
    assert cells["Consumer"] == role and cells["Ack Wait"] == "30.00s"
    assert cells["Ack Pending"] == "1" and cells["Ack Floor"] == str(info.ack_floor.stream_seq)
    share = min(100, 3 * 100 // sinfo.state.messages)
    assert cells["Unprocessed"] == f"3 / {share}%"

    srow = streams.row(TASKS)
    assert (srow.messages, srow.bytes, srow.consumers) == \
        (sinfo.state.messages, sinfo.state.bytes, sinfo.state.consumer_count)
    assert srow.storage == "File" and srow.retention == "workqueue"
    scells = dict(zip(STREAM_REPORT_COLUMNS, srow.cells(), strict=True))
    assert scells["Stream"] == TASKS and scells["Messages"] == f"{sinfo.state.messages:,}"
    assert scells["Bytes"] == format_bytes(sinfo.state.bytes)
    assert set(streams.names) >= {"AGENT_TASKS", "AGENT_EVENTS", "DEAD_LETTERS"}
    # Plain text of the rendered table carries the names (what `agentlab status` prints).
    console = Console(width=250, record=True, file=open("/dev/null", "w"))
    console.print(consumers)
    assert role in console.export_text()


def test_oldest_unprocessed_age_grows_while_messages_sit_unacked(org_lab, unique):
    role = f"{unique}-slow"
    pull = queue(org_lab, role)
    assert consumer_report(org_lab, TASKS).row(role).oldest_unprocessed_age is None
    publish(org_lab, role, 2)
    published = time.time()
    first = consumer_report(org_lab, TASKS).row(role)
    time.sleep(0.4)
    later = consumer_report(org_lab, TASKS).row(role)
    assert first.oldest_unprocessed_age is not None
    assert later.oldest_unprocessed_age - first.oldest_unprocessed_age >= 0.3
    assert later.oldest_unprocessed_age <= time.time() - published + 0.2
    assert later.oldest_unprocessed_seq == first.oldest_unprocessed_seq

    # Delivered but unacknowledged still counts as unprocessed: the age keeps growing.
    msgs = pull.fetch(batch=2, timeout=2)
    assert len(msgs) == 2
    delivered = consumer_report(org_lab, TASKS).row(role)
    assert delivered.unprocessed == 0 and delivered.ack_pending == 2
    assert delivered.oldest_unprocessed_age > later.oldest_unprocessed_age
    # Ack the oldest: the age restarts from the second message; ack both: nothing left.
    msgs[0].ack()
    org_lab.flush()
    nxt = wait_for(lambda: (r := consumer_report(org_lab, TASKS).row(role)).ack_pending == 1
                   and r)
    assert nxt.oldest_unprocessed_seq == first.oldest_unprocessed_seq + 1
    msgs[1].ack()
    org_lab.flush()
    done = wait_for(lambda: (r := consumer_report(org_lab, TASKS).row(role)).depth == 0 and r)
    assert done.oldest_unprocessed_age is None


# -- the monitor --------------------------------------------------------------------------
@pytest.fixture
def monitor(org_lab):
    started = []

    def make(**options) -> HealthMonitor:
        options.setdefault("interval", 0.2)
        options.setdefault("streams", [TASKS])
        mon = HealthMonitor(org_lab, **options).start()
        started.append(mon)
        return mon

    yield make
    for mon in started:
        mon.stop()


def test_metrics_are_published_with_pending_counts(org_lab, connect, unique, monitor):
    role = f"{unique}-metrics"
    queue(org_lab, role)
    publish(org_lab, role, 3)
    watcher = connect("metrics-watcher")
    sub = watcher.subscribe(S.system_metrics())
    mon = monitor()

    def ours():
        for msg in sub.messages(timeout=0.3):
            metrics = msg.decode(SystemMetrics)
            found = metrics.queue(role, TASKS)
            if found is not None:
                return found
        return None

    found = wait_for(ours, timeout=5)
    assert found is not None, "no metrics for the consumer on org.system.metrics"
    assert (found.pending, found.ack_pending, found.depth) == (3, 0, 3)
    assert found.redelivered == 0 and found.attached == 0
    assert found.oldest_unprocessed_age is not None and found.oldest_unprocessed_age >= 0
    snapshot = mon.snapshot()
    assert snapshot is not None and snapshot.queue(role).pending == 3
    assert mon.errors == 0


def test_scaling_signal_once_up_and_once_down(org_lab, connect, unique, monitor):
    role = f"{unique}-scale"
    pull = queue(org_lab, role)
    watcher = connect("scaling-watcher")
    sub = watcher.subscribe(S.system_scaling())
    mon = monitor(scale_threshold=5)

    def recommendations():
        return [s.recommendation for s in list(mon.signals) if s.consumer == role]

    publish(org_lab, role, 3)        # below the threshold: no signal
    time.sleep(0.5)
    assert recommendations() == []
    publish(org_lab, role, 5)        # depth 8 >= 5
    assert wait_for(lambda: recommendations() == ["scale_up"], timeout=3)
    time.sleep(0.6)                  # three more ticks above the threshold: still one signal
    assert recommendations() == ["scale_up"]
    msgs = pull.fetch(batch=8, timeout=2)
    assert len(msgs) == 8
    for msg in msgs:
        msg.ack()
    org_lab.flush()
    assert wait_for(lambda: recommendations() == ["scale_up", "scale_down"], timeout=3)
    time.sleep(0.6)                  # three more ticks below it: no repeat

    signals = [m.decode(ScalingSignal) for m in sub.messages(timeout=0.3)]
    ours = [s for s in signals if s.consumer == role]
    assert [s.recommendation for s in ours] == ["scale_up", "scale_down"], ours
    up, down = ours
    assert up.stream == TASKS and up.threshold == 5 and up.depth >= 5
    assert down.depth < 5
    assert recommendations() == ["scale_up", "scale_down"]


def test_scale_to_zero_when_idle_with_workers_attached(org_lab, connect, unique, monitor):
    role = f"{unique}-idle"
    agent = Agent(connect(role), role=role, heartbeat_interval=0.2).start()
    try:
        watcher = connect("idle-watcher")
        sub = watcher.subscribe(S.system_scaling())
        monitor(heartbeat_interval=0.2, idle_after=0.5)
        got = wait_for(lambda: [s for m in sub.messages(timeout=0.2)
                                if (s := m.decode(ScalingSignal)).consumer == role], timeout=4)
        assert got and got[0].recommendation == "scale_to_zero"
        assert got[0].depth == 0 and got[0].instances == 1
    finally:
        agent.stop()


def health_event(sub, agent: Agent, status: str) -> AgentHealth | None:
    """The first of ``agent``'s health events with ``status`` among those that came."""
    for msg in sub.messages(timeout=0.2):
        health = msg.decode(AgentHealth)
        if health.instance == agent.instance and health.status == status:
            return health
    return None


def test_stopped_agent_is_reported_down(org_lab, connect, unique, monitor):
    role = f"{unique}-beat"
    agent = Agent(connect(role), role=role, heartbeat_interval=0.2,
                  handler=lambda t, ctx: {"ok": True}).start()
    watcher = connect("health-watcher")
    sub = watcher.subscribe(S.system_health())
    mon = monitor(heartbeat_interval=0.2)     # down after 3 x 0.2 s of silence
    assert mon.down_after == pytest.approx(0.6)

    def event(status):
        return health_event(sub, agent, status)

    up = wait_for(lambda: event("up"), timeout=3)
    assert up is not None and up.status == "up" and up.role == role
    # It works while up: the metrics count it as an attached worker of its queue.
    agent.delegate(role, "one task")
    assert wait_for(lambda: agent.stats["processed"] == 1, timeout=3)
    snap = wait_for(lambda: (s := mon.snapshot()) and (q := s.queue(role)) and
                    q.instances == 1 and s, timeout=3)
    assert snap and snap.queue(role).attached >= 1
    assert wait_for(lambda: any(a.instance == agent.instance and a.processed == 1
                                for a in mon.agents()), timeout=2)  # a beat told it

    agent.stop()                    # its last beat says "leaving": down at once
    stopped = time.monotonic()
    down = wait_for(lambda: event("down"), timeout=3)
    elapsed = time.monotonic() - stopped
    assert down is not None and down.status == "down", "no 'down' on org.system.health"
    assert elapsed < 0.5 and down.reason == "stopped", (elapsed, down.reason)
    assert down.silent_for < 0.5 and down.processed == 1
    assert {a.instance: a.status for a in mon.agents()}[agent.instance] == "down"
    assert wait_for(lambda: (s := mon.snapshot()) and s.agent(agent.instance)
                    and s.agent(agent.instance).status == "down", timeout=2)


def test_killed_agent_is_reported_down_after_its_silence(org_lab, connect, unique, monitor):
    role = f"{unique}-crash"
    agent = Agent(connect(role), role=role, heartbeat_interval=0.2).start()
    watcher = connect("crash-watcher")
    sub = watcher.subscribe(S.system_health())
    monitor(heartbeat_interval=0.2)     # down after 3 x 0.2 s of silence

    def event(status):
        return health_event(sub, agent, status)

    assert wait_for(lambda: event("up"), timeout=3)
    killed = time.monotonic()
    agent.kill()                        # a crash sends no last beat: only silence tells
    down = wait_for(lambda: event("down"), timeout=3)
    elapsed = time.monotonic() - killed
    assert down is not None and "no heartbeat for" in down.reason, down
    assert 0.4 <= elapsed <= 2.5, elapsed  # down_after 0.6 s + ticks
    assert down.silent_for > 0.6


def test_agents_sharing_a_connection_are_each_seen_from_one_heartbeat_timer(org_lab, unique,
                                                                           monitor):
    """Five agents of an organisation on one shared connection: one socket, one heartbeat
    timer for all of them, and still one beat per instance, so the monitor has each one up.
    One scaled away is down at once; the others stay up and keep working on the connection,
    which closes with the organisation."""
    from agentlab.org import Organisation
    from agentlab.org.agent import _Heartbeats

    roles = {f"{unique}-r{i}": (lambda t, ctx: {"ok": True}) for i in range(5)}
    mon = monitor(heartbeat_interval=0.2)
    org = Organisation(org_lab, f"org{unique}", roles=roles, heartbeat_interval=0.2,
                       shared_connection=True).start()
    try:
        agents = [a for running in org.agents.values() for a in running]
        assert len(agents) == 5 and len({a.client for a in agents}) == 1
        shared = agents[0].client
        timers = {id(a._heart) for a in agents}
        assert len(timers) == 1 and isinstance(agents[0]._heart, _Heartbeats)
        assert wait_for(lambda: {a.instance for a in mon.agents() if a.status == "up"}
                        >= {a.instance for a in agents}, timeout=5)

        gone, *kept = agents
        org.scale(gone.role, 0)
        assert not shared.is_closed
        assert wait_for(lambda: {a.instance: a.status for a in mon.agents()}.get(gone.instance)
                        == "down", timeout=3)
        time.sleep(3 * 0.2 + 0.3)  # past down_after: the others still beat
        status = {a.instance: a.status for a in mon.agents()}
        assert all(status[a.instance] == "up" for a in kept), status
        done = org_lab.subscribe(S.tasks_completed(f"org{unique}"))
        org.assign("Still working", to=kept[0].role)
        assert done.next(timeout=3).decode(TaskCompleted).role == kept[0].role
    finally:
        org.stop()
    assert shared.is_closed


def test_agents_of_one_process_beat_in_one_message_each_seen_up_then_down(org_lab, connect,
                                                                         unique, monitor):
    """Five agents of this process, each on a connection of its own (one login): every
    interval their five beats travel in one Heartbeats message on agents.heartbeats, none
    alone on agents.<role>.heartbeat, and the monitor has each instance up from it. One that
    stops is down at once ("stopped", from its leaving beat), one killed is down after its
    silence, and the others stay up."""
    from agentlab.org import Heartbeats
    from agentlab.org.agent import _Heartbeats

    watcher = connect("beats-watcher")
    batched, alone = watcher.subscribe(S.heartbeats()), watcher.subscribe(S.heartbeat("*"))
    health = watcher.subscribe(S.system_health())
    watcher.flush()
    mon = monitor(heartbeat_interval=0.2)
    roles = [f"{unique}-b{i}" for i in range(5)]
    agents = [Agent(connect(role), role=role, heartbeat_interval=0.2).start() for role in roles]
    ours = {a.instance for a in agents}
    try:
        assert len({a.client for a in agents}) == 5 and len({id(a._heart) for a in agents}) == 1
        assert wait_for(lambda: {a.instance for a in mon.agents() if a.status == "up"} >= ours)

        # Counted over whole intervals once all five beat: one message carries all five.
        _ = batched.messages(timeout=0.3)
        timer = agents[0]._heart
        assert isinstance(timer, _Heartbeats)
        sent = timer.messages
        time.sleep(1.0)  # five intervals of 0.2 s
        messages = [m.decode(Heartbeats) for m in batched.messages(timeout=0.3)]
        carrying = [{b.instance for b in m.beats} & ours for m in messages]
        carrying = [c for c in carrying if c]
        assert 3 <= len(carrying) <= 8, len(carrying)  # ~5 messages, not ~25
        assert all(c == ours for c in carrying), carrying
        assert timer.messages - sent <= len(carrying) + 2  # one per interval for this login
        assert all(m.interval == 0.2 for m in messages)
        assert not [m for m in alone.messages(timeout=0.1)
                    if m.decode(Heartbeat).instance in ours]

        stopped, killed, *kept = agents
        stopped.stop()
        down = wait_for(lambda: health_event(health, stopped, "down"), timeout=3)
        assert down is not None and down.reason == "stopped", down
        killed.kill()
        down = wait_for(lambda: health_event(health, killed, "down"), timeout=5)
        assert down is not None and "no heartbeat for" in down.reason, down
        status = {a.instance: a.status for a in mon.agents()}
        assert all(status[a.instance] == "up" for a in kept), status
    finally:
        for agent in agents:
            if agent.is_running:
                agent.stop()


def test_an_agent_beating_alone_is_seen_too(org_lab, connect, unique, monitor):
    """An agent of another kind (another language, a browser tab) sends its Heartbeat alone
    on agents.<role>.heartbeat: the monitor has it up, and down at its leaving beat."""
    mon = monitor(heartbeat_interval=0.2)
    role = f"{unique}-alone"
    other = connect("other-kind")
    beat = Heartbeat(role=role, org="acme", instance=f"{role}-js", processed=2)
    other.publish(S.heartbeat(role), beat)
    seen = wait_for(lambda: next((a for a in mon.agents() if a.instance == beat.instance), None))
    assert seen is not None and seen.status == "up" and seen.processed == 2
    other.publish(S.heartbeat(role), beat.model_copy(update={"leaving": True}))
    assert wait_for(lambda: {a.instance: a.status for a in mon.agents()}[beat.instance]
                    == "down")


def test_a_bad_message_of_heartbeats_is_counted_and_ignored(org_lab, connect, monitor):
    mon = monitor(heartbeat_interval=0.2)
    connect("bad-beats").publish(S.heartbeats(), {"beats": [], "interval": 1})
    assert wait_for(lambda: mon.bad_heartbeats >= 1)
    assert mon.is_running
