"""A traced message (:mod:`agentlab.core.msgtrace`) as a table of its hops and a diagram.

    view = trace_message(lab, "genbrain.agents.cto.tasks", {"title": "ship it"})
    view                       # Jupyter: the diagram (SVG) over the table; a terminal: text
    print(view.to_mermaid())   # the same diagram for any Markdown that renders Mermaid
    view.trace.ingress         # the data: agentlab.core.msgtrace.MessageTrace

One row per thing a server did with the message, in the order it reported them, and after a
stream's row one per consumer of that stream that takes the subject (read from the consumer's
info: the servers' trace ends at the stream).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from ..core.client import Client
from ..core.msgtrace import ConsumerHop, MessageTrace, ServerTrace, TraceEvent
from ..core.msgtrace import atrace_message as _atrace
from ..core.msgtrace import trace_message as _trace
from .columns import Column
from .render import TableView, format_duration

__all__ = ["TRACE_COLUMNS", "MessageTraceView", "TraceRow", "atrace_message", "trace_message"]


@dataclass(frozen=True)
class TraceRow:
    """One hop of the message: a server's trace event, or a consumer of a stream."""

    server: str
    step: str        # ingress, subject mapping, stream export, service import, jetstream,
    via: str         # egress (a consumer's row: egress too, via "pull consumer"...)
    name: str
    subject: str
    detail: str
    after: float | None  # seconds since the message entered the first server
    error: str = ""


def _after(seconds: float | None) -> str:
    return "" if seconds is None else "+" + (format_duration(seconds) or "0µs")


TRACE_COLUMNS: tuple[Column[TraceRow], ...] = (
    Column("Server", "server", tip="The server that reported this step (and its hop id)"),
    Column("Step", "step", bold=True, tip="ingress: how it entered; jetstream: the stream "
                                          "that stored it; egress: a connection or consumer "
                                          "it left by"),
    Column("Via", "via", tip="The kind of connection, or of consumer"),
    Column("Name", "name", tip="The connection's name, the stream's or the consumer's"),
    Column("Subject", "subject", code=True,
           tip="Published on; stored as; the subscription or the filter it matched"),
    Column("Detail", "detail"),
    Column("After", "after", _after, numeric=True,
           tip="Time since the message entered the first server"),
    Column("Error", "error", warn=lambda row: bool(row.error),
           tip="Why a server did not deliver it"),
)


def _delivery(hop: ConsumerHop) -> str:
    if hop.delivered is None:
        return "would deliver it (traced only, nothing stored)"
    if hop.acked:
        return "delivered and acknowledged"
    if hop.delivered:
        return "delivered, waiting for its ack"
    return (f"not delivered yet: {hop.num_pending} pending, "
            f"{hop.num_waiting} pull request(s) waiting")


@dataclass(frozen=True, repr=False)
class MessageTraceView(TableView):
    """A :class:`MessageTrace` as a table (rich and HTML) and a diagram (SVG and Mermaid)."""

    trace: MessageTrace
    dim_columns: ClassVar[frozenset[str]] = frozenset({"After"})
    _rows: tuple[TraceRow, ...] = field(default=(), init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_rows", tuple(_rows(self.trace)))

    # -- the data, at hand ---------------------------------------------------------------
    @property
    def ingress(self) -> TraceEvent | None:
        return self.trace.ingress

    @property
    def jetstream(self) -> list[TraceEvent]:
        return self.trace.jetstream

    @property
    def egresses(self) -> list[TraceEvent]:
        return self.trace.egresses

    @property
    def consumers(self) -> tuple[ConsumerHop, ...]:
        return self.trace.consumers

    @property
    def rows(self) -> tuple[TraceRow, ...]:
        return self._rows

    def steps(self) -> list[str]:
        """Each row's step, in order: ``["ingress", "jetstream", "egress", ...]``."""
        return [row.step for row in self._rows]

    # -- the table -----------------------------------------------------------------------
    @property
    def title(self) -> str:
        how = "traced only, not delivered" if self.trace.trace_only else "delivered"
        return f"Trace of a message on {self.trace.subject} ({how})"

    def table_columns(self) -> tuple[Column[TraceRow], ...]:
        return TRACE_COLUMNS

    def table_rows(self) -> tuple[TraceRow, ...]:
        return self._rows

    # -- the diagram ---------------------------------------------------------------------
    def to_svg(self) -> str:
        return _svg(_tree(self.trace))

    def to_mermaid(self) -> str:
        return _mermaid(_tree(self.trace))

    def to_text_tree(self) -> str:
        return "\n".join(_text(_tree(self.trace)))

    def _repr_html_(self) -> str:
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self.trace.notes)
        return (f"<div class='al-msgtrace'>{self.to_svg()}{super()._repr_html_()}"
                + (f"<ul style='color:#475569'>{notes}</ul>" if notes else "") + "</div>")

    def __str__(self) -> str:
        parts = [self.to_text_tree(), "", super().__str__()]
        parts += [f"note: {n}" for n in self.trace.notes]
        return "\n".join(parts)


