"""Live views of an Observer, as ipywidgets 8 (JupyterLab 4, Notebook 7, VS Code).

    obs = Observer(lab).start()
    StreamsView(obs)        # one row per stream; changes flash as they happen
    ConsumersView(obs)      # pending, ack pending, redelivered, oldest age, acks/s sparkline
    FlowView(obs)           # sequence diagram + filterable tail, pause, Mermaid export
    FlowView(obs, trace=trace_id)   # ... of one trace's messages only
    TopologyView(obs)       # publishers → subjects → streams → receivers, with counts
    TraceView(recorder)     # the latest trace's spans as a waterfall (agentlab.observe.spans)

Each view is a VBox holding an ``HTML`` widget whose value is rendered in Python from the
observer's snapshots (agentlab.observe.html), plus a few controls. The UI pump updates it.
The TraceView reads a SpanRecorder instead of an observer. Displayed, each view also leaves
that HTML in its output (the flow its Mermaid source too), for pages without a kernel
(agentlab.widgets.static).
"""

from __future__ import annotations

import threading
import time
from html import escape
from typing import Any

import ipywidgets as widgets

from ..observe.html import consumers_html, flow_html, streams_html, topology_html
from ..observe.observer import Observer
from ..observe.spans import SpanRecorder, TraceSnapshot
from ..observe.waterfall import trace_html
from .pump import get_pump, record_view
from .static import StaticSnapshot


class _LiveView(StaticSnapshot, widgets.VBox):
    """A live HTML view. ``min_interval``: seconds between two updates (0.1 = 10/s).

    Its static snapshot (``static_bundle()``, in every output it leaves) is what it shows
    on screen, brought up to date first: a paused flow stays as it was paused."""

    min_interval = 0.1
    # ipywidgets ships no types: say what VBox's children trait holds (an annotation only,
    # no class attribute, so the trait stays as it is).
    children: tuple[widgets.Widget, ...]

    def __init__(self, controls: list[widgets.Widget] | None = None, **kwargs: Any):
        self.html = widgets.HTML(layout=widgets.Layout(width="100%"))
        self.html.add_class("agentlab-view")
        self.updates = 0
        self._last_key: Any = None
        self._last_sent = 0.0
        self._closed = False
        rows = [widgets.HBox(controls, layout=widgets.Layout(flex_flow="row wrap"))] \
            if controls else []
        super().__init__(rows + [self.html], **kwargs)
        self.add_class(f"agentlab-{type(self).__name__.lower()}")
        self.record = record_view(self)  # what it showed, kept after it closes
        self.refresh()
        get_pump().register(self)

    # -- what subclasses provide ----------------------------------------------------------
    # Not abc.abstractmethod: a widget's metaclass (traitlets' MetaHasTraits) and ABCMeta do
    # not combine, so a view that forgets one of these two fails on its first render instead.
    def _key(self) -> Any:
        """What the view shows, cheaply: a new key means render again."""
        raise NotImplementedError

    def _ingest(self) -> None:
        """Before the key is asked, each pump tick (off agentlab's loop)."""

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
            self.record.saw(value)
            self._last_sent = time.time()

    def _pump_tick(self, now: float) -> None:
        if self._closed or now - self._last_sent < self.min_interval:
            return
        self._catch_up()

    def _catch_up(self) -> None:
        self._ingest()
        key = self._key()
        if key == self._last_key:
            return
        self._last_key = key
        self._push(self.render())

    # -- the static snapshot ---------------------------------------------------------------
    def static_bundle(self) -> dict[str, str]:
        """What the view shows now, as HTML (what pages without a kernel show)."""
        if not self._closed:
            try:
                self._catch_up()  # what the pump would show on its next tick
            except Exception:  # e.g. its observer's connection is gone: keep the last
                pass
        return {"text/html": self.html.value}

    def close(self) -> None:
        if not self._closed:
            self._keep_final_snapshot()
        self._closed = True
        get_pump().unregister(self)
        super().close()


