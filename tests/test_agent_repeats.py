"""A task handed out again as a *first* delivery after a server restart runs only once.

A SIGKILLed nats-server can come back without its consumer's record that it delivered a
task and got the ack: the task comes again with num_delivered 1. The Agent's default
ledger pre-check ("auto") reads TASK_LEDGER for any task stored before its connection's
latest (re)connect, and keeps the fast path (no ledger read) for tasks stored after it.

A completed run's lease (org/leases.py) stays for lease_ttl, so a repeat that soon finds
it and reads the ledger whatever the pre-check says; the pre-check cases run without
leases, to show what the pre-check alone does.

The server's forgetting is reproduced exactly here: AGENT_TASKS keeps acked tasks
(limits retention, on this test's own server) and the role's consumer is deleted after the
restart, so the recreated consumer hands the already-handled task out again as a first
delivery, which is what a restarted server that lost the consumer's state does.
"""

from __future__ import annotations

from collections import Counter

import pytest

from agentlab import Client, EmbeddedServer, StreamSpec, Subjects
from agentlab.org import TASK_STREAM, Agent, Task, TaskCompleted
from agentlab.org import workloop as agent_module  # where CLOCK_SKEW_ALLOWANCE is read
from helpers import wait_for

S = Subjects()
ROLE, ORG = "cto", "acme"
pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def server(tmp_path):
    with EmbeddedServer(name="repeats", store_dir=tmp_path / "store", sync_always=True) as srv:
        yield srv


def task(title: str) -> Task:
    return Task(org=ORG, role=ROLE, title=title, requested_by="ceo")


@pytest.mark.parametrize("after_restart", ["same connection, reconnected", "new connection",
                                           "ledger read on redeliveries only",
                                           "redeliveries only, first run's lease still there"])
def test_a_first_delivery_repeated_after_a_restart_does_not_run_twice(server, monkeypatch,
                                                                        after_restart):
    # The server runs on this machine: no clock skew to allow for, so the fast path for a
    # task published right after the reconnect can be checked without waiting.
    monkeypatch.setattr(agent_module, "CLOCK_SKEW_ALLOWANCE", 0.0)
    runs: Counter[str] = Counter()

    def handler(t: Task, ctx) -> dict:
        runs[t.id] += 1
        return {"run": runs[t.id]}

    admin = Client.open(server.url, name="admin", reconnect_wait=0.05)
    worker = Client.open(server.url, name="worker", reconnect_wait=0.05)
    opened = [admin, worker]
    try:
        admin.js.declare_stream(StreamSpec(TASK_STREAM, [S.tasks("*")]))  # keeps acked tasks
        done = admin.subscribe(S.tasks_completed(ORG))
        lease = after_restart == "redeliveries only, first run's lease still there"
        # On file, so that the restart keeps the consumer and deleting it is the loss (in
        # memory, the default, the restart itself forgets it: tests/test_consumer_state.py).
        first = Agent(worker, ROLE, ORG, handler, lease=lease, consumer_state="file").start()
        old = task("handled before the restart")
        admin.js.publish(S.tasks(ROLE), old, msg_id=old.id)
        assert done.next(timeout=5).decode(TaskCompleted).task_id == old.id
        first.stop()

        server.kill()
        server.restart()
        wait_for(lambda: worker.nc.is_connected and admin.nc.is_connected, 10, "reconnects")
        admin.js.delete_consumer(TASK_STREAM, ROLE)  # the consumer's state, lost
        precheck: bool | str = "auto"
        if after_restart == "new connection":
            worker = Client.open(server.url, name="worker-2")
            opened.append(worker)
        elif after_restart.startswith(("ledger read on redeliveries", "redeliveries only")):
            precheck = False
        second = Agent(worker, ROLE, ORG, handler, ledger_precheck=precheck,
                       lease=lease, consumer_state="file").start()
        events = {old.id: done.next(timeout=5).decode(TaskCompleted)}
        # Published once the agent has handled a task since the reconnect: it notices a
        # reconnect at its next task, and counts from then on.
        fresh = task("published after the restart")
        admin.js.publish(S.tasks(ROLE), fresh, msg_id=fresh.id)
        events[fresh.id] = done.next(timeout=5).decode(TaskCompleted)
        second.stop()
        assert events[old.id].deliveries == 1  # a first delivery, not a redelivery
        assert runs[fresh.id] == 1
        if lease:  # the first run's lease sent the repeat to the ledger
            assert runs[old.id] == 1 and second.stats["acked_from_ledger"] == 1
            return
        if precheck is False:  # what "auto" did before it compared stream timestamps
            assert runs[old.id] == 2 and second.stats["ledger_prechecks"] == 0
            return
        assert runs[old.id] == 1
        assert second.stats["duplicates_suppressed"] == second.stats["acked_from_ledger"] == 1
        assert events[old.id].result == {"run": 1}  # the recorded result, announced again
        # Only the task stored before the (re)connect cost a ledger read.
        assert second.stats["ledger_prechecks"] == 1
        assert second.stats["processed"] == 1
    finally:
        for client in opened:
            client.close()


def test_tasks_stored_before_the_agent_connected_are_checked_and_later_ones_are_not(
        server, monkeypatch):
    """A fresh process cannot know what a server that restarted before it connected
    forgot, so its backlog is checked; what is published after it connected is not."""
    monkeypatch.setattr(agent_module, "CLOCK_SKEW_ALLOWANCE", 0.0)
    admin = Client.open(server.url, name="admin")
    try:
        admin.js.declare_stream(StreamSpec(TASK_STREAM, [S.tasks("*")], retention="workqueue"))
        done = admin.subscribe(S.tasks_completed(ORG))
        backlog = [task(f"waiting {i}") for i in range(3)]
        for t in backlog:
            admin.js.publish(S.tasks(ROLE), t, msg_id=t.id)
        worker = Client.open(server.url, name="worker")
        try:
            agent = Agent(worker, ROLE, ORG).start()
            later = [task(f"later {i}") for i in range(4)]
            for t in later:
                admin.js.publish(S.tasks(ROLE), t, msg_id=t.id)
            seen = {done.next(timeout=5).decode(TaskCompleted).task_id for _ in range(7)}
            agent.stop()
        finally:
            worker.close()
        assert seen == {t.id for t in backlog + later}
        assert agent.stats["ledger_prechecks"] == 3 and agent.stats["processed"] == 7
    finally:
        admin.close()
