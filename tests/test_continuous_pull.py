"""ContinuousPull against a real server: the facts it relies on, and what an agent gets from it.

An agent keeps pull requests for as many tasks as it has room for outstanding, instead of one
fetch(1) per task. These tests check that nothing is handed to an agent that stopped (with a
wildcard tap on every inbox and without), that a task already on its way during stop() is
still taken, that requests the server lost are sent again (said by a 409, or by missing
heartbeats), that one request serves many tasks, and that idle feeds cost one request per
request lifetime and one timer per loop, however many there are. Long requests ask for an
idle heartbeat every 5 s on a server of its own, every 2 s in a cluster.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import logging
import time

import pytest

from agentlab import (
    Client,
    EmbeddedServer,
    JetStreamTimeout,
    JetStreamUnavailable,
    LeaderElection,
    NoResponders,
    Subjects,
)
from agentlab.core.pull import (
    CLUSTER_IDLE_HEARTBEAT,
    IDLE_HEARTBEAT,
    IDLE_LIFETIME,
    LOST_AFTER,
    REQUEST_LIFETIME,
    ContinuousPull,
    alone,
)
from agentlab.core.streamdata import API_TIMEOUT
from agentlab.org import TASK_STREAM, Agent, Task, TaskCompleted, declare_reference_streams
from agentlab.org.streams import LEASE_BUCKET, LEDGER_BUCKET
from helpers import lead_on, wait_for

S = Subjects()
BUCKET_STREAMS = (f"KV_{LEDGER_BUCKET}", f"KV_{LEASE_BUCKET}")  # the ledger, the leases
pytestmark = pytest.mark.timeout(60)


def consumer(client: Client, role: str):
    return client.js.consumer_info(TASK_STREAM, role)


def test_a_stopped_agent_leaves_no_request_behind(org_lab, agents, names, connect):
    """After stop() the server holds no request of ours: a task delegated then waits in the
    stream for the next start, instead of going to a request nobody reads (where it would
    sit until ack_wait ran out). It holds with a wildcard tap on every inbox, as the Observer
    has: to the server that is someone listening, so unsubscribing cancels nothing; the feed
    finds the tap and keeps its requests short."""
    tap = connect("inbox-tap").subscribe("_INBOX.>")
    cto = agents(names.cto, names.org, ack_wait=30).start()
    wait_for(lambda: consumer(org_lab, names.cto).num_waiting >= 1, 3, "a pull request")
    feed = cto._runner.feed
    assert feed._expires - time.monotonic() <= REQUEST_LIFETIME  # short: the tap is seen
    t0 = time.monotonic()
    cto.stop()
    assert time.monotonic() - t0 < REQUEST_LIFETIME + LOST_AFTER + 0.5
    assert consumer(org_lab, names.cto).num_waiting == 0

    agents(names.ceo, names.org).delegate(names.cto, "While nobody works")
    time.sleep(0.2)
    info = consumer(org_lab, names.cto)
    assert (info.num_pending, info.num_ack_pending) == (1, 0)

    done = org_lab.subscribe(S.tasks_completed(names.org))
    cto.start()
    assert done.next(timeout=3).decode(TaskCompleted).title == "While nobody works"
    assert tap.received > 0  # the tap did see the requests' traffic


def test_without_a_tap_a_long_request_ends_with_stop(org_lab, agents, names):
    """Nobody else listens on the inboxes: the idle request lives IDLE_LIFETIME, and stop()
    does not wait it out. It unsubscribes; the server, which looks for a listener before each
    delivery, drops the request, and a task delegated then waits in the stream."""
    cto = agents(names.cto, names.org, ack_wait=30).start()
    wait_for(lambda: consumer(org_lab, names.cto).num_waiting >= 1, 3, "a pull request")
    assert cto._runner.feed._expires - time.monotonic() > IDLE_LIFETIME / 2
    t0 = time.monotonic()
    cto.stop()
    assert time.monotonic() - t0 < IDLE_LIFETIME / 4  # not the request's lifetime
    assert consumer(org_lab, names.cto).num_waiting == 0

    agents(names.ceo, names.org).delegate(names.cto, "While nobody works")
    time.sleep(0.2)
    info = consumer(org_lab, names.cto)
    assert (info.num_pending, info.num_ack_pending) == (1, 0)
    done = org_lab.subscribe(S.tasks_completed(names.org))
    cto.start()
    assert done.next(timeout=3).decode(TaskCompleted).title == "While nobody works"


def test_a_task_sent_while_the_feed_stops_is_still_taken(org_lab, agents, names, connect):
    """With a tap on the inboxes, astop() stops asking, then waits for the requests still
    outstanding to be served or to expire. A task the server sends meanwhile still reaches
    the handler: not lost, and not nak'ed (which would spend one of its max_deliver
    attempts)."""
    connect("inbox-tap").subscribe("_INBOX.>")
    agents(names.cto, names.org, ack_wait=30).start().stop()  # declares the consumer
    taken: list = []
    feed = ContinuousPull(org_lab, TASK_STREAM, names.cto, taken.append, lambda: 5,
                          request_lifetime=2.0)  # time enough to delegate meanwhile
    org_lab._bridge.run(feed.astart(), operation="start the feed")
    stopping = org_lab._bridge.submit(feed.astop())  # the request is still outstanding
    agents(names.ceo, names.org).delegate(names.cto, "Just in time")
    wait_for(lambda: taken, 3, "the task sent while the feed stops")
    stopping.result(timeout=3)

    [raw] = taken
    assert Task.model_validate_json(raw.data).title == "Just in time"
    info = consumer(org_lab, names.cto)
    assert (info.num_pending, info.num_ack_pending, info.num_waiting) == (0, 1, 0)
    org_lab.reply(raw.reply, b"+ACK")
    wait_for(lambda: consumer(org_lab, names.cto).num_ack_pending == 0, 3, "the ack")


def test_an_idle_feed_asks_once_per_lifetime_and_hears_heartbeats(org_lab, agents, names,
                                                                    connect):
    """Counted, not timed: over 5 idle seconds an untapped agent sends its one request (no
    more JetStream API requests), asking the server, one of its own, for IDLE_LIFETIME and
    an idle heartbeat every IDLE_HEARTBEAT. Once a tap listens on the inboxes, the same
    agent asks every REQUEST_LIFETIME."""
    watcher = connect("api-count")
    api = watcher.subscribe(f"$JS.API.CONSUMER.MSG.NEXT.{TASK_STREAM}.{names.cto}")
    watcher.flush()
    cto = agents(names.cto, names.org, ack_wait=30).start()
    assert alone(cto.client)
    time.sleep(5)
    # One request; a second at most if the first raced the consumer's creation on a loaded
    # machine. Asking every REQUEST_LIFETIME would have made ten.
    assert api.received <= 2, api.received
    asked = json.loads(api.next(timeout=1).data)
    assert (asked["expires"], asked["idle_heartbeat"]) == (IDLE_LIFETIME * 1e9,
                                                           IDLE_HEARTBEAT * 1e9), asked

    # The tap is found within TAP_CHECK; the long request sent before it runs out (it cannot
    # be withdrawn), and from then on every request is short.
    connect("inbox-tap").subscribe("_INBOX.>")
    feed = cto._runner.feed
    wait_for(lambda: feed._expires - time.monotonic() <= REQUEST_LIFETIME, IDLE_LIFETIME + 3,
             "short requests")
    before = api.received
    time.sleep(3)
    assert api.received - before >= 3 / REQUEST_LIFETIME / 2, api.received - before


def test_the_server_sends_idle_heartbeats_while_it_holds_a_request(org_lab, agents, names,
                                                                    connect):
    """What the silence check relies on: while the server holds a long request it sends a
    status 100 on the request's inbox every idle_heartbeat, and each one counts as heard."""
    agents(names.cto, names.org, ack_wait=30).start().stop()  # declares the consumer
    feed = ContinuousPull(org_lab, TASK_STREAM, names.cto, lambda msg: None, lambda: 5,
                          idle_lifetime=6.0, idle_heartbeat=0.5)
    watcher = connect("heartbeat-watch")
    org_lab._bridge.run(feed.astart(), operation="start the feed")
    try:
        beats = watcher.subscribe(feed._inbox)  # an exact subscription: no tap
        time.sleep(2)
        statuses = [m.headers.get("Status") for m in _drain(beats)]
        assert statuses.count("100") >= 2, statuses
        assert time.monotonic() - feed._heard < 0.5 + LOST_AFTER + 1.0
        assert feed.requests == 1
    finally:
        org_lab._bridge.run(feed.astop(), operation="stop the feed")


