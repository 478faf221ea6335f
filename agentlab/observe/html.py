"""Python-rendered HTML of the snapshots: what the widgets show, and ``_repr_html_``.

    HTML(streams_html(observer.state()))         # static output, no widget needed

Column names are the nats CLI's where it has one (``nats stream report``, ``nats consumer
report``); every header has a tooltip saying what it means. The Streams and Consumers tables
take their columns from the reports' spec (:mod:`.columns`), as the terminal's do.
"""

from __future__ import annotations

import time
from html import escape

from ..reports.render import html_table
from .columns import consumer_columns, marker, stream_columns
from .palette import KIND_STYLE, colour, kind_of, trace_colour
from .snapshots import FlowSnapshot, StateSnapshot, TopologySnapshot
from .svg import sequence_svg, topology_svg

STYLE = """<style>
/* views size to their content; wide ones scroll */
.al-view{display:inline-block;max-width:100%;overflow-x:auto;box-sizing:border-box;
 font-family:system-ui,-apple-system,'Segoe UI',sans-serif;font-size:12px;
 color:#1e293b;background:#fff;padding:6px 8px;border:1px solid #e2e8f0;border-radius:6px}
.al-view h3{font-size:14px;margin:2px 0 2px 0;color:#0f172a}
.al-view .al-why{color:#64748b;margin:0 0 6px 0}
.al-view table{border-collapse:collapse;margin:0}
.al-view th{background:#f1f5f9;color:#334155;font-weight:600;padding:3px 8px;
 border-bottom:1px solid #cbd5e1;text-align:left;cursor:help;max-width:96px;
 vertical-align:bottom}
.al-view td{padding:2px 8px;border-bottom:1px solid #f1f5f9;white-space:nowrap}
.al-view td.n,.al-view th.n{text-align:right;font-variant-numeric:tabular-nums}
.al-view .al-chg{animation:al-flash 1.6s ease-out;background:#fef9c3}
@keyframes al-flash{from{background:#facc15}to{background:#fef9c3}}
.al-view .al-up{color:#15803d;font-size:10px;margin-left:3px}
.al-view .al-down{color:#b91c1c;font-size:10px;margin-left:3px}
.al-view .al-badge{display:inline-block;border-radius:3px;padding:0 5px;color:#fff;
 font-size:11px}
.al-view .al-legend span{margin-right:12px;white-space:nowrap}
.al-view .al-sw{display:inline-block;width:18px;height:3px;vertical-align:middle;
 margin-right:4px}
.al-view .al-meta{color:#475569;margin:2px 0 4px 0}
.al-view code{font-size:11px;color:#0f172a}
.al-view .al-warn{color:#b91c1c}
</style>"""


def _view(title: str, why: str, body: str, meta: str = "") -> str:
    meta_html = f"<div class='al-meta'>{meta}</div>" if meta else ""
    return (f"{STYLE}<div class='al-view'><h3>{escape(title)}</h3><p class='al-why'>"
            f"{escape(why)}</p>{meta_html}{body}</div>")


def _polled(state: StateSnapshot) -> str:
    if not state.taken_at:
        return "not polled yet"
    text = (f"polled {time.strftime('%H:%M:%S', time.localtime(state.taken_at))} "
            f"(poll #{state.polls}); <span class='al-chg'>highlighted</span> = changed "
            "since the poll before")
    if state.error:
        text += f" · <span class='al-warn'>last poll failed: {escape(state.error)}</span>"
    return text


def streams_html(state: StateSnapshot) -> str:
    body = html_table(stream_columns(state), state.streams.rows if state.streams else (),
                      css_class="al-streams", mark=marker(state), empty="no streams")
    return _view("Streams", "Where JetStream stores messages. One row per stream, as "
                 "`nats stream report` shows them.", body, _polled(state))


def consumers_html(state: StateSnapshot) -> str:
    body = html_table(consumer_columns(state), state.consumer_rows(), css_class="al-consumers",
                      mark=marker(state), empty="no consumers yet")
    return _view("Consumers", "Who reads each stream, and how far behind they are. "
                 "Unprocessed + Ack Pending = the work still to do.", body, _polled(state))


