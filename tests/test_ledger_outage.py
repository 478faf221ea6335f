"""A ledger that does not answer costs a task no delivery attempt.

An agent reads the ledger before some runs and records each task's effect there before it
acks the task (org/ledger.py, org/workloop.py). When the ledger's stream does not answer
(its node restarting, an election), the agent keeps the delivery and asks again until it
answers, for up to the lease's TTL (without a lease: the ack wait), instead of nak'ing it:
each nak would spend one of the task's ``max_deliver`` attempts on the outage, three go in
seconds, and the task would then wait undelivered for a dead-letter office, its effect
unrecorded however often its handler ran.

A ledger of one copy on a three-node cluster is how these tests make the ledger alone stop
answering: its node is SIGKILLed, while the tasks, their consumer and the leases (three
copies each) are led elsewhere and the agent is connected to the two other nodes.
"""

from __future__ import annotations

import time

import pytest

from agentlab import Client, Subjects
from agentlab.cluster import LocalCluster
from agentlab.org import (
    LEASE_BUCKET,
    TASK_STREAM,
    Agent,
    Task,
    TaskCompleted,
    TaskLeases,
    TaskLedger,
    declare_replicated_streams,
)
from agentlab.org.streams import LEDGER_BUCKET
from agentlab.org.workloop import CLOCK_SKEW_ALLOWANCE
from helpers import lead_on, wait_for

S = Subjects()


@pytest.mark.timeout(180)
@pytest.mark.parametrize(("unanswered", "lease"), [
    ("the record", False), ("the read before the run", False), ("the record", True)])
def test_a_task_waiting_for_its_ledger_is_done_on_its_first_delivery(tmp_path, unanswered,
                                                                     lease):
    """The ledger's node is killed before the task arrives, and started again once the
    agent has asked the ledger (the record after the handler, or the read before it) and got
    no answer. The completion is then announced from delivery 1, the handler run once."""
    with LocalCluster(store_dir=tmp_path / "cluster") as cluster:
        ops = cluster.connect("ops")
        declare_replicated_streams(ops, 3)
        ledger = TaskLedger.declare(ops, replicas=1)
        lost = ops.js.stream_info(f"KV_{LEDGER_BUCKET}").cluster.leader
        others = [node for node in cluster.nodes.values() if node.name != lost]
        assert lost is not None and len(others) == 2
        runs: list[int] = []

        def work(task: Task, ctx) -> dict:
            runs.append(ctx.deliveries)
            return {"done": task.title}

        # Connected to the two other nodes only: the node's loss does not move the agent.
        worker = Client.open(",".join(node.url for node in others), name="worker",
                             **cluster.login())
        watcher = Client.open(others[1].url, name="watcher", **cluster.login())
        try:
            cto = Agent(worker, "cto", "acme", work, ack_wait=30, heartbeat_interval=1,
                        lease=lease, ledger_precheck=unanswered != "the record")
            # Led elsewhere before the agent pulls: a leader change it saw would make it
            # read the ledger before running the next task, which the record case avoids.
            ops.js.declare_consumer(TASK_STREAM, cto.consumer_spec)
            TaskLeases.declare(ops)  # as many copies as the tasks
            for stream, name in ((TASK_STREAM, None), (TASK_STREAM, "cto"),
                                 (f"KV_{LEASE_BUCKET}", None)):
                lead_on(ops, others[0].name, stream, name)
            cto.start()
            wait_for(lambda: ops.js.consumer_info(TASK_STREAM, "cto").num_waiting >= 1, 10,
                     "a pull request")
            # A task stored this soon after the connection was made is read in the ledger
            # first (it could be one a restarted server hands out again).
            wait_for(lambda: time.time() > worker.connected_at + CLOCK_SKEW_ALLOWANCE, 5,
                     "the connection to be older than the clock allowance")
            done = watcher.subscribe(S.tasks_completed("acme"))
            watcher.flush()

            cluster.stop_node(lost, kill=True)
            task = Task(org="acme", role="cto", title="Waited for", requested_by="ceo")
            watcher.js.publish(S.tasks("cto"), task, msg_id=task.id, timeout=10)
            if unanswered == "the record":
                wait_for(lambda: runs, 10, "the task at the handler")
            else:
                wait_for(lambda: cto.stats["ledger_prechecks"] >= 1, 10, "the ledger read")
                assert runs == []  # it waits for the read
            cluster.start_node(lost)  # the ledger was asked meanwhile, and did not answer

            event = done.next(timeout=60).decode(TaskCompleted)
            assert (event.task_id, event.deliveries, event.result) == (
                task.id, 1, {"done": "Waited for"})
            assert runs == [1]
            assert ledger.get("acme", task.id)["deliveries"] == 1  # the record announced
            assert cto.stats["errors"] == 0, cto.stats  # nothing nak'ed for the outage
            wait_for(lambda: ops.js.consumer_info(TASK_STREAM, "cto").num_ack_pending == 0,
                     10, "the ack")
            info = ops.js.consumer_info(TASK_STREAM, "cto")
            assert (info.num_pending, info.num_redelivered) == (0, 0)
            cto.stop()
        finally:
            worker.close()
            watcher.close()