def trace_message(client: Client, subject: str, data: Any = b"", *,
                  headers: dict[str, str] | None = None, trace_only: bool = False,
                  timeout: float = 2.0, dest: str | None = None) -> MessageTraceView:
    """:func:`agentlab.core.msgtrace.trace_message`, as a view that shows itself."""
    return MessageTraceView(_trace(client, subject, data, headers=headers,
                                   trace_only=trace_only, timeout=timeout, dest=dest))


async def atrace_message(client: Client, subject: str, data: Any = b"", *,
                         headers: dict[str, str] | None = None, trace_only: bool = False,
                         timeout: float = 2.0, dest: str | None = None) -> MessageTraceView:
    return MessageTraceView(await _atrace(client, subject, data, headers=headers,
                                          trace_only=trace_only, timeout=timeout, dest=dest))


# -- rows -------------------------------------------------------------------------------------
def _server_label(server: ServerTrace) -> str:
    return f"{server.server} (hop {server.hop})" if server.hop else server.server


def _rows(trace: MessageTrace) -> list[TraceRow]:
    start = trace.ingress.timestamp if trace.ingress else None

    def after(stamp: datetime | None) -> float | None:
        return (stamp - start).total_seconds() if stamp and start else None

    rows: list[TraceRow] = []
    for server in trace.servers:
        label = _server_label(server)
        for event in server.events:
            rows.append(TraceRow(label, event.what, _via(event), _name(event), event.subject,
                                 _detail(event, trace), after(event.timestamp), event.error))
            if event.type == "js":
                rows += [TraceRow(label, "egress", f"{hop.mode} consumer", hop.name,
                                  ", ".join(hop.filters), _delivery(hop), None)
                         for hop in trace.consumers if hop.stream == event.name]
    return rows


def _via(event: TraceEvent) -> str:
    if event.type == "js":
        return "stream"
    if event.type in ("se", "si"):
        return "account"
    return event.kind


def _name(event: TraceEvent) -> str:
    if event.type in ("in", "eg") and not event.name and event.cid is not None:
        return f"cid {event.cid}"
    return event.name


def _detail(event: TraceEvent, trace: MessageTrace) -> str:
    if event.type == "in":
        return f"cid {event.cid}, account {event.account}"
    if event.type == "sm":
        return "the subject was mapped"
    if event.type in ("se", "si"):
        return f"into account {event.account}"
    if event.type == "js":
        if event.error:
            return "not stored"
        if event.no_interest:
            return "not stored: no consumer is interested"
        if trace.trace_only:
            return "not stored: traced only"
        receipt = trace.receipt
        if receipt is not None and receipt.stream == event.name:
            return f"stored as seq {receipt.seq}" + (" (a duplicate)" if receipt.duplicate
                                                    else "")
        return "stored"
    parts = [f"cid {event.cid}"] if event.cid is not None else []
    if event.queue:
        parts.append(f"queue {event.queue}")
    if event.account:
        parts.append(f"account {event.account}")
    if event.next_hop:
        parts.append(f"to the server at hop {event.next_hop}")
    return ", ".join(parts)


# -- the diagram's tree: publisher -> servers -> subscribers, streams -> consumers -------------
@dataclass
class _Node:
    label: str
    kind: str                       # client, server, stream, consumer, remote
    lines: list[str] = field(default_factory=list)
    error: bool = False
    children: list[tuple[str, _Node]] = field(default_factory=list)


