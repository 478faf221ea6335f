"""Live views of an Observer, as ipywidgets 8 (JupyterLab 4, Notebook 7, VS Code).

    obs = Observer(lab).start()
    StreamsView(obs)        # one row per stream; changes flash as they happen
    ConsumersView(obs)      # pending, ack pending, redelivered, oldest age, acks/s sparkline
    FlowView(obs)           # sequence diagram + filterable tail, pause, Mermaid export
    TopologyView(obs)       # publishers → subjects → streams → receivers, with counts

Each view is a VBox holding an ``HTML`` widget whose value is rendered in Python from the
observer's snapshots (agentlab.observe.html), plus a few controls. The UI pump updates it.
"""

from __future__ import annotations

import time
from typing import Any

import ipywidgets as widgets

from ..observe.html import consumers_html, flow_html, streams_html, topology_html
from ..observe.observer import Observer
from .pump import get_pump


class _View(widgets.VBox):
    """A live HTML view. ``min_interval``: seconds between two updates (0.1 = 10/s)."""

    min_interval = 0.1
    # ipywidgets ships no types: say what VBox's children trait holds (an annotation only,
    # no class attribute, so the trait stays as it is).
    children: tuple[widgets.Widget, ...]

    def __init__(self, observer: Observer, controls: list[widgets.Widget] | None = None,
                 **kwargs: Any):
        self.observer = observer
        self.html = widgets.HTML(layout=widgets.Layout(width="100%"))
        self.html.add_class("agentlab-view")
        self.updates = 0
        self._last_key: Any = None
        self._last_sent = 0.0
        self._closed = False
        rows = [widgets.HBox(controls)] if controls else []
        super().__init__(rows + [self.html], **kwargs)
        self.add_class(f"agentlab-{type(self).__name__.lower()}")
        self.refresh()
        get_pump().register(self)

    # -- what subclasses provide ----------------------------------------------------------
    def _key(self) -> Any:
        raise NotImplementedError

    def render(self) -> str:
        """The HTML this view shows now (also usable without a frontend)."""
        raise NotImplementedError

    # -- updating -------------------------------------------------------------------------
    def refresh(self) -> None:
        """Render and send now, whatever the pump's schedule."""
        self._last_key = self._key()
        self._push(self.render())

    def _push(self, value: str) -> None:
        if value != self.html.value:
            with self.html.hold_sync():
                self.html.value = value
            self.updates += 1
            self._last_sent = time.time()

    def _pump_tick(self, now: float) -> None:
        if self._closed or now - self._last_sent < self.min_interval:
            return
        self.observer.recorder.ingest()  # classify what the taps collected (off the loop)
        key = self._key()
        if key == self._last_key:
            return
        self._last_key = key
        self._push(self.render())

    def close(self) -> None:
        self._closed = True
        get_pump().unregister(self)
        super().close()


class StreamsView(_View):
    """One row per stream: subjects, retention, storage, consumers, messages, bytes,
    first/last sequence. Cells that changed since the poll before flash yellow."""

    def _key(self) -> Any:
        return self.observer.version[1]

    def render(self) -> str:
        return streams_html(self.observer.state())


class ConsumersView(_View):
    """Per consumer: filter, ack policy, unprocessed, ack pending, redelivered, waiting,
    last delivered, oldest unprocessed age, and an acks-per-second sparkline."""

    def _key(self) -> Any:
        return self.observer.version[1], int(time.time())  # the sparkline moves each second

    def render(self) -> str:
        return consumers_html(self.observer.state())


class TopologyView(_View):
    """Publishers → subjects → streams → receivers, with message counts on the edges."""

    min_interval = 1.0

    def __init__(self, observer: Observer, **kwargs: Any):
        self.noise = widgets.Checkbox(value=True, description="hide heartbeats & metrics",
                                      indent=False)
        super().__init__(observer, [self.noise], **kwargs)
        self.noise.observe(lambda _: self.refresh(), "value")

    def _key(self) -> Any:
        return self.observer.version[0], self.noise.value

    def render(self) -> str:
        return topology_html(self.observer.topology(hide_noise=self.noise.value))


class FlowView(_View):
    """The live message flow: a sequence diagram (one lifeline per agent and stream,
    arrows for publishes, deliveries, acks, naks, terms and dead letters, coloured by
    trace), a tail filtered by a subject wildcard, pause/resume, and Mermaid export."""

    def __init__(self, observer: Observer, *, pattern: str = ">", limit: int = 30,
                 **kwargs: Any):
        self.limit = limit
        self.pattern = widgets.Text(value=pattern, description="subjects",
                                    placeholder="wildcard, e.g. genbrain.agents.cto.>",
                                    continuous_update=False,
                                    layout=widgets.Layout(width="360px"))
        self.noise = widgets.Checkbox(value=True, description="hide heartbeats & metrics",
                                      indent=False, layout=widgets.Layout(width="210px"))
        self.pause = widgets.ToggleButton(value=False, description="pause", icon="pause",
                                          tooltip="Freeze the view; recording goes on")
        self.export = widgets.Button(description="Mermaid", icon="download",
                                     tooltip="Show what is on screen as a Mermaid diagram")
        self.mermaid = widgets.Textarea(layout=widgets.Layout(width="100%", height="160px",
                                                              display="none"))
        super().__init__(observer, [self.pattern, self.noise, self.pause, self.export],
                         **kwargs)
        self.children = (*self.children, self.mermaid)
        self.pattern.observe(lambda _: self.refresh(), "value")
        self.noise.observe(lambda _: self.refresh(), "value")
        self.pause.observe(self._on_pause, "value")
        self.export.on_click(lambda _: self._show_mermaid())

    @property
    def paused(self) -> bool:
        return bool(self.pause.value)

    def _on_pause(self, change: Any) -> None:
        self.pause.description = "resume" if change["new"] else "pause"
        self.pause.icon = "play" if change["new"] else "pause"
        self.refresh()

    def snapshot(self) -> Any:
        return self.observer.flow(self.pattern.value or ">", limit=self.limit,
                                  hide_noise=self.noise.value)

    def _key(self) -> Any:
        if self.paused:
            return self._last_key
        return self.observer.version[0], self.pattern.value, self.noise.value

    def render(self) -> str:
        try:
            return flow_html(self.snapshot(), paused=self.paused)
        except ValueError as error:  # a pattern NATS would not accept
            return f"<b>bad subject filter:</b> {error}"

    def to_mermaid(self) -> str:
        """What the view shows, as a Mermaid sequence diagram."""
        return self.snapshot().to_mermaid()

    def _show_mermaid(self) -> None:
        self.mermaid.value = self.to_mermaid()
        self.mermaid.layout.display = "block"
