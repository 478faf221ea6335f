"""Spans in memory: an OpenTelemetry SDK span processor that keeps the latest ones, and the
waterfall of one trace made from them. Nothing here talks to NATS.

    recorder = record_spans()          # tracing on for this process, spans kept in memory
    org.assign("Open an office")       # one goal: one trace (board, CEO, CTO, CFO)
    recorder.trace()                   # the latest trace as a waterfall (HTML in Jupyter)
    recorder.trace().names()           # its spans' names, in waterfall order
    TraceView(recorder)                # the same, live (agentlab.widgets)

``SpanRecorder`` is a span processor (``provider.add_span_processor(recorder)``): the SDK
hands it each span as it starts and ends, synchronously, so a live view shows a span the
moment it ends (and one still running as running). It can also stand behind an exporter's
processor (``BatchSpanProcessor(recorder)``: it has ``export``). Its buffer is bounded
(``capacity`` ended spans; the oldest go first) and every method is thread-safe: spans end
on agentlab's loop and in handler threads while a view reads.

``record_spans()`` is the one line for a notebook. If an OpenTelemetry SDK provider is the
global one already (yours, or the ``OTEL_*`` variables', see agentlab.telemetry) it adds the
recorder to it, and the spans go on to its exporters too. Otherwise it makes an SDK
provider for agentlab's spans only (``agentlab.telemetry.enable``: nothing global is set,
so calling it again, or ``recorder.stop()``, undoes it). The SDK is the ``otel`` extra:
``pip install 'agentlab-nats[otel]'``; this module imports it only when it needs it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace as otel_trace
from opentelemetry.trace import StatusCode

from .. import telemetry
from ..errors import AgentlabError

log = logging.getLogger("agentlab")

__all__ = ["OtelExtraMissing", "SpanRecord", "SpanRecorder", "TraceSnapshot", "TraceSummary",
           "WaterfallRow", "record_spans"]

UNKNOWN_SERVICE = "unknown_service"  # the SDK's service.name when nobody set one


class OtelExtraMissing(AgentlabError, ImportError):
    """The OpenTelemetry SDK, the ``otel`` extra, is not installed."""

    def __init__(self) -> None:
        super().__init__("recording spans needs the OpenTelemetry SDK: pip install "
                         "'agentlab-nats[otel]' (or pip install opentelemetry-sdk).")


@dataclass(frozen=True, slots=True)
class SpanRecord:
    """One span, as the recorder keeps it: ids in hex (as ``traceparent`` writes them),
    times in seconds since the epoch, ``end`` None while it runs, ``error`` the failure's
    text ("" when it did not fail)."""

    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: str                 # internal, producer, consumer, client or server
    start: float
    end: float | None
    error: str = ""
    service: str = ""
    attributes: Mapping[str, Any] = field(default_factory=dict)

    @property
    def duration(self) -> float | None:
        return None if self.end is None else max(0.0, self.end - self.start)

    @property
    def running(self) -> bool:
        return self.end is None

    @property
    def failed(self) -> bool:
        return bool(self.error)

    @property
    def role(self) -> str:
        return str(self.attributes.get("agentlab.role", ""))

    @property
    def instance(self) -> str:
        return str(self.attributes.get("agentlab.instance", ""))

    @classmethod
    def of(cls, span: Any, running: bool = False) -> SpanRecord:
        """From an SDK span (a ``ReadableSpan``, or one just started: ``running``)."""
        context = span.context
        parent = span.parent
        status = span.status
        attributes = dict(span.attributes or {})
        error = ""
        if status is not None and status.status_code is StatusCode.ERROR:
            error = status.description or str(attributes.get("error.type", "")) or "error"
        resource = getattr(span, "resource", None)
        service = str(resource.attributes.get("service.name", "")) if resource else ""
        start = (span.start_time or time.time_ns()) / 1e9
        end = None if running or span.end_time is None else span.end_time / 1e9
        return cls(trace_id=f"{context.trace_id:032x}", span_id=f"{context.span_id:016x}",
                   parent_id=f"{parent.span_id:016x}" if parent is not None else "",
                   name=span.name, kind=span.kind.name.lower(), start=start, end=end,
                   error=error, service="" if service.startswith(UNKNOWN_SERVICE) else service,
                   attributes=attributes)


@dataclass(frozen=True, slots=True)
class WaterfallRow:
    """A span in its waterfall: ``depth`` below the trace's root, and ``who`` ran it (the
    agent instance whose work it is, inherited from the span it is part of)."""

    span: SpanRecord
    depth: int
    who: str


@dataclass(frozen=True, slots=True)
class TraceSummary:
    """One trace among the recorded ones: what the dashboard's menu lists."""

    trace_id: str
    root: str            # the name of its first span
    title: str           # the task's title, when its root delegated one
    start: float
    spans: int
    errors: int

    def label(self) -> str:
        when = time.strftime("%H:%M:%S", time.localtime(self.start))
        title = f" · {self.title[:40]}" if self.title else ""
        return f"{when} · {self.root}{title} · {self.trace_id[:8]}"