def _tree(trace: MessageTrace) -> _Node:
    ingress = trace.ingress
    if ingress is None or not trace.servers:
        return _Node("no server reported", "server", list(trace.notes[:1]), error=True)
    publisher = _Node(f'client "{ingress.name}"' if ingress.name else _name(ingress), "client",
                      [f"account {ingress.account}"] if ingress.account else [])
    by_hop = {server.hop: server for server in trace.servers}
    publisher.children.append((ingress.subject, _server_node(trace.servers[0], trace, by_hop,
                                                             set())))
    return publisher


def _server_node(server: ServerTrace, trace: MessageTrace, by_hop: dict[str, ServerTrace],
                 seen: set[str]) -> _Node:
    seen.add(server.hop)
    node = _Node(f"server {server.server}", "server",
                 [f"hop {server.hop}"] if server.hop else [])
    for event in server.events:
        if event.type == "in" and event.error:
            node.error = True
            node.lines.append(event.error)
        elif event.type == "sm":
            node.lines.append(f"mapped to {event.subject}")
        elif event.type in ("se", "si"):
            node.lines.append(f"{event.what} to {event.account}: {event.subject}")
        elif event.type == "js":
            stream = _Node(f"stream {event.name}", "stream", [_detail(event, trace)],
                           error=bool(event.error))
            if event.error:
                stream.lines.append(event.error)
            for hop in trace.consumers:
                if hop.stream == event.name:
                    stream.children.append(("", _Node(f"{hop.mode} consumer {hop.name}",
                                                      "consumer", [_delivery(hop)])))
            node.children.append(("store", stream))
        elif event.type == "eg":
            remote = by_hop.get(event.next_hop) if event.next_hop else None
            if remote is not None and remote.hop not in seen:
                node.children.append((event.kind, _server_node(remote, trace, by_hop, seen)))
            elif event.kind == "client":
                lines = [f"sub {event.subject}"] + ([f"queue {event.queue}"] if event.queue
                                                    else [])
                if event.error:
                    lines.append(event.error)
                name = f'"{event.name}"' if event.name else _name(event)
                node.children.append(("deliver", _Node(f"client {name}", "client", lines,
                                                       error=bool(event.error))))
            else:
                node.children.append((event.kind, _Node(f"{event.kind} {_name(event)}",
                                                        "remote", ["did not report"],
                                                        error=bool(event.error))))
    return node


def _text(node: _Node, prefix: str = "", edge: str = "", last: bool = True,
          root: bool = True) -> list[str]:
    extra = f" ({'; '.join(node.lines)})" if node.lines else ""
    head = f"{node.label}{extra}" + (" [error]" if node.error else "")
    if root:
        out = [head]
        child_prefix = ""
    else:
        arrow = f"─{edge}─▶ " if edge else "─▶ "
        out = [f"{prefix}{'└' if last else '├'}{arrow}{head}"]
        child_prefix = prefix + ("    " if last else "│   ")
    for i, (label, child) in enumerate(node.children):
        out += _text(child, child_prefix, label, i == len(node.children) - 1, False)
    return out


_STYLE = {"client": ("#e0f2fe", "#0284c7"), "server": ("#f1f5f9", "#475569"),
          "stream": ("#fef3c7", "#d97706"), "consumer": ("#dcfce7", "#16a34a"),
          "remote": ("#ede9fe", "#7c3aed")}
_ERROR = ("#fee2e2", "#dc2626")
W, LINE, PAD, GAP, VGAP = 220, 14, 12, 70, 14
CHAR = 6.1


def _height(node: _Node) -> int:
    return 22 + LINE * len(node.lines)


def _fit(text: str, px: float = W - 12) -> str:
    room = max(3, int(px / CHAR))
    return text if len(text) <= room else text[: room - 1] + "…"


def _layout(node: _Node, depth: int, top: list[float],
            out: list[tuple[_Node, float, float, int]]) -> float:
    """Place ``node`` (x by depth, y below the nodes placed so far); its centre's y."""
    if not node.children:
        y = top[0]
        top[0] += _height(node) + VGAP
        centre = y + _height(node) / 2
    else:
        centres = [_layout(child, depth + 1, top, out) for _, child in node.children]
        centre = (centres[0] + centres[-1]) / 2
        # A parent taller than its children's span must not overlap what follows it.
        top[0] = max(top[0], centre + _height(node) / 2 + VGAP)
    out.append((node, PAD + depth * (W + GAP), centre - _height(node) / 2, depth))
    return centre


