"""The waterfall of one trace: HTML with an inline SVG (Jupyter, the TraceView) and a rich
table (terminals), from a :class:`~agentlab.observe.spans.TraceSnapshot`.

    HTML(trace_html(recorder.trace()))     # static output, no widget needed

One row per span, each under the span it is part of (indented), a bar from its start to its
end on a time axis the whole trace shares, who ran it and how long it took. Bars are
coloured as the message flow colours its arrows: publishes blue, deliveries (a span that
processes a message) green, acks grey, agentlab's own steps (a delegation, a tool call)
violet; a failed span is red and marked ✖, one still running is hatched.
"""

from __future__ import annotations

import math
import time
from html import escape
from typing import Any

from .html import _view
from .palette import colour, trace_colour
from .spans import TraceSnapshot, WaterfallRow

__all__ = ["KIND_COLOURS", "format_span_time", "trace_html", "trace_table", "waterfall_svg"]

ERROR = colour("term")
KIND_COLOURS = {  # span kind -> (bar colour, what the legend calls it)
    "producer": (colour("publish"), "publish (send a message)"),
    "consumer": (colour("deliver"), "process (a message received)"),
    "client": (colour("ack"), "ack / nak / term"),
    "internal": (colour("advisory"), "a step (delegate, tool call, saga)"),
    "server": ("#0891b2", "serve (answer a request)"),
}

NAME_W, WHO_W, BAR_W, DUR_W = 310, 74, 470, 70  # 930 px: a JupyterLab output's width
ROW, HEAD, INDENT, MAX_INDENT = 20, 34, 12, 10
CHAR = 6.1  # px per character at 11px sans-serif, roughly
MAX_ROWS = 80


def format_span_time(seconds: float | None) -> str:
    """``'850 µs'``, ``'12.4 ms'``, ``'1.25 s'``; "running" for None."""
    if seconds is None:
        return "running"
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms" if seconds < 0.01 else f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def _fit(text: str, px: float) -> str:
    room = max(3, int(px / CHAR))
    return text if len(text) <= room else text[: room - 1] + "…"


def _step(total: float) -> float:
    """A round tick step (1, 2 or 5 times a power of ten) giving about five ticks."""
    if total <= 0:
        return 1.0
    raw = total / 5
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def _tip(row: WaterfallRow, t0: float) -> str:
    span = row.span
    lines = [span.name, f"{span.kind} span, {format_span_time(span.duration)}, "
                        f"starts at +{format_span_time(span.start - t0)}"]
    if row.who:
        lines.append(f"by {row.who}" + (f" ({span.service})" if span.service else ""))
    if span.error:
        lines.append(f"FAILED: {span.error}")
    for key in ("messaging.destination.name", "messaging.consumer.group.name",
                "messaging.nats.stream", "messaging.nats.delivery_count",
                "messaging.message.id", "agentlab.task.title", "agentlab.task.id"):
        if key in span.attributes:
            lines.append(f"{key} = {span.attributes[key]}")
    lines.append(f"span {span.span_id} · parent {span.parent_id or '-'}")
    return escape("\n".join(lines))


def waterfall_svg(snapshot: TraceSnapshot, *, max_rows: int = MAX_ROWS) -> str:
    """The waterfall as an inline SVG: span · who · bars on a shared time axis · duration."""
    rows = snapshot.rows[:max_rows]
    bar_x = NAME_W + WHO_W
    width = bar_x + BAR_W + DUR_W + 8
    height = HEAD + ROW * max(1, len(rows)) + 8
    # max-width: narrower than that, it scales down rather than spill over the output area
    parts = [f"<svg class='al-waterfall' xmlns='http://www.w3.org/2000/svg' width='{width}' "
             f"height='{height}' viewBox='0 0 {width} {height}' font-size='11' "
             "style='max-width:100%;height:auto' "
             "font-family='system-ui, -apple-system, Segoe UI, sans-serif'>",
             "<defs><pattern id='al-running' width='6' height='6' patternUnits='userSpaceOnUse' "
             "patternTransform='rotate(45)'><rect width='3' height='6' fill='#94a3b8'/>"
             "</pattern></defs>"]
    for x, text, anchor in ((6, "span", "start"), (NAME_W + 4, "who", "start"),
                            (width - 8, "duration", "end")):
        parts.append(f"<text x='{x}' y='14' font-weight='600' fill='#475569' "
                     f"text-anchor='{anchor}'>{text}</text>")
    if not rows:
        parts.append(f"<text x='6' y='{HEAD + 14}' fill='#64748b'>No spans yet. Turn tracing "
                     "on (agentlab.observe.record_spans()) and assign a goal.</text></svg>")
        return "".join(parts)
    t0, total = snapshot.start, snapshot.duration or 1e-6
    scale = BAR_W / total
    step = _step(total)
    ticks = [i * step for i in range(int(total / step + 1e-9) + 1)]
    for tick in ticks:
        tx = bar_x + tick * scale
        anchor = "start" if tick == 0 else "end" if tx > bar_x + BAR_W - 28 else "middle"
        parts.append(f"<text x='{tx:.1f}' y='14' fill='#64748b' text-anchor='{anchor}'>"
                     f"{'0' if tick == 0 else format_span_time(tick)}</text>"
                     f"<line x1='{tx:.1f}' y1='{HEAD - 12}' x2='{tx:.1f}' y2='{height - 4}' "
                     "stroke='#e2e8f0'/>")
    parts.append(f"<line x1='{bar_x}' y1='{HEAD - 12}' x2='{bar_x + BAR_W}' y2='{HEAD - 12}' "
                 "stroke='#cbd5e1'/>")
    for i, row in enumerate(rows):
        span = row.span
        y = HEAD + ROW * i
        mid = y + ROW / 2 + 4
        if i % 2:
            parts.append(f"<rect x='0' y='{y}' width='{width}' height='{ROW}' fill='#f8fafc'/>")
        parts.append(f"<g class='al-span'><title>{_tip(row, t0)}</title>")
        indent = 6 + INDENT * min(row.depth, MAX_INDENT)
        fill = ERROR if span.failed else KIND_COLOURS.get(span.kind, ("#334155", ""))[0]
        if row.depth:
            parts.append(f"<path d='M{indent - 8},{y + 2} V{y + ROW / 2} H{indent - 2}' "
                         "fill='none' stroke='#cbd5e1'/>")
        mark = "✖ " if span.failed else ""
        name = _fit(mark + span.name, NAME_W - indent - 10)
        weight = " font-weight='600'" if span.kind == "consumer" or span.failed else ""
        parts.append(f"<text x='{indent}' y='{mid}' fill='{ERROR if span.failed else '#1e293b'}'"
                     f"{weight}>{escape(name)}</text>")
        parts.append(f"<text x='{NAME_W + 4}' y='{mid}' fill='#475569'>"
                     f"{escape(_fit(row.who, WHO_W - 8))}</text>")
        start = bar_x + (span.start - t0) * scale
        end = bar_x + ((span.end if span.end is not None else snapshot.end) - t0) * scale
        bar_w = max(2.0, end - start)
        start = min(start, bar_x + BAR_W - bar_w)
        if span.running:
            parts.append(f"<rect x='{start:.1f}' y='{y + 5}' width='{bar_w:.1f}' height='10' "
                         f"rx='2' fill='url(#al-running)' stroke='{fill}'/>")
        else:
            parts.append(f"<rect x='{start:.1f}' y='{y + 5}' width='{bar_w:.1f}' height='10' "
                         f"rx='2' fill='{fill}'/>")
        parts.append(f"<text x='{width - 8}' y='{mid}' text-anchor='end' "
                     f"fill='{ERROR if span.failed else '#334155'}' "
                     "font-variant-numeric='tabular-nums'>"
                     f"{escape(format_span_time(span.duration))}</text></g>")
    parts.append("</svg>")
    return "".join(parts)