class _View(_LiveView):
    """A live view of an observer's snapshots."""

    def __init__(self, observer: Observer, controls: list[widgets.Widget] | None = None,
                 **kwargs: Any):
        self.observer = observer
        super().__init__(controls, **kwargs)

    def _ingest(self) -> None:
        self.observer.recorder.ingest()  # classify what the taps collected (off the loop)


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
    trace), a tail filtered by a subject wildcard and by trace, pause/resume, and Mermaid
    export. ``trace``: one trace's messages only (its id, or the first characters of it
    that the tail shows); the *trace* box changes it, empty for all."""

    def __init__(self, observer: Observer, *, pattern: str = ">", limit: int = 30,
                 trace: str = "", **kwargs: Any):
        self.limit = limit
        self.pattern = widgets.Text(value=pattern, description="subjects",
                                    placeholder="wildcard, e.g. genbrain.agents.cto.>",
                                    continuous_update=False,
                                    layout=widgets.Layout(width="360px"))
        self.trace = widgets.Text(value=trace, description="trace",
                                  placeholder="all; or a trace id (8 characters do)",
                                  continuous_update=False,
                                  layout=widgets.Layout(width="300px"))
        self.noise = widgets.Checkbox(value=True, description="hide heartbeats & metrics",
                                      indent=False, layout=widgets.Layout(width="210px"))
        self.pause = widgets.ToggleButton(value=False, description="pause", icon="pause",
                                          tooltip="Freeze the view; recording goes on")
        self.export = widgets.Button(description="Mermaid", icon="download",
                                     tooltip="Show what is on screen as a Mermaid diagram")
        self.mermaid = widgets.Textarea(layout=widgets.Layout(width="100%", height="160px",
                                                              display="none"))
        super().__init__(observer, [self.pattern, self.trace, self.noise, self.pause,
                                    self.export], **kwargs)
        self.children = (*self.children, self.mermaid)
        self.pattern.observe(lambda _: self.refresh(), "value")
        self.trace.observe(lambda _: self.refresh(), "value")
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
                                  hide_noise=self.noise.value, trace=self.trace.value.strip())

    def _key(self) -> Any:
        if self.paused:
            return self._last_key
        return self.observer.version[0], self.pattern.value, self.trace.value, self.noise.value

    def render(self) -> str:
        try:
            return flow_html(self.snapshot(), paused=self.paused)
        except ValueError as error:  # a pattern NATS would not accept
            return f"<b>bad subject filter:</b> {error}"

    def to_mermaid(self) -> str:
        """What the view shows, as a Mermaid sequence diagram."""
        return self.snapshot().to_mermaid()

    def static_bundle(self) -> dict[str, str]:
        """The diagram as HTML, its Mermaid source under it (folded), and as
        ``text/vnd.mermaid``."""
        bundle = super().static_bundle()
        try:
            mermaid = self.to_mermaid()
        except ValueError:  # a subject filter NATS would not accept: the HTML says so
            return bundle
        bundle["text/html"] += (
            "<details class='al-mermaid' style='font-size:12px;margin:4px 0'><summary>"
            "Mermaid source of this diagram</summary><pre style='font-size:11px'>"
            f"{escape(mermaid)}</pre></details>")
        bundle["text/vnd.mermaid"] = mermaid
        return bundle

    def _show_mermaid(self) -> None:
        self.mermaid.value = self.to_mermaid()
        self.mermaid.layout.display = "block"


class TraceView(_LiveView):
    """A waterfall of one trace's spans, from a SpanRecorder (``agentlab.observe.record_spans``):
    one row per span, under the span it is part of, a bar from its start to its end on the
    trace's time axis, who ran it and for how long; failed spans are red.

    ``trace_id``: the trace to show (its id or first characters); by default the latest,
    following each new one. The *trace* menu picks another of the recorded traces. ``flow``:
    a FlowView to narrow to the shown trace with the *filter the flow* button (the Dashboard
    passes its own). Displayed where no kernel runs, it shows the waterfall as static HTML.
    """

    min_interval = 0.25
    LATEST = ""  # the menu's value for "the latest trace"

    def __init__(self, recorder: SpanRecorder, trace_id: str | None = None, *,
                 flow: FlowView | None = None, traces: int = 15, **kwargs: Any):
        self.recorder = recorder
        self.flow = flow
        self.menu_size = traces
        self._menu_version = -1
        self._filling: int | None = None  # the thread refilling the menu, while it does
        self._wanted = trace_id or self.LATEST  # what to show: the menu's value, or given
        self.choice = widgets.Dropdown(options=[("latest trace", self.LATEST)],
                                       value=self.LATEST, description="trace",
                                       layout=widgets.Layout(width="640px"))
        self._fill_menu()
        controls: list[widgets.Widget] = [self.choice]
        self.filter_flow: widgets.ToggleButton | None = None
        if flow is not None:
            self.filter_flow = widgets.ToggleButton(
                value=False, description="filter the flow", icon="filter",
                tooltip="Show only this trace's messages in the Message flow")
            controls.append(self.filter_flow)
            self.filter_flow.observe(lambda _: self._sync_flow(), "value")
        super().__init__(controls, **kwargs)
        self.choice.observe(self._on_choice, "value")

    @property
    def trace_id(self) -> str:
        """The id of the trace shown now ("" when there is none yet)."""
        return self.snapshot().trace_id

    def snapshot(self) -> TraceSnapshot:
        return self.recorder.trace(self._wanted or None)

    def _key(self) -> Any:
        return self.recorder.version, self._wanted, self.recorder.recording

    def render(self) -> str:
        snapshot = self.snapshot()
        if self.flow is not None and self.filter_flow is not None and self.filter_flow.value:
            self._sync_flow(snapshot.trace_id)
        return trace_html(snapshot)

    def _repr_html_(self) -> str:
        return self.render()

    # -- the menu of traces ----------------------------------------------------------------
    def _ingest(self) -> None:
        if self.recorder.version != self._menu_version:
            self._fill_menu()

    def _fill_menu(self) -> None:
        """The menu: "latest trace", then the recorded traces, newest first (and the trace
        asked for, should it not be among them yet)."""
        self._menu_version = self.recorder.version
        summaries = self.recorder.traces()[: self.menu_size]
        options = [("latest trace" + (f" ({summaries[0].label()})" if summaries else ""),
                    self.LATEST)]
        options += [(summary.label(), summary.trace_id) for summary in summaries]
        keep = self._wanted
        if keep and keep not in {value for _, value in options}:
            match = next((v for _, v in options if v and v.startswith(keep)), None)
            if match is None:  # a trace not recorded (yet): keep asking for it
                options.append((f"trace {keep}", keep))
            else:
                keep = self._wanted = match  # the whole id, from its first characters
        if tuple(options) == tuple(self.choice.options) and self.choice.value == keep:
            return
        # New options select the first; the wanted one is set again right after. A choice
        # made meanwhile (the front end's, on the kernel's thread) is taken, not ignored.
        self._filling = threading.get_ident()
        try:
            self.choice.options = options
            self.choice.value = self._wanted
        finally:
            self._filling = None

    def _on_choice(self, change: Any) -> None:
        if self._filling == threading.get_ident():
            return
        self._wanted = change["new"] or self.LATEST
        self.refresh()

    def _sync_flow(self, trace_id: str | None = None) -> None:
        if self.flow is None or self.filter_flow is None:
            return
        wanted = (trace_id if trace_id is not None else self.trace_id) \
            if self.filter_flow.value else ""
        if self.flow.trace.value != wanted:
            self.flow.trace.value = wanted
