"""AGENT_EVENTS is an audit log you can replay from the start or from a time."""

from __future__ import annotations

import time
from datetime import datetime, timezone

from agentlab.org import Organisation, replay


def test_replay_from_the_start_and_from_a_time(org_lab, unique):
    org_name = f"audit{unique}"
    org = Organisation(org_lab, org_name, heartbeat_interval=0.2).start()
    done = org_lab.subscribe(org.subjects.tasks_completed(org_name))
    try:
        first = org.assign("First goal")
        assert len(done.messages(count=3, timeout=10)) == 3
        time.sleep(0.05)
        middle = datetime.now(timezone.utc)
        second = org.assign("Second goal")
        assert len(done.messages(count=3, timeout=10)) == 3
    finally:
        org.stop()

    everything = replay(org_lab, org_name)
    kinds = [r.kind for r in everything]
    assert kinds.count("task.created") == 6 and kinds.count("task.completed") == 6
    assert "agent.action" in kinds  # the reference roles audit their decisions
    assert [r.seq for r in everything] == sorted(r.seq for r in everything)
    created = [r.event.title for r in everything if r.kind == "task.created"]
    # The CEO may delegate before the board's own "created" event is stored: compare goals.
    assert created.index("First goal") < created.index("Second goal")

    later = replay(org_lab, org_name, since=middle)
    assert all(r.time >= middle for r in later)
    later_ids = {r.event.task_id for r in later if r.kind == "task.completed"}
    assert second.id in later_ids and first.id not in later_ids
    assert replay(org_lab, f"nobody{unique}") == []