def _legend() -> str:
    items = [f"<span><i class='al-sw' style='height:8px;background:{fill}'></i>"
             f"{escape(meaning)}</span>" for kind, (fill, meaning) in KIND_COLOURS.items()
             if kind != "server"]
    items.append(f"<span><i class='al-sw' style='height:8px;background:{ERROR}'></i>"
                 "✖ failed</span>")
    items.append("<span><i class='al-sw' style='height:8px;background:repeating-linear-"
                 "gradient(45deg,#94a3b8 0 2px,transparent 2px 4px)'></i>still running</span>")
    return "<div class='al-legend'>" + "".join(items) + "</div>"


def _meta(snapshot: TraceSnapshot) -> str:
    others = len(snapshot.traces) - (1 if snapshot.trace_id else 0)
    state = "" if snapshot.recording else "<b>recording stopped</b> · "
    buffer = (f"{snapshot.recorded:,} spans recorded (the buffer keeps the last "
              f"{snapshot.capacity:,}), {others:,} other trace{'s' if others != 1 else ''}")
    if not snapshot.rows:
        return state + buffer
    tc = trace_colour(snapshot.trace_id)
    failed = (f" · <span class='al-warn'>{snapshot.errors} failed</span>"
              if snapshot.errors else "")
    started = time.strftime("%H:%M:%S", time.localtime(snapshot.start))
    hidden = len(snapshot.rows) - MAX_ROWS
    more = f" · {hidden} more spans not drawn" if hidden > 0 else ""
    return (f"{state}trace <code style='color:{tc}'>{escape(snapshot.trace_id)}</code> · "
            f"{len(snapshot.rows)} spans{failed} · {format_span_time(snapshot.duration)} · "
            f"began {started}{more} · {buffer}")


def trace_html(snapshot: TraceSnapshot) -> str:
    body = _legend() + f"<div style='overflow-x:auto'>{waterfall_svg(snapshot)}</div>"
    return _view("Trace", "One goal's spans, each under the one it is part of: a bar from its "
                 "start to its end on the trace's time axis. Hover a row for its details.",
                 body, _meta(snapshot))


def trace_table(snapshot: TraceSnapshot) -> Any:
    """The waterfall for a terminal: a rich table with a text bar per span."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"Trace {snapshot.trace_id or '(none yet)'}: {len(snapshot.rows)} spans, "
                        f"{format_span_time(snapshot.duration)}", title_justify="left",
                  header_style="bold")
    for name in ("span", "who", "timeline", "duration"):
        table.add_column(name, no_wrap=True, justify="right" if name == "duration" else "left")
    t0, total, cells = snapshot.start, snapshot.duration or 1e-6, 32
    for row in snapshot.rows[:MAX_ROWS]:
        span = row.span
        first = int((span.start - t0) / total * cells)
        end = span.end if span.end is not None else snapshot.end
        length = max(1, round((end - span.start) / total * cells))
        first = min(first, cells - length)
        style = "red" if span.failed else "green" if span.kind == "consumer" else \
            "blue" if span.kind == "producer" else "grey50" if span.kind == "client" else "magenta"
        bar = Text(" " * first) + Text("█" * length, style=style)
        table.add_row(("  " * min(row.depth, MAX_INDENT)) + ("✖ " if span.failed else "")
                      + span.name, row.who, bar, format_span_time(span.duration))
    return table
