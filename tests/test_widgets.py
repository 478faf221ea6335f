"""The views and the dashboard, driven without a browser (tests/test_browser.py has one)."""

from __future__ import annotations

import functools
import time

import pytest

import agentlab
import helpers
from agentlab.org import Organisation
from agentlab.widgets import Dashboard, FlowView, StreamsView, get_pump

wait_for = functools.partial(helpers.wait_for, timeout=10.0, interval=0.05)


@pytest.fixture(scope="module")
def dashboard(org_server):
    lab = agentlab.Client.open(org_server.url, name="widgets-test")
    org = Organisation(lab, "acme", ack_wait=1.0, heartbeat_interval=0.5,
                       monitor_interval=0.5).start()
    dash = Dashboard(lab, org)
    yield dash
    dash.close()
    org.stop()
    lab.close()


def test_every_view_renders_from_the_start(dashboard):
    for view in dashboard.views:
        assert "al-view" in view.html.value
    assert "Message flow" in dashboard.flow.html.value
    assert "AGENT_TASKS" in dashboard.streams.html.value


def test_publish_button_puts_a_task_in_the_flow(dashboard):
    dashboard.role.value = "cto"
    dashboard.title.value = "Pressed the button"
    dashboard.publish_button.click()
    assert dashboard.actions[-1].startswith("published task 'Pressed the button' to cto")
    assert "Pressed the button" in dashboard.status.value
    assert wait_for(lambda: "Pressed the button" in dashboard.flow.html.value)
    assert wait_for(lambda: "ack · Pressed the button" in dashboard.flow.html.value)


def test_poison_button_ends_in_a_dead_letter(dashboard):
    dashboard.role.value = "cfo"
    dashboard.poison_button.click()
    assert wait_for(lambda: "dead letter (poison)" in dashboard.flow.html.value)


def test_stop_and_start_agent(dashboard):
    org = dashboard.org
    dashboard.role.value = "cfo"
    dashboard.stop_button.click()
    assert org.agents["cfo"] == []
    dashboard.title.value = "Waits for the CFO"
    dashboard.publish_button.click()
    assert wait_for(lambda: dashboard.observer.state().streams.row("AGENT_TASKS").messages >= 1)
    dashboard.start_button.click()
    assert len(org.agents["cfo"]) == 1
    assert wait_for(lambda: "ack · Waits for the CFO" in dashboard.flow.html.value)


def test_pause_freezes_the_flow_and_filter_narrows_it(dashboard):
    flow = dashboard.flow
    flow.pause.value = True
    frozen = flow.html.value
    assert "paused" in frozen
    dashboard.publish_task("Hidden while paused", role="cto")
    time.sleep(1.0)
    assert flow.html.value == frozen
    flow.pause.value = False
    assert wait_for(lambda: "Hidden while paused" in flow.html.value)
    flow.pattern.value = "genbrain.agents.cfo.>"
    assert "Hidden while paused" not in flow.html.value
    flow.pattern.value = ">"


def test_mermaid_export_button(dashboard):
    dashboard.flow.export.click()
    assert dashboard.flow.mermaid.value.startswith("sequenceDiagram")
    assert dashboard.flow.mermaid.layout.display == "block"


def test_each_view_updates_at_most_ten_times_a_second(dashboard):
    before = {id(v): v.updates for v in dashboard.views}
    dashboard.start_traffic(every=0.02)
    time.sleep(3.0)
    dashboard.stop_traffic()
    for view in dashboard.views:
        rate = (view.updates - before[id(view)]) / 3.0
        assert rate <= 11, (type(view).__name__, rate)
    assert dashboard.flow.updates - before[id(dashboard.flow)] >= 5  # and it did update


def test_closing_views_stops_the_pump(org_server):
    lab = agentlab.Client.open(org_server.url, name="pump-test")
    from agentlab.observe import Observer

    obs = Observer(lab).start()
    views = [StreamsView(obs), FlowView(obs)]
    assert get_pump().running
    for view in views:
        view.close()
    assert all(v not in get_pump().views for v in views)
    obs.stop()
    lab.close()


