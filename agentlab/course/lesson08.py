"""Lesson 08, Cluster and failover: two nodes down stop every receipt; one back, they resume.

    lesson08.check(cluster, publisher, acked_while_down)

The check reads the cluster as it is now (every node running, a meta leader, a leader for
AGENT_TASKS) and the learner's publisher: while two of three nodes were down it must have
had no receipt at all (`acked_while_down`, the learner's count, is 0 and the publisher's
longest pause is a real stall), after that the flow must have resumed, and every task the
cluster confirmed must be in the stream at the sequence its receipt gave (read from the
live stream).
"""

from __future__ import annotations

from typing import Any

from ..cluster import missing_acked
from .check import CheckResult, Exercise, listing, not_given

EXERCISE = Exercise("08", "No majority, no receipts")
STALL = 2.0  # seconds without a receipt that only a lost majority explains


@EXERCISE.check
def check(cluster: Any, publisher: Any, acked_while_down: Any) -> CheckResult:
    """Did two nodes down stop the receipts, one back resume them, nothing confirmed lost?"""
    if not_given(publisher, acked_while_down):
        return EXERCISE.not_done(
            "there is no `publisher` or no `acked_while_down` yet (the cell still says `= ...`)",
            "start an AckedPublisher, stop two nodes, count the receipts for a few seconds "
            "into `acked_while_down`, then start the nodes again")
    down = [name for name in cluster.names if not cluster.node(name).is_running]
    if down:
        return EXERCISE.failed(f"{listing(down)} still down: the cluster is not whole again",
                               "`cluster.start_node(name)` for each node you stopped")
    if acked_while_down:
        return EXERCISE.failed(
            f"the cluster confirmed {acked_while_down} task(s) while your nodes were down: it "
            "still had a majority",
            "stop two of the three nodes: with one node of three left there is no majority, "
            "and no receipt")
    pause = publisher.longest_pause()
    if pause < STALL:
        return EXERCISE.failed(
            f"your publisher never stalled (its longest pause between receipts is "
            f"{pause:.1f} s), so `acked_while_down` counted no real outage",
            "count the receipts while two nodes are down, after `stop_node` of both")
    if not publisher.acked or publisher.resumed_after(0.0) is None:
        return EXERCISE.failed("your publisher has no receipt at all",
                               "`publisher.wait_for_acks(...)` after a node is back")
    client = cluster.connect("course-check-08")
    try:
        missing = missing_acked(client, publisher.stream or "AGENT_TASKS", publisher.acked)
    finally:
        client.close()
    if missing:
        return EXERCISE.failed(f"{len(missing)} confirmed task(s) are not in the stream",
                               "this should not happen: read the node logs",
                               *missing[:3])
    return EXERCISE.passed(
        f"no receipt while two nodes were down (a stall of {pause:.1f} s), the flow resumed, "
        f"and all {len(publisher.acked)} confirmed tasks are in the stream; all "
        f"{len(cluster.names)} nodes run again")