def test_a_lifetime_without_a_heartbeat_is_refused(org_lab):
    for given in ({"idle_lifetime": 6.0}, {"idle_heartbeat": 1.0}):
        with pytest.raises(ValueError, match="give both, or neither"):
            ContinuousPull(org_lab, TASK_STREAM, "cto", lambda msg: None, lambda: 5, **given)
    with pytest.raises(ValueError, match="at most half the request's lifetime"):
        ContinuousPull(org_lab, TASK_STREAM, "cto", lambda msg: None, lambda: 5,
                       idle_lifetime=2.0, idle_heartbeat=1.5)


def _drain(sub):
    out = []
    while True:
        try:
            out.append(sub.next(timeout=0.05))
        except Exception:
            return out


def test_one_request_serves_many_tasks(org_lab, agents, names):
    """One task in flight at a time, 30 in a row: a request asks for as many as there is room
    for (max_ack_pending 5), so far fewer requests than tasks go out."""
    done = org_lab.subscribe(S.tasks_completed(names.org))
    cto = agents(names.cto, names.org, max_ack_pending=5).start()
    ceo = agents(names.ceo, names.org)
    t0 = time.monotonic()
    for i in range(30):
        ceo.delegate(names.cto, f"one of 30 ({i})")
        done.next(timeout=3)
    # One refill per ~3 tasks, plus one each time an idle request expires.
    expiries = (time.monotonic() - t0) / REQUEST_LIFETIME + 1
    requests = cto._runner.feed.requests
    assert requests <= 30 / 3 + expiries + 1, requests