def legend_html() -> str:
    items = []
    for kind, (fill, _, meaning) in KIND_STYLE.items():
        dash = "background:repeating-linear-gradient(90deg,{0} 0 4px,transparent 4px 7px)" \
            if kind in ("ack", "nak", "term", "progress") else "background:{0}"
        items.append(f"<span title='{escape(meaning)}'><i class='al-sw' style='"
                     f"{dash.format(fill)}'></i>{escape(meaning.split(':')[0])}</span>")
    items.append("<span title='Messages of one task share a trace id (traceparent or "
                 "correlation id) and its colour'>● trace id</span>")
    return "<div class='al-legend'>" + "".join(items) + "</div>"


def tail_html(flow: FlowSnapshot, rows: int = 12) -> str:
    out = []
    for event in reversed(flow.events[-rows:]):
        kind = kind_of(event)
        when = time.strftime("%H:%M:%S", time.localtime(event.time)) + \
            f".{int(event.time % 1 * 1000):03d}"
        who = f"{escape(event.sender or '?')} → {escape(event.receiver or event.consumer or '?')}"
        out.append(
            f"<tr><td>{when}</td><td><span class='al-badge' style='background:"
            f"{colour(kind)}'>{escape(kind.replace('_', ' '))}</span></td><td>{who}</td>"
            f"<td><code>{escape(event.subject)}</code></td><td>{escape(event.type)}</td>"
            f"<td>{escape(event.title[:60])}</td><td class='n'>{event.size:,} B</td>"
            f"<td><code style='color:{trace_colour(event.trace_id)}'>"
            f"{escape(event.trace_id[:8])}</code></td></tr>")
    head = "".join(f"<th>{h}</th>" for h in ("time", "what", "from → to", "subject", "type",
                                             "title", "size", "trace"))
    return (f"<table class='al-tail'><thead><tr>{head}</tr></thead><tbody>"
            f"{''.join(out) or '<tr><td colspan=8>nothing recorded yet</td></tr>'}"
            "</tbody></table>")


def flow_meta(flow: FlowSnapshot, paused: bool = False) -> str:
    state = "<b class='al-warn'>paused</b> · " if paused else ""
    kinds = ", ".join(f"{k.replace('_', ' ')} {n:,}" for k, n in sorted(flow.kinds.items()))
    dropped = f" · <span class='al-warn'>dropped {flow.dropped:,}</span>" if flow.dropped else ""
    trace = ""
    if flow.trace:  # coloured as its events are (the filter may be the id's first characters)
        whole = flow.events[0].trace_id if flow.events else flow.trace
        trace = (f"trace <code style='color:{trace_colour(whole)}'>{escape(flow.trace)}</code> "
                 "only · ")
    return (f"{state}filter <code>{escape(flow.pattern)}</code> · {trace}"
            f"{flow.rate:,.0f} events/s · "
            f"recorded {flow.recorded:,} (buffer keeps the last {flow.capacity:,}) · "
            f"{kinds}{dropped}")


def flow_html(flow: FlowSnapshot, paused: bool = False, tail_rows: int = 12) -> str:
    body = (legend_html() + f"<div style='overflow-x:auto'>{sequence_svg(flow)}</div>"
            f"<h3 style='margin-top:8px'>Tail (newest first)</h3>{tail_html(flow, tail_rows)}")
    return _view("Message flow", "Each arrow is one message: publishes into streams, "
                 "deliveries to agents, and their acks, naks and dead letters. "
                 "Hover an arrow for its details.", body, flow_meta(flow, paused))


def topology_html(topology: TopologySnapshot) -> str:
    return _view("Topology", "Who publishes on which subjects, which streams store them, "
                 "and who receives them; numbers count the messages seen on each edge.",
                 f"<div style='overflow-x:auto'>{topology_svg(topology)}</div>"
                 + _services_html(topology.services))


def _services_html(services: tuple[tuple[str, str, str], ...]) -> str:
    if not services:
        return ""
    items = "".join(
        f"<li><code>{escape(name)}</code> {escape(instance)}"
        + (f" <span style='color:#6b7280'>({escape(org)})</span>" if org else "") + "</li>"
        for org, name, instance in services)
    return ("<div style='margin-top:6px'><b>Services</b> <span style='color:#6b7280'>"
            "(answering $SRV.PING, as <code>nats micro ls</code> lists them)</span>"
            f"<ul style='margin:2px 0 0 0'>{items}</ul></div>")
