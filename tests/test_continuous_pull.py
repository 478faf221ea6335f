"""ContinuousPull against a real server: the facts it relies on, and what an agent gets from it.

An agent keeps pull requests for as many tasks as it has room for outstanding, instead of one
fetch(1) per task. These tests check that nothing is handed to an agent that stopped, that a
task already on its way during stop() is still taken, that requests the server lost are sent
again, and that one request serves many tasks.
"""

from __future__ import annotations

import logging
import time

import pytest

from agentlab import Client, EmbeddedServer, Subjects
from agentlab.core.pull import LOST_AFTER, REQUEST_LIFETIME, ContinuousPull
from agentlab.org import TASK_STREAM, Agent, Task, TaskCompleted, declare_reference_streams
from helpers import wait_for

S = Subjects()
pytestmark = pytest.mark.timeout(60)


def consumer(client: Client, role: str):
    return client.js.consumer_info(TASK_STREAM, role)


def test_a_stopped_agent_leaves_no_request_behind(org_lab, agents, names, connect):
    """After stop() the server holds no request of ours: a task delegated then waits in the
    stream for the next start, instead of going to a request nobody reads (where it would
    sit until ack_wait ran out). It holds with a wildcard tap on every inbox, as the Observer
    has: to the server that is someone listening, so unsubscribing cancels nothing."""
    tap = connect("inbox-tap").subscribe("_INBOX.>")
    cto = agents(names.cto, names.org, ack_wait=30).start()
    wait_for(lambda: consumer(org_lab, names.cto).num_waiting >= 1, 3, "a pull request")
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


def test_a_task_sent_while_the_feed_stops_is_still_taken(org_lab, agents, names):
    """astop() stops asking, then waits for the requests still outstanding to be served or to
    expire. A task the server sends meanwhile still reaches the handler: not lost, and not
    nak'ed (which would spend one of its max_deliver attempts)."""
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
    """A server that loses our requests (here: the consumer is deleted and made again, as a
    consumer leader change does) says nothing; the agent notices the silence and asks again."""
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