def test_requests_lost_with_the_consumer_are_sent_again(org_lab, agents, names):
    """The consumer is deleted and made again: the server ends our requests with "409
    Consumer Deleted" (a new consumer leader says "409 Leadership Change"); the agent asks
    again on the watchdog's next tick, at the new consumer."""
    done = org_lab.subscribe(S.tasks_completed(names.org))
    cto = agents(names.cto, names.org, ack_wait=30).start()
    wait_for(lambda: consumer(org_lab, names.cto).num_waiting >= 1, 3, "a pull request")
    org_lab.js.delete_consumer(TASK_STREAM, names.cto)
    org_lab.js.declare_consumer(TASK_STREAM, cto.consumer_spec)
    assert consumer(org_lab, names.cto).num_waiting == 0

    t0 = time.monotonic()
    agents(names.ceo, names.org).delegate(names.cto, "After the loss")
    assert done.next(timeout=5).decode(TaskCompleted).title == "After the loss"
    assert time.monotonic() - t0 < REQUEST_LIFETIME + 2 * LOST_AFTER + 1.0


def test_requests_are_sent_again_after_the_server_restarts(tmp_path):
    """A restarted server has forgotten every pull request; the agent asks again as soon as
    its connection is back, and the task published after the restart is done."""
    with EmbeddedServer(name="pull-restart", store_dir=tmp_path / "store") as server:
        admin = Client.open(server.url, name="admin", reconnect_wait=0.05)
        worker = Client.open(server.url, name="worker", reconnect_wait=0.05)
        try:
            declare_reference_streams(admin)
            cto = Agent(worker, "cto", "acme", ack_wait=30, heartbeat_interval=1).start()
            server.kill()
            server.restart()
            wait_for(lambda: worker.nc.is_connected and admin.nc.is_connected, 10,
                     "both reconnects")
            done = admin.subscribe(S.tasks_completed("acme"))
            task = Task(org="acme", role="cto", title="After the restart", requested_by="ceo")
            admin.js.publish(S.tasks("cto"), task, msg_id=task.id)
            assert done.next(timeout=5).decode(TaskCompleted).task_id == task.id
            cto.stop()
        finally:
            worker.close()
            admin.close()


