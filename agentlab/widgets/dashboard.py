"""Everything in one place: the four views plus controls that act on the organisation.

    org = Organisation(lab, "acme").start()
    Dashboard(lab, org)          # publish a task, stop/start an agent, inject poison...
    Dashboard(lab, org, spans=record_spans())   # ... and each goal's trace as a waterfall

The controls call agentlab's public API (``org.assign``, ``org.scale``, a JetStream publish)
exactly as a cell would; the views only watch, through the observer, so what a button
does shows up the way any other traffic does. Displayed, it leaves its views' snapshots in
its output as HTML, for pages without a kernel (agentlab.widgets.static).
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from typing import Any

import ipywidgets as widgets

from ..core.client import Client
from ..core.subjects import Subjects
from ..observe.observer import Observer
from ..observe.spans import SpanRecorder
from .static import StaticSnapshot, static_html
from .views import ConsumersView, FlowView, StreamsView, TopologyView, TraceView

INTRO = """<div style='font-family:system-ui,sans-serif;font-size:13px;margin:2px 0 6px 0'>
<b style='font-size:16px'>agentlab dashboard</b> &nbsp;<span style='color:#475569'>live view of
the organisation: every message the observer sees, every stream and consumer it polls.
Try the buttons: a task you publish appears in <i>Message flow</i> (blue = publish, green =
delivery, grey = ack), then in <i>Consumers</i>.</span></div>"""

_titles = itertools.count(1)


class Dashboard(StaticSnapshot, widgets.VBox):
    """Controls + FlowView (+ TraceView) + ConsumersView + StreamsView + TopologyView.

    ``org``: an Organisation (its roles fill the role menu; stop/start scale a role).
    ``nodes``: cluster mode, servers to stop and start (objects with ``name``, ``stop()``,
    ``start()``, such as EmbeddedServer); a lab started with ``cluster=3`` offers its own.
    ``observer``: reuse one; else one is started and stopped with the dashboard.
    ``spans``: a SpanRecorder (``agentlab.observe.record_spans()``): a TraceView of the latest
    trace under the flow, whose *filter the flow* button narrows the flow to that trace.
    Without ``org`` (watching an organisation run elsewhere: ``org_name``, default acme) the
    stop/start buttons are off, and a published task goes to that organisation's queue.
    """

    def __init__(self, lab: Client, org: Any = None, *, observer: Observer | None = None,
                 nodes: list[Any] | None = None, subjects: Subjects | None = None,
                 flow_limit: int = 24, spans: SpanRecorder | None = None,
                 org_name: str | None = None, **kwargs: Any):
        self.lab = lab
        self.org = org
        self.org_name = org_name or getattr(org, "org", None) or "acme"
        self.subjects = subjects or getattr(org, "subjects", None) or Subjects()
        self._own_observer = observer is None
        self.observer = observer or Observer(lab, root=self.subjects.root).start()
        cluster = getattr(lab, "cluster", None) if nodes is None else None  # a Lab's
        if cluster is not None:
            nodes = list(cluster.nodes.values())  # agentlab.start(cluster=3)
        self.nodes = list(nodes or [])
        self.actions: list[str] = []
        self._traffic: threading.Event | None = None
        roles = list(getattr(org, "roles", None) or ["ceo", "cto", "cfo"])
        self.role = widgets.Dropdown(options=roles, value="cto" if "cto" in roles else roles[0],
                                     description="role", layout=widgets.Layout(width="150px"))
        self.title = widgets.Text(value="Write the launch plan", description="task",
                                  layout=widgets.Layout(width="320px"))
        self.publish_button = self._button("publish task", "paper-plane", "primary",
                                           "Give the task to the role (AGENT_TASKS)",
                                           self._publish)
        self.poison_button = self._button("inject poison", "flask", "danger",
                                          "Publish bytes that are not a Task: dead-lettered",
                                          self._poison)
        self.stop_button = self._button("stop agent", "stop", "warning",
                                        "Scale the role to zero: its tasks wait", self._stop)
        self.start_button = self._button("start agent", "play", "success",
                                         "Run one instance of the role", self._start)
        self.traffic = widgets.ToggleButton(value=False, description="steady traffic",
                                            icon="refresh",
                                            tooltip="Assign a task every second until off")
        self.traffic.observe(self._on_traffic, "value")
        if org is None:
            for button in (self.stop_button, self.start_button):
                button.disabled = True
                button.tooltip = "Only for an organisation this dashboard was given"
        self.status = widgets.HTML("<i style='color:#64748b'>ready</i>")
        # CSS classes: handles for a browser test (and for custom styling)
        for widget, name in ((self.title, "task-title"), (self.publish_button, "publish"),
                             (self.poison_button, "poison"), (self.stop_button, "stop-agent"),
                             (self.start_button, "start-agent"), (self.status, "status")):
            widget.add_class(f"agentlab-{name}")
        row2: list[widgets.Widget] = [self.traffic]
        if self.nodes:
            self.node = widgets.Dropdown(options=[(getattr(n, "name", str(n)), i)
                                                  for i, n in enumerate(self.nodes)],
                                         description="node", layout=widgets.Layout(width="200px"))
            self.stop_node_button = self._button("stop node", "power-off", "danger",
                                                 "Stop this server", self._stop_node)
            self.start_node_button = self._button("start node", "play", "success",
                                                  "Start it again", self._start_node)
            row2 += [self.node, self.stop_node_button, self.start_node_button]
        row2.append(self.status)
        self.flow = FlowView(self.observer, limit=flow_limit)
        shown: list[widgets.Widget] = [self.flow]
        if spans is not None:
            self.traces = TraceView(spans, flow=self.flow)
            shown.append(self.traces)
        self.consumers = ConsumersView(self.observer)
        self.streams = StreamsView(self.observer)
        self.topology = TopologyView(self.observer)
        controls = widgets.VBox([
            widgets.HBox([self.role, self.title, self.publish_button, self.poison_button,
                          self.stop_button, self.start_button]),
            widgets.HBox(row2)])
        super().__init__([widgets.HTML(INTRO), controls, *shown, self.consumers,
                          self.streams, self.topology], **kwargs)
        self.add_class("agentlab-dashboard")

    @staticmethod
    def _button(text: str, icon: str, style: str, tip: str, action: Any) -> widgets.Button:
        button = widgets.Button(description=text, icon=icon, button_style=style, tooltip=tip,
                                layout=widgets.Layout(width="auto"))
        button.on_click(lambda _: action())
        return button

    @property
    def views(self) -> list[Any]:
        return [getattr(self, name) for name in ("flow", "traces", "consumers", "streams",
                                                 "topology") if hasattr(self, name)]

    def static_bundle(self) -> dict[str, str]:
        """The introduction, the last action and every view, as HTML (the buttons do
        nothing without a kernel, so they are left out); the flow as Mermaid too."""
        parts = [static_html(child)[0] for child in self.children]
        flow = self.flow.static_bundle()
        return {"text/html": "".join(f"<div>{part}</div>" for part in parts if part),
                **{k: v for k, v in flow.items() if k != "text/html"}}

    # -- actions (each one a line of public API) ----------------------------------------
    def _say(self, text: str, ok: bool = True) -> None:
        self.actions.append(text)
        colour = "#15803d" if ok else "#b91c1c"
        self.status.value = (f"<span style='color:{colour}'>{time.strftime('%H:%M:%S')} "
                             f"{_esc(text)}</span>")

    def _do(self, what: str, action: Any) -> None:
        try:
            self._say(action())
        except Exception as error:  # shown next to the buttons, not lost in a thread
            self._say(f"{what} failed: {type(error).__name__}: {error}", ok=False)

    def publish_task(self, title: str | None = None, role: str | None = None) -> str:
        """What the "publish task" button does; returns the task id."""
        role = role or self.role.value
        title = title or self.title.value.strip() or f"Task {next(_titles)}"
        if self.org is not None:
            task = self.org.assign(title, to=role)
            return task.id
        from ..org.models import Task

        task = Task(org=self.org_name, role=role, title=title, requested_by="dashboard")
        self.lab.js.publish(self.subjects.tasks(role), task, msg_id=task.id)
        return task.id

    def _publish(self) -> None:
        self._do("publish", lambda: f"published task '{self.title.value}' to "
                                    f"{self.role.value} (id {self.publish_task()[:8]})")

    def _poison(self) -> None:
        def act() -> str:
            role = self.role.value
            self.lab.js.publish(self.subjects.tasks(role), b"{this is not a task",
                                msg_id=f"poison-{uuid.uuid4().hex[:8]}")
            return f"injected a poison message for {role}: watch it become a dead letter"
        self._do("poison", act)

    def _scale(self, count: int) -> str:
        if self.org is None:
            raise RuntimeError("no organisation given: Dashboard(lab, org)")
        role = self.role.value
        self.org.scale(role, count)
        return f"{role}: {count} instance(s) running" + ("; its tasks wait in AGENT_TASKS"
                                                         if count == 0 else "")

    def _stop(self) -> None:
        self._do("stop agent", lambda: self._scale(0))

    def _start(self) -> None:
        self._do("start agent", lambda: self._scale(1))

    def _stop_node(self) -> None:
        node = self.nodes[self.node.value]
        self._do("stop node", lambda: (node.stop(), f"stopped {getattr(node, 'name', node)}")[1])

    def _start_node(self) -> None:
        node = self.nodes[self.node.value]
        self._do("start node", lambda: (node.start(), f"started {getattr(node, 'name', node)}")[1])

    def _on_traffic(self, change: Any) -> None:
        if change["new"]:
            self.start_traffic()
        else:
            self.stop_traffic()

    def start_traffic(self, every: float = 1.0) -> None:
        """Assign a task to the selected role every ``every`` seconds (until stopped)."""
        if self._traffic is not None:
            return
        stop = self._traffic = threading.Event()

        def loop() -> None:
            while not stop.wait(every):
                try:
                    self.publish_task(f"Routine task {next(_titles)}")
                except Exception:
                    return

        threading.Thread(target=loop, name="agentlab-dashboard-traffic", daemon=True).start()
        if not self.traffic.value:
            self.traffic.value = True
        self._say(f"steady traffic: a task for {self.role.value} every {every:g} s")

    def stop_traffic(self) -> None:
        if self._traffic is not None:
            self._traffic.set()
            self._traffic = None
        if self.traffic.value:
            self.traffic.value = False

    def close(self) -> None:
        if getattr(self, "_traffic", None) is not None:
            self.stop_traffic()
        if getattr(self, "comm", None) is not None:
            self._keep_final_snapshot()
        for view in self.views:
            view.close()
        if getattr(self, "_own_observer", False):
            self.observer.stop()
        super().close()


def _esc(text: str) -> str:
    import html

    return html.escape(text)