def _svg(root: _Node) -> str:
    placed: list[tuple[_Node, float, float, int]] = []
    _layout(root, 0, [float(PAD)], placed)
    where = {id(node): (x, y) for node, x, y, _ in placed}
    depth = max(d for *_, d in placed)
    width = int(2 * PAD + (depth + 1) * W + depth * GAP)
    height = int(max(y + _height(n) for n, _, y, _ in placed) + PAD)
    esc = html.escape
    parts = [f"<svg class='al-msgtrace-svg' xmlns='http://www.w3.org/2000/svg' "
             f"width='{width}' height='{height}' viewBox='0 0 {width} {height}' "
             "font-family='system-ui, -apple-system, Segoe UI, sans-serif' font-size='11'>",
             "<defs><marker id='al-trace-arrow' viewBox='0 0 10 10' refX='9' refY='5' "
             "markerWidth='7' markerHeight='7' orient='auto-start-reverse'>"
             "<path d='M0,0 L10,5 L0,10 z' fill='#64748b'/></marker></defs>"]
    for node, x, y, _ in placed:
        for label, child in node.children:
            cx, cy = where[id(child)]
            x1, y1 = x + W, y + _height(node) / 2
            x2, y2 = cx, cy + _height(child) / 2
            parts.append(f"<path d='M{x1:.0f},{y1:.0f} C{x1 + GAP / 2:.0f},{y1:.0f} "
                         f"{x2 - GAP / 2:.0f},{y2:.0f} {x2 - 2:.0f},{y2:.0f}' fill='none' "
                         "stroke='#64748b' stroke-width='1.2' "
                         "marker-end='url(#al-trace-arrow)'/>")
            if label:
                parts.append(f"<text x='{(x1 + x2) / 2:.0f}' y='{(y1 + y2) / 2 - 4:.0f}' "
                             f"text-anchor='middle' fill='#334155'>"
                             f"{esc(_fit(label, GAP + 40))}</text>")
    for node, x, y, _ in placed:
        fill, stroke = _ERROR if node.error else _STYLE.get(node.kind, _STYLE["server"])
        parts.append(f"<g><title>{esc(node.label)}"
                     f"{esc(chr(10).join([''] + node.lines))}</title>"
                     f"<rect x='{x:.0f}' y='{y:.0f}' width='{W}' height='{_height(node)}' "
                     f"rx='6' fill='{fill}' stroke='{stroke}'/>"
                     f"<text x='{x + 6:.0f}' y='{y + 15:.0f}' font-weight='600' "
                     f"fill='#0f172a'>{esc(_fit(node.label))}</text>")
        for i, line in enumerate(node.lines):
            parts.append(f"<text x='{x + 6:.0f}' y='{y + 15 + LINE * (i + 1):.0f}' "
                         f"fill='#475569'>{esc(_fit(line))}</text>")
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


def _mermaid(root: _Node) -> str:
    lines = ["flowchart LR"]
    ids: dict[int, str] = {}
    shapes = {"client": ('(["', '"])'), "stream": ('[("', '")]'),
              "consumer": ('[/"', '"/]'), "remote": ('{{"', '"}}')}

    def text(value: str) -> str:
        return value.replace('"', "#quot;")

    def visit(node: _Node) -> str:
        ident = ids.setdefault(id(node), f"n{len(ids)}")
        open_, close = shapes.get(node.kind, ('["', '"]'))
        body = "<br/>".join(text(t) for t in [node.label, *node.lines])
        lines.append(f"    {ident}{open_}{body}{close}")
        if node.error:
            lines.append(f"    style {ident} fill:#fee2e2,stroke:#dc2626")
        for label, child in node.children:
            child_id = visit(child)
            arrow = f' -->|"{text(label)}"| ' if label else " --> "
            lines.append(f"    {ident}{arrow}{child_id}")
        return ident

    visit(root)
    return "\n".join(lines) + "\n"