def test_a_refused_request_is_explained_once_and_asked_again(org_lab, caplog):
    """No consumer answers (here it does not exist; in a cluster, during an election): the
    feed says so once, in words, and keeps asking until one does."""
    feed = ContinuousPull(org_lab, TASK_STREAM, "nobody-here", lambda msg: None, lambda: 5)
    with caplog.at_level(logging.WARNING, logger="agentlab"):
        org_lab._bridge.run(feed.astart(), operation="start the feed")
        wait_for(lambda: feed.requests >= 4, 3, "requests asked again")
        org_lab._bridge.run(feed.astop(), operation="stop the feed")
    [warning] = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert "nobody answers for this consumer: it does not exist, or it has no leader" in warning
    assert f"{TASK_STREAM}/nobody-here" in warning


def test_a_request_lost_without_a_word_is_noticed_by_its_missing_heartbeats(org_lab, agents,
                                                                             names):
    """A request the server dropped silently (here: it looked for a listener while the feed's
    subscription was briefly gone) sends no more heartbeats; within two heartbeats and
    LOST_AFTER the feed asks again, and a task then reaches it."""
    agents(names.cto, names.org, ack_wait=30).start().stop()  # declares the consumer
    taken: list = []
    feed = ContinuousPull(org_lab, TASK_STREAM, names.cto, taken.append, lambda: 5,
                          idle_lifetime=6.0, idle_heartbeat=0.5)
    bridge = org_lab._bridge
    bridge.run(feed.astart(), operation="start the feed")
    assert feed._expires - time.monotonic() > 3  # a long request, with heartbeats
    wait_for(lambda: consumer(org_lab, names.cto).num_waiting == 1, 3, "the request")
    asked = feed.requests

    async def lose_the_request() -> None:
        nc = org_lab.nc
        await feed._sub.unsubscribe()
        await nc.flush()
        info = await org_lab.js.aconsumer_info(TASK_STREAM, names.cto)  # drops it: nobody
        assert info.num_waiting == 0
        feed._sub = await nc.subscribe(feed._inbox, cb=feed._deliver)
        await nc.flush()

    bridge.run(lose_the_request(), operation="lose the request")
    wait_for(lambda: feed.requests > asked, 2 * 0.5 + LOST_AFTER + 2.0, "a request again")
    agents(names.ceo, names.org).delegate(names.cto, "After the silence")
    wait_for(lambda: taken, 3, "the task")
    org_lab.reply(taken[0].reply, b"+ACK")
    bridge.run(feed.astop(), operation="stop the feed")


def test_idle_feeds_share_one_timer(org_lab, connect, names):
    """Twenty idle agents on one connection add no timer of their own to the loop: one
    watchdog for every feed, one heartbeat timer for every agent of an interval."""
    shared = connect("twenty")
    loop = shared._bridge.loop

    def timers() -> int:
        async def count() -> int:
            await asyncio.sleep(0.3)  # let the starts' own timeouts run out
            return sum(1 for handle in loop._scheduled if not handle.cancelled())
        return shared._bridge.run(count(), operation="count timers")

    first = Agent(shared, f"{names.cto}-0", names.org, heartbeat_interval=1.0).start()
    baseline = timers()
    more = [Agent(shared, f"{names.cto}-{i}", names.org, heartbeat_interval=1.0).start()
            for i in range(1, 21)]
    try:
        # A timer each would add twenty; the loop's other users (pings, other tests' clients
        # on this bridge) may add a few of their own meanwhile.
        assert timers() - baseline < 10, (baseline, timers())
    finally:
        for agent in [first, *more]:
            agent.stop()


