"""The reference organisation in one call: delegation across roles, scaling, and teardown."""

from __future__ import annotations

import time

import pytest

from agentlab.org import Organisation
from helpers import stored


@pytest.fixture
def org(org_lab, unique):
    org = Organisation(org_lab, f"org{unique}", ack_wait=2, heartbeat_interval=0.2,
                       monitor_interval=0.2).start()
    yield org
    org.stop()


def test_a_goal_for_the_ceo_becomes_work_for_the_cto_and_cfo(org, org_lab):
    done = org_lab.subscribe(org.subjects.tasks_completed(org.org))
    task = org.assign("Open an office in Lisbon")
    events = [m.json() for m in done.messages(count=3, timeout=10)]
    by_role = {e["role"]: e for e in events}
    assert set(by_role) == {"ceo", "cto", "cfo"}
    assert by_role["ceo"]["task_id"] == task.id
    # The sub-tasks carry the goal's correlation: one conversation, three agents.
    assert {e["correlation_id"] for e in events} == {task.id}
    assert by_role["cto"]["result"]["decision"]
    assert org.stats()["processed"] == 3


def test_scale_to_zero_and_back_keeps_every_task_and_every_count(org, org_lab):
    done = org_lab.subscribe(org.subjects.tasks_completed(org.org))
    org.scale("cfo", 0)
    for n in range(4):
        org.assign(f"Budget line {n}", to="cfo")
    time.sleep(0.3)
    assert done.messages(timeout=0.3) == []  # nobody is working on them
    assert [a.instance for a in org.scale("cfo", 2)]
    assert len(done.messages(count=4, timeout=10)) == 4
    org.scale("cfo", 0)
    assert org.stats()["processed"] == 4  # counted even though those instances are gone
    with pytest.raises(LookupError, match="scale"):
        org.agent("cfo")


def test_health_monitor_sees_every_instance(org):
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        seen = {h.role for h in org.health.agents() if h.status == "up"}
        if seen >= {"ceo", "cto", "cfo"}:
            break
        time.sleep(0.1)
    assert seen >= {"ceo", "cto", "cfo"}


def test_stop_closes_every_connection_it_opened(org_lab, unique):
    org = Organisation(org_lab, f"stop{unique}", heartbeat_interval=0.2).start()
    clients = list(org._clients)
    assert len(clients) >= 5  # dlq office, health monitor, one per agent
    org.stop()
    assert all(c.is_closed for c in clients)


def test_resending_an_assignment_stores_and_records_it_once(org_lab, unique):
    """assign() takes the delegation path: Nats-Msg-Id on the task and on its "created"."""
    org = Organisation(org_lab, f"org{unique}", instances={"ceo": 0, "cto": 0, "cfo": 0})
    org.start()
    try:
        role = f"r{unique}"  # nobody works this role: the task stays where it was stored
        for _ in range(3):
            org.assign("Only once", to=role, task_id=f"once{unique}")
        assert stored(org_lab, "AGENT_TASKS", org.subjects.tasks(role)) == 1
        created = org_lab.js.read("AGENT_EVENTS", org.subjects.tasks_created(org.org))
        assert [m.json()["id"] for m in created] == [f"once{unique}"]
    finally:
        org.stop()


def test_every_agent_connection_logs_in_as_the_lab(org_lab, unique):
    """Organisation opens its agents' connections with lab.connect(): same login, closed with it."""
    org = Organisation(org_lab, f"org{unique}", instances={"ceo": 1, "cto": 0, "cfo": 0}).start()
    try:
        clients = org._clients
        assert clients and all(c._login == org_lab._login for c in clients)
        assert all(c in org_lab._clients for c in clients)
    finally:
        org.stop()
    assert all(c.is_closed for c in clients)