@dataclass(frozen=True)
class TraceSnapshot:
    """One trace's spans in waterfall order: each span after its parent, siblings by start
    time; spans whose parent is not here (another process's, or dropped) are roots."""

    trace_id: str
    rows: tuple[WaterfallRow, ...]
    taken_at: float
    recorded: int = 0                        # ended spans the recorder saw, all traces
    capacity: int = 0
    traces: tuple[TraceSummary, ...] = ()    # the recorded traces, newest first
    recording: bool = True

    @property
    def spans(self) -> tuple[SpanRecord, ...]:
        return tuple(row.span for row in self.rows)

    @property
    def start(self) -> float:
        return min((row.span.start for row in self.rows), default=0.0)

    @property
    def end(self) -> float:
        """When its last span ended (now, for a span still running)."""
        return max((row.span.end if row.span.end is not None else self.taken_at
                    for row in self.rows), default=0.0)

    @property
    def duration(self) -> float:
        return max(0.0, self.end - self.start)

    @property
    def errors(self) -> int:
        return sum(1 for row in self.rows if row.span.failed)

    def names(self) -> list[str]:
        """The spans' names, in waterfall order."""
        return [row.span.name for row in self.rows]

    def row(self, name: str) -> WaterfallRow:
        """The first row whose span is called ``name`` (KeyError if none)."""
        for row in self.rows:
            if row.span.name == name:
                return row
        raise KeyError(name)

    def _repr_html_(self) -> str:
        from .waterfall import trace_html

        return trace_html(self)

    def __rich__(self) -> Any:
        from .waterfall import trace_table

        return trace_table(self)


class SpanRecorder:
    """An OpenTelemetry SDK span processor (and exporter) keeping the latest ``capacity``
    ended spans, plus the ones still running, for ``trace()`` snapshots and the TraceView.

    ``version`` changes whenever a span starts or ends (what the live view watches);
    ``recorded`` counts the ended spans seen, ``dropped`` those the buffer let go.
    """

    def __init__(self, capacity: int = 2_000):
        if capacity < 1:
            raise ValueError(f"capacity={capacity!r}: keep at least one span")
        self.capacity = capacity
        self._ended: deque[SpanRecord] = deque(maxlen=capacity)
        self._running: OrderedDict[str, SpanRecord] = OrderedDict()
        self._lock = threading.Lock()
        self.version = 0
        self.recorded = 0
        self.recording = True
        self._enabled: Any = None   # the provider record_spans() gave agentlab, if it did

    # -- the SDK's SpanProcessor ----------------------------------------------------------
    def on_start(self, span: Any, parent_context: Any = None) -> None:
        if not self.recording:
            return
        try:
            record = SpanRecord.of(span, running=True)
        except Exception:  # a processor must never fail the code that made the span
            return
        with self._lock:
            self._running[record.span_id] = record
            if len(self._running) > self.capacity:  # spans that never ended (a crash)
                self._running.popitem(last=False)
            self.version += 1

    def _on_ending(self, span: Any) -> None:  # the SDK (1.30+) calls it before on_end
        return None

    def on_end(self, span: Any) -> None:
        if self.recording:
            self._add((span,))

    def shutdown(self) -> None:
        """The provider shuts down: record no more (what was recorded stays readable)."""
        self.recording = False

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True  # nothing waits to be written

    # -- and the SDK's SpanExporter ----------------------------------------------------------
    def export(self, spans: Iterable[Any]) -> Any:
        """Keep ``spans`` (behind a ``BatchSpanProcessor``, say); SpanExportResult."""
        from opentelemetry.sdk.trace.export import SpanExportResult

        if self.recording:
            self._add(spans)
        return SpanExportResult.SUCCESS

    def _add(self, spans: Iterable[Any]) -> None:
        records = []
        for span in spans:
            try:
                records.append(SpanRecord.of(span))
            except Exception:
                continue
        if not records:
            return
        with self._lock:
            for record in records:
                self._running.pop(record.span_id, None)
                self._ended.append(record)
            self.recorded += len(records)
            self.version += 1

    # -- reading ---------------------------------------------------------------------------
    @property
    def dropped(self) -> int:
        return max(0, self.recorded - len(self._ended))

    def spans(self, trace_id: str | None = None) -> list[SpanRecord]:
        """The recorded spans (ended, then running), of one trace if ``trace_id`` is given
        (the whole id or its first characters)."""
        with self._lock:
            every = [*self._ended, *self._running.values()]
        if trace_id:
            every = [s for s in every if s.trace_id.startswith(trace_id)]
        return every

    def traces(self) -> list[TraceSummary]:
        """Every recorded trace, newest first (by when its first span started)."""
        by_trace: dict[str, list[SpanRecord]] = {}
        for span in self.spans():
            by_trace.setdefault(span.trace_id, []).append(span)
        out = []
        for trace_id, spans in by_trace.items():
            first = min(spans, key=lambda s: s.start)
            out.append(TraceSummary(trace_id=trace_id, root=first.name,
                                    title=str(first.attributes.get("agentlab.task.title", "")),
                                    start=first.start, spans=len(spans),
                                    errors=sum(1 for s in spans if s.failed)))
        out.sort(key=lambda t: t.start, reverse=True)
        return out

    @property
    def latest_trace_id(self) -> str:
        """The trace that began last ("" when nothing was recorded)."""
        found = self.traces()
        return found[0].trace_id if found else ""

    def trace(self, trace_id: str | None = None) -> TraceSnapshot:
        """One trace (the latest unless ``trace_id``, or its beginning, is given) as a
        waterfall snapshot; empty when there is no such trace."""
        traces = self.traces()
        wanted = trace_id or (traces[0].trace_id if traces else "")
        if wanted:
            wanted = next((t.trace_id for t in traces if t.trace_id.startswith(wanted)), wanted)
        spans = [s for s in self.spans() if s.trace_id == wanted] if wanted else []
        return TraceSnapshot(trace_id=wanted, rows=tuple(waterfall(spans)),
                             taken_at=time.time(), recorded=self.recorded,
                             capacity=self.capacity, traces=tuple(traces),
                             recording=self.recording)

    def clear(self) -> None:
        """Forget every span recorded so far."""
        with self._lock:
            self._ended.clear()
            self._running.clear()
            self.recorded = 0
            self.version += 1

    def stop(self) -> None:
        """Record no more spans; if ``record_spans()`` turned tracing on for agentlab, turn it
        off again (back to following the global provider). What was recorded stays."""
        global _installed
        self.recording = False
        with _install_lock:
            if self._enabled is not None and _installed is self:
                telemetry.reset()
                _installed = None
            self._enabled = None
        self.version += 1

    close = stop

    def __enter__(self) -> SpanRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _repr_html_(self) -> str:
        return self.trace()._repr_html_()

    def __repr__(self) -> str:
        state = "recording" if self.recording else "stopped"
        return (f"<SpanRecorder {state} spans={len(self._ended)} running={len(self._running)} "
                f"recorded={self.recorded} capacity={self.capacity}>")