@pytest.mark.timeout(240)
def test_a_new_consumer_leader_is_asked_again_at_once(tmp_path):
    """Long requests do not make failover slow: on a three-node cluster the consumer's new
    leader ends the requests it inherited ("409 Leadership Change") and the agent asks it
    again on the watchdog's next tick, well inside one request's lifetime. Then the node that
    led the consumer is SIGKILLed: the task sent after the election reaches the handler as
    soon, and is done (once the ledger's own stream has a leader again)."""
    from agentlab.cluster import LocalCluster
    from agentlab.org import declare_replicated_streams

    with LocalCluster(store_dir=tmp_path / "cluster") as cluster:
        ops = cluster.connect("ops")
        declare_replicated_streams(ops, 3)
        done = ops.subscribe(S.tasks_completed("acme"))
        handed: dict[str, float] = {}

        def work(task: Task, ctx) -> dict:
            handed.setdefault(task.title, time.monotonic())
            return {}

        cto = Agent(cluster.connect("worker"), "cto", "acme", work, ack_wait=30,
                    heartbeat_interval=1).start()
        feed = cto._runner.feed
        try:
            # The agent made its buckets with as many copies as the tasks have: a node's loss
            # costs each an election, not its only copy.
            assert [ops.js.stream_info(b).config.num_replicas for b in BUCKET_STREAMS] == [3, 3]
            wait_for(lambda: consumer(ops, "cto").num_waiting >= 1, 10, "a pull request")
            assert feed._expires - time.monotonic() > IDLE_LIFETIME / 2  # a long one
            for kill in (False, True):
                leader = consumer(ops, "cto").cluster.leader
                elections: list[concurrent.futures.Future[float]] = []
                if kill:
                    # The killed node leads the ledger and the leases too, so the task also
                    # waits for their own elections (its lease, its ledger read or record).
                    for bucket in BUCKET_STREAMS:
                        lead_on(ops, leader, bucket)
                    elections = [_when_led_by_another(cluster, bucket, leader)
                                 for bucket in BUCKET_STREAMS]
                asked, t0 = feed.requests, time.monotonic()
                if kill:
                    cluster.stop_node(leader, kill=True)
                else:
                    ops.request(f"$JS.API.CONSUMER.LEADER.STEPDOWN.{TASK_STREAM}.cto", b"",
                                timeout=5)
                wait_for(functools.partial(_led_by_another, ops, leader), 30,
                         "a new consumer leader")
                elected = time.monotonic() - t0
                wait_for(functools.partial(_asked_since, feed, asked),
                         elected + 2 * CLUSTER_IDLE_HEARTBEAT + 2,
                         "a request to the new leader")
                title = "After a kill" if kill else "After a stepdown"
                task = Task(org="acme", role="cto", title=title, requested_by="ceo")
                # The stream may have lost its leader too (it elects on its own, 4-9 s): the
                # task counts from when the stream stored it.
                stored = _publish_until_stored(ops, task)
                ready = max([stored, t0 + elected, *(e.result(timeout=60) for e in elections)])
                wait_for(functools.partial(handed.__contains__, title),
                         ready - time.monotonic() + 2 * CLUSTER_IDLE_HEARTBEAT + LOST_AFTER
                         + API_TIMEOUT + 10, "the task at the handler")
                took = handed[title] - ready
                # Announced by the server when the record is stored: the agent kept trying
                # while the buckets elected. (`ops` made the publish above, so it was
                # connected and subscribed again before the task existed.)
                while done.next(timeout=60).decode(TaskCompleted).task_id != task.id:
                    pass
                # A request sent during a bucket's election goes unanswered and is asked
                # again after its timeout (API_TIMEOUT).
                allowed = 2 * CLUSTER_IDLE_HEARTBEAT + LOST_AFTER + 3 + (API_TIMEOUT if kill
                                                                         else 0)
                assert took < allowed, (kill, elected, took)
                assert cto.stats["errors"] == 0, cto.stats  # no attempt spent on the outage
        finally:
            cto.stop()


