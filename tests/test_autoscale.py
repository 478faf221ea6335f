"""The autoscaler: KEDA's nats-jetstream semantics, on a real server, with short intervals.

The decision itself (activation, ceil(lag / threshold) within the bounds, the cooldown before
zero) is checked as a function first; then an organisation's role is driven from zero to the
cap and back to zero by the lag of its real queue, and a caller's own ``scale_to`` is driven
the same way (what starting and stopping worker processes would plug in).
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from agentlab.org import Autoscaler, Organisation, Task, publish_task
from agentlab.org.autoscale import ACTIVATION_LAG, COOLDOWN, LAG_THRESHOLD, MAX_REPLICAS
from helpers import wait_for


async def done(task, ctx):
    return {"ok": True}


def scaler(**options) -> Autoscaler:
    """An autoscaler that is never started: its decisions only (no server needed)."""
    return Autoscaler(SimpleNamespace(_bridge=None), "cto", lambda n: n, **options)


# -- the decision -----------------------------------------------------------------------------
def test_the_defaults_are_kedas_thresholds():
    s = scaler()
    assert (s.lag_threshold, s.activation_lag, s.min_replicas) == (10, 0, 0)
    assert (LAG_THRESHOLD, ACTIVATION_LAG, MAX_REPLICAS, COOLDOWN) == (10, 0, 10, 30.0)


def test_activation_is_strictly_above_the_activation_lag():
    s = scaler(lag_threshold=2, activation_lag=3, max_replicas=5)
    assert s.desired(3, 0, now=0.0)[:2] == (0, "hold")
    assert s.desired(4, 0, now=0.0)[:2] == (2, "activate")


@pytest.mark.parametrize("lag, wanted", [(1, 1), (10, 1), (11, 2), (35, 4), (1000, 5)])
def test_replicas_are_the_ceiling_of_lag_over_threshold_within_the_bounds(lag, wanted):
    s = scaler(lag_threshold=10, max_replicas=5)
    assert s.desired(lag, 1, now=0.0)[0] == wanted


def test_zero_only_after_the_cooldown_since_the_lag_was_last_active():
    s = scaler(lag_threshold=10, cooldown=5)
    assert s.desired(30, 0, now=100.0)[:2] == (3, "activate")
    # Drained: the HPA keeps one replica until the cooldown has passed, then KEDA takes it.
    assert s.desired(0, 3, now=101.0)[:2] == (1, "scale_down")
    assert s.desired(0, 1, now=104.9)[:2] == (1, "hold")
    wanted, action, reason = s.desired(0, 1, now=105.0)
    assert (wanted, action) == (0, "scale_to_zero") and "cooldown 5s" in reason
    assert s.desired(0, 0, now=200.0)[:2] == (0, "hold")


def test_a_minimum_above_zero_is_kept_however_idle():
    s = scaler(lag_threshold=10, min_replicas=2, max_replicas=4, cooldown=0)
    assert s.desired(0, 0, now=0.0)[:2] == (2, "scale_up")
    assert s.desired(0, 2, now=50.0)[:2] == (2, "hold")
    assert s.desired(25, 2, now=51.0)[:2] == (3, "scale_up")


@pytest.mark.parametrize("options, named", [
    ({"lag_threshold": 0}, "lag_threshold=0"),
    ({"lag_threshold": 2.5}, "lag_threshold=2.5"),
    ({"activation_lag": -1}, "activation_lag=-1"),
    ({"min_replicas": -1}, "min_replicas=-1"),
    ({"max_replicas": 0}, "max_replicas=0"),
    ({"min_replicas": 3, "max_replicas": 2}, "raise max_replicas or lower min_replicas"),
    ({"cooldown": -1}, "cooldown=-1"),
    ({"interval": 0}, "interval=0"),
])
def test_bad_bounds_name_the_argument_and_the_fix(options, named):
    with pytest.raises(ValueError, match="use|raise") as caught:
        scaler(**options)
    assert named in str(caught.value)


# -- an organisation's in-process agents -------------------------------------------------------
@pytest.fixture
def org(org_lab, names):
    org = Organisation(org_lab, names.org, roles={names.cto: done}, instances={names.cto: 0},
                       heartbeat_interval=0.2, monitor_interval=0.5).start()
    yield org
    org.stop()


def test_an_organisation_role_scales_from_zero_to_the_cap_and_back_to_zero(org, names):
    role = names.cto
    autoscaler = org.autoscale(role, lag_threshold=1, activation_lag=3, max_replicas=2,
                               cooldown=0.5, interval=0.05)
    for n in range(3):
        org.assign(f"Spec {n}", to=role)
    # Three waiting tasks are not more than the activation lag: the role stays at zero.
    wait_for(lambda: sum(d.lag == 3 for d in autoscaler.history) >= 5, what="ticks at lag 3")
    assert org.agents[role] == [] and not autoscaler.decisions
    assert all(d.wanted == 0 for d in autoscaler.history)

    org.assign("One more", to=role)  # lag 4 > 3: ceil(4 / 1) = 4, capped at max_replicas=2
    first = wait_for(lambda: autoscaler.decisions, what="the activation")[0]
    assert (first.lag, first.running, first.wanted, first.action) == (4, 0, 2, "activate")
    assert "within 1..2" in first.reason

    # Drained, then idle for the cooldown: back to zero, every task done exactly once.
    wait_for(lambda: any(d.action == "scale_to_zero" for d in autoscaler.history), timeout=10,
             what="scale to zero")
    assert org.agents[role] == [] and org.stats()["processed"] == 4
    history = autoscaler.history
    zero = next(d for d in history if d.action == "scale_to_zero")
    last_active = max(d.at for d in history if d.lag is not None and d.lag > 3)
    assert (zero.at - last_active).total_seconds() >= 0.45  # cooldown=0.5, read to read
    assert [d.action for d in autoscaler.decisions][0] == "activate"
    assert {d.action for d in history} <= {"hold", "activate", "scale_up", "scale_down",
                                           "scale_to_zero"}
    html = autoscaler._repr_html_()
    assert role in html and "activate" in html and "scale_to_zero" in html


def test_org_stop_stops_its_autoscalers(org_lab, names):
    org = Organisation(org_lab, names.org, roles={names.cto: done},
                       instances={names.cto: 0}).start()
    autoscaler = org.autoscale(names.cto, interval=0.05)
    assert autoscaler.is_running and org.autoscalers == {names.cto: autoscaler}
    org.stop()
    assert not autoscaler.is_running and org.autoscalers == {}


def test_autoscale_before_start_says_so(org_lab, names):
    with pytest.raises(RuntimeError, match=r"org\.start\(\)"):
        Organisation(org_lab, names.org).autoscale("cto")


# -- the caller's own scale_to: how agent processes are driven ---------------------------------
def test_a_callers_async_scale_to_is_driven_and_the_missing_consumer_declared(org_lab, unique):
    role, asked = f"w{unique}", []

    async def scale_to(n: int) -> None:  # e.g. start or SIGTERM agentlab.programs.worker
        await asyncio.sleep(0)
        asked.append(n)

    # activation_lag=11: the twelfth task wakes it, whatever tick the publishing spans.
    autoscaler = Autoscaler(org_lab, role, scale_to, lag_threshold=5, activation_lag=11,
                            max_replicas=4, cooldown=0.2, interval=0.05).start()
    try:
        # No agent ever started: the role's durable consumer exists now, so tasks count.
        assert org_lab.js.consumer_info("AGENT_TASKS", role).config.ack_wait == 30.0
        for n in range(12):
            publish_task(org_lab, autoscaler.subjects,
                         Task(org="acme", role=role, title=f"t{n}", requested_by="test"))
        wait_for(lambda: asked, what="scale_to called")
        assert asked[0] == 3 and autoscaler.replicas() == 3  # ceil(12 / 5)
        assert autoscaler.decisions[0].lag == 12
        # Nobody works the queue here, so the lag stays and so do the replicas.
        wait_for(lambda: len(autoscaler.history) >= 5, what="more ticks")
        assert asked == [3]
    finally:
        autoscaler.stop()
        org_lab.js.delete_consumer("AGENT_TASKS", role)


def test_a_missing_stream_fails_the_start(org_lab, unique):
    with pytest.raises(LookupError, match="NOPE"):
        Autoscaler(org_lab, "cto", lambda n: n, stream="NOPE").start()