def test_cluster_lab_dashboard_stops_and_starts_a_node(monkeypatch):
    """In cluster mode the dashboard's node control stops a real server and brings it back."""
    import agentlab.lab

    monkeypatch.delenv("AGENTLAB_NATS_URL", raising=False)
    monkeypatch.setattr(agentlab.lab, "_current", None)  # leave the session's lab alone
    lab = agentlab.start(cluster=3, fresh=True)
    board = Dashboard(lab)
    try:
        names = [label for label, _ in board.node.options]
        assert sorted(names) == sorted(lab.cluster.nodes)
        board.node.value = 2
        victim = lab.cluster.nodes[names[2]]
        board.stop_node_button.click()
        assert wait_for(lambda: not victim.is_running)
        assert "stopped" in board.status.value
        lab.publish("dashboard.cluster.check", "still served by the other two")
        lab.flush()
        board.start_node_button.click()
        assert wait_for(lambda: victim.is_running)
        assert "started" in board.status.value
    finally:
        board.close()
        lab.close()


def test_a_subscriptions_view_shows_who_got_which_message(org_server, unique):
    from agentlab.observe import Observer
    from agentlab.widgets import SubscriptionsView, view_records

    lab = agentlab.Client.open(org_server.url, name="widgets-subs")
    obs = Observer(lab, poll_interval=0.5).start()
    try:
        star = lab.subscribe(f"genbrain.{unique}.*.inbox")
        rest = lab.subscribe(f"genbrain.{unique}.>")
        view = SubscriptionsView(obs, [star, rest])
        first = view.record.contents
        assert "no messages seen yet" in view.html.value
        for subject in (f"genbrain.{unique}.cto.inbox", f"genbrain.{unique}.cto.tasks"):
            lab.publish(subject, {"hello": subject})
        assert wait_for(lambda: star.received == 1 and rest.received == 2)
        assert wait_for(lambda: f"genbrain.{unique}.cto.tasks" in view.html.value)
        snap = view.snapshot()
        assert snap.got(f"genbrain.{unique}.*.inbox") == [f"genbrain.{unique}.cto.inbox"]
        assert sorted(snap.got(f"genbrain.{unique}.>")) == sorted(
            [f"genbrain.{unique}.cto.inbox", f"genbrain.{unique}.cto.tasks"])
        assert view.html.value.count("✓") == 3
        assert view.record.contents > first and view.record in view_records()
        view.close()
    finally:
        obs.stop()
        lab.close()


def test_a_cluster_view_follows_a_node_down_and_back(tmp_path):
    from agentlab.cluster import LocalCluster
    from agentlab.widgets import ClusterView

    slow = functools.partial(helpers.wait_for, timeout=60.0, interval=0.1)
    with LocalCluster(store_dir=tmp_path / "cluster") as cluster:
        ops = cluster.connect("widgets-cluster")
        ops.js.declare_stream(agentlab.StreamSpec("WATCHED", subjects=["watched.>"],
                                                  replicas=3))
        view = ClusterView(cluster, interval=0.25)
        try:
            assert slow(lambda: view.snapshot().meta_leader is not None
                        and any(s.name == "WATCHED" and s.leader
                                for s in view.snapshot().streams))
            assert slow(lambda: "★ leader" in view.html.value and "meta leader" in
                        view.html.value)
            leader = view.snapshot().stream("WATCHED").leader
            cluster.stop_node(leader, kill=True)
            assert slow(lambda: not view.snapshot().node(leader).running)
            assert slow(lambda: view.snapshot().stream("WATCHED").leader not in ("", leader))
            assert slow(lambda: f"{leader} down" in view.html.value)
            cluster.start_node(leader)
            assert slow(lambda: f"{leader} up" in view.html.value)
            assert slow(lambda: all(r.healthy for r in view.snapshot().stream("WATCHED").replicas)
                        and len(view.snapshot().stream("WATCHED").replicas) == 3)
            assert view.record.contents >= 3
            assert view.wait_whole(60).whole
            cluster.stop_node(leader)
            assert slow(lambda: not view.snapshot().node(leader).running)
            with pytest.raises(TimeoutError, match=f"{leader} is down.*start_node"):
                view.wait_whole(1.0)
        finally:
            view.close()
        assert not view.watch.running  # the view stopped the watch it started