def _when_led_by_another(cluster, stream: str, node: str) -> concurrent.futures.Future[float]:
    """When (monotonic) ``stream`` has a leader other than ``node`` again, watched from the
    nodes' monitoring ports in a thread of its own."""
    watch = concurrent.futures.ThreadPoolExecutor(1)

    def elected() -> float:
        cluster.wait_for_stream_leader(stream, timeout=60, other_than=node)
        return time.monotonic()

    try:
        return watch.submit(elected)
    finally:
        watch.shutdown(wait=False)


def _publish_until_stored(client: Client, task: Task, within: float = 30.0) -> float:
    """Publish until the stream acknowledges (same msg id: stored once); when it did."""
    deadline = time.monotonic() + within
    while True:
        try:
            client.js.publish(S.tasks("cto"), task, msg_id=task.id, timeout=2)
            return time.monotonic()
        except (LeaderElection, JetStreamTimeout, JetStreamUnavailable, NoResponders):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _led_by_another(client: Client, leader: str) -> bool:
    try:
        return consumer(client, "cto").cluster.leader not in (None, leader)
    except Exception:  # mid-election
        return False


def _asked_since(feed: ContinuousPull, asked: int) -> bool:
    return feed.requests > asked


def _tap_seen(feed: ContinuousPull) -> bool:
    return feed._taps is not None and feed._taps.tapped is True


def test_a_long_request_a_new_tap_catches_hands_its_tasks_over(org_lab, agents, names,
                                                               connect):
    """The window a long request leaves: a tap on the inboxes starts while an idle agent's
    10 s request is outstanding, and the agent stops. The request cannot be withdrawn and
    the tap would take its tasks, so the stopped feed lingers on its subscription until the
    request ends, handing what arrives to the next agent of the role (here: the one started
    after it); stop() itself does not wait."""
    done = org_lab.subscribe(S.tasks_completed(names.org))
    first = agents(names.cto, names.org, ack_wait=30).start()
    feed = first._runner.feed
    assert feed._expires - time.monotonic() > IDLE_LIFETIME / 2
    connect("inbox-tap").subscribe("_INBOX.>")
    wait_for(lambda: _tap_seen(feed), 5, "the watchdog's probe finding the tap")
    t0 = time.monotonic()
    first.stop()
    assert time.monotonic() - t0 < REQUEST_LIFETIME + LOST_AFTER + 1.0
    assert feed.lingering is not None and not feed.lingering.done()

    agents(names.cto, names.org, ack_wait=30).start()  # its requests are short: the tap
    agents(names.ceo, names.org).delegate(names.cto, "Handed over")
    event = done.next(timeout=5).decode(TaskCompleted)
    assert (event.title, event.deliveries) == ("Handed over", 1)
    wait_for(lambda: feed.lingering.done(), IDLE_LIFETIME + 2 * LOST_AFTER, "the linger's end")


def test_with_nobody_to_take_it_a_lingering_request_hands_a_task_back(org_lab, agents,
                                                                      names, connect):
    """As above, with no agent of the role left: what the lingering request gets goes back
    to the server with a nak delayed until the request has expired (one delivery attempt
    spent), so the next agent does it, instead of a tap holding it for ack_wait (30 s)."""
    done = org_lab.subscribe(S.tasks_completed(names.org))
    first = agents(names.cto, names.org, ack_wait=30).start()
    feed = first._runner.feed
    connect("inbox-tap").subscribe("_INBOX.>")
    wait_for(lambda: _tap_seen(feed), 5, "the watchdog's probe finding the tap")
    first.stop()
    expires = feed._expires
    agents(names.ceo, names.org).delegate(names.cto, "Handed back")
    wait_for(lambda: consumer(org_lab, names.cto).num_redelivered == 1 or
             consumer(org_lab, names.cto).num_ack_pending == 1, 3, "the zombie's delivery")
    wait_for(lambda: feed.lingering.done(), IDLE_LIFETIME + 2 * LOST_AFTER, "the linger's end")
    agents(names.cto, names.org, ack_wait=30).start()
    event = done.next(timeout=IDLE_LIFETIME).decode(TaskCompleted)
    assert (event.title, event.deliveries) == ("Handed back", 2)
    assert time.monotonic() < expires + 2 * LOST_AFTER + 5  # not ack_wait after the delivery