def waterfall(spans: Iterable[SpanRecord]) -> list[WaterfallRow]:
    """``spans`` of one trace in waterfall order (depth first, siblings by start time)."""
    spans = sorted(spans, key=lambda s: (s.start, s.span_id))
    ids = {s.span_id for s in spans}
    children: dict[str, list[SpanRecord]] = {}
    roots = []
    for span in spans:
        if span.parent_id and span.parent_id in ids and span.parent_id != span.span_id:
            children.setdefault(span.parent_id, []).append(span)
        else:
            roots.append(span)
    rows: list[WaterfallRow] = []
    seen: set[str] = set()
    stack = [(span, 0, "") for span in reversed(roots)]
    while stack:
        span, depth, inherited = stack.pop()
        if span.span_id in seen:
            continue
        seen.add(span.span_id)
        who = _who(span, inherited)
        rows.append(WaterfallRow(span, depth, who))
        for child in reversed(children.get(span.span_id, ())):
            stack.append((child, depth + 1, who))
    return rows


def _who(span: SpanRecord, inherited: str) -> str:
    """Whose work a span is: the agent instance on a delivery's span; a message received
    elsewhere (a consumer span without one) is nobody's we know; otherwise its parent's; a
    root delegation is its requester's (the board's)."""
    own = span.instance
    if own:
        return own
    if span.kind == "consumer":
        return str(span.attributes.get("messaging.consumer.group.name", "")) or span.service
    if inherited:
        return inherited
    return str(span.attributes.get("agentlab.task.requested_by", "")) or span.service


# -- one line in a notebook ------------------------------------------------------------------
_installed: SpanRecorder | None = None   # the recorder record_spans() last enabled
_install_lock = threading.Lock()


def record_spans(capacity: int = 2_000) -> SpanRecorder:
    """Turn tracing on in this process and keep the latest ``capacity`` spans in a
    :class:`SpanRecorder`, which it returns (see the module docstring for what it installs).

        recorder = record_spans()
        org.assign("Open an office")
        recorder.trace()         # the goal's waterfall
        recorder.stop()          # tracing off again (if this call turned it on)
    """
    global _installed
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError as missing:
        raise OtelExtraMissing() from missing
    recorder = SpanRecorder(capacity)
    processor: Any = recorder  # an SDK SpanProcessor by its methods, not by its base class
    current = otel_trace.get_tracer_provider()
    with _install_lock:
        if isinstance(current, TracerProvider):  # the application's: add to it, replace none
            current.add_span_processor(processor)
        else:
            provider = TracerProvider(resource=Resource.create())
            provider.add_span_processor(processor)
            previous, _installed = _installed, recorder
            if previous is not None:
                previous.recording = False
                previous._enabled = None
            recorder._enabled = provider
            telemetry.enable(provider)
    if not telemetry.tracing_enabled():
        log.warning("record_spans(): tracing is off (AGENTLAB_TRACING=off, or "
                    "telemetry.disable() was called), so no spans will be recorded")
    return recorder
