"""The ScalingView: an autoscaler's lag, replicas and decisions over time, drawn in Python as
SVG; first from a made-up history, then live while a real role scales from zero and back."""

from __future__ import annotations

import functools
from datetime import datetime, timedelta, timezone

import pytest

import helpers
from agentlab.org import Organisation
from agentlab.org.autoscale import Autoscaler, ScalingDecision
from agentlab.widgets import ScalingView, scaling_html
from agentlab.widgets.scaling import scaling_svg

wait_for = functools.partial(helpers.wait_for, timeout=15.0, interval=0.05)
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


def tick(second: float, lag: int | None, running: int, wanted: int, action: str = "hold",
         reason: str = "") -> ScalingDecision:
    return ScalingDecision(at=T0 + timedelta(seconds=second), lag=lag, pending=lag or 0,
                           ack_pending=0, running=running, wanted=wanted, action=action,
                           reason=reason or action)


HISTORY = [tick(0, 0, 0, 0), tick(1, 25, 0, 3, "activate", "lag 25 > activation 0"),
           tick(2, 12, 3, 3), tick(3, 4, 3, 1, "scale_down"), tick(4, None, 1, 1, "error"),
           tick(5, 0, 1, 1), tick(40, 0, 1, 0, "scale_to_zero", "cooldown over")]


def test_each_decision_is_a_marker_with_the_count_it_moved_to():
    svg = scaling_svg(HISTORY, max_replicas=5)
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    for label in ("0→3", "3→1", "1→0", "✖"):
        assert label in svg, label
    assert svg.count("<circle") == 4  # activate, scale_down, error, scale_to_zero; no holds
    assert "lag 25 &gt; activation 0" in svg  # each marker says why, as a tooltip
    assert "polyline" in svg and "polygon" in svg  # replicas as steps, the lag filled


def test_the_window_keeps_only_the_latest_seconds():
    svg = scaling_svg(HISTORY, window=10)  # the last tick is at 40 s: only it is in view
    assert "1→0" in svg and "0→3" not in svg and "3→1" not in svg


def test_no_history_says_what_will_show():
    assert "No tick yet" in scaling_svg([])


def test_bad_arguments_name_the_fix():
    with pytest.raises(TypeError, match="org.autoscale"):
        ScalingView(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="window=0"):
        ScalingView(object.__new__(Autoscaler), window=0)  # never started


async def quick(task, ctx):
    return {"ok": True}


def test_the_view_follows_a_role_from_zero_to_work_and_back(org_lab, unique):
    """A backlog wakes the role (activate), the view marks it; the queue drains, the cooldown
    passes, the role goes back to zero, and the view marks that too. Its static HTML (for a
    page without a kernel) is the same picture."""
    role = f"w{unique}"
    org = Organisation(org_lab, f"org{unique}", roles={role: quick}, instances={role: 0},
                       heartbeat_interval=0.5, shared_connection=True).start()
    try:
        scaler = org.autoscale(role, lag_threshold=5, max_replicas=3, cooldown=1.0,
                               interval=0.1)
        view = ScalingView(scaler, window=60)
        assert "al-scaling" in view.html.value
        for n in range(12):
            org.assign(f"Backlog {n}", to=role)
        wait_for(lambda: "activate" in {d.action for d in scaler.decisions}, what="activate")
        first = scaler.decisions[0]
        assert first.running == 0 and first.wanted >= 1
        wait_for(lambda: f"0→{first.wanted}" in view.html.value, what="the activation drawn")
        wait_for(lambda: any(d.action == "scale_to_zero" for d in scaler.history),
                 what="back to zero")
        assert org.agents[role] == [] and org.stats()["processed"] == 12
        wait_for(lambda: "→0" in view.html.value, what="the scale to zero drawn")
        bundle = view._repr_mimebundle_()
        assert "al-scaling" in bundle["text/html"] and "scale_to_zero" in bundle["text/html"]
        assert "scale_to_zero" in scaling_html(scaler)
        view.close()
    finally:
        org.stop()
