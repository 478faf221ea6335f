"""Inline SVG: the sequence diagram of a FlowSnapshot, the topology graph, sparklines.

    svg = sequence_svg(observer.flow(limit=30))   # a string; put it in any HTML
"""

from __future__ import annotations

import math
import time
from html import escape

from .palette import (
    AGENT_FILL,
    KIND_STYLE,
    OTHER_FILL,
    STREAM_FILL,
    colour,
    is_stream,
    kind_of,
    trace_colour,
)
from .snapshots import COLUMNS, FlowSnapshot, TopologySnapshot

GUTTER, LANE, ROW, HEAD = 150, 170, 24, 52
FIT_WIDTH = 1120   # a JupyterLab output area at 1400 px; wider diagrams scroll
MAX_LANES = 8
CHAR = 6.1  # px per character at 11px sans-serif, roughly


def _fit(text: str, px: float) -> str:
    room = max(3, int(px / CHAR))
    return text if len(text) <= room else text[: room - 1] + "…"


def _markers() -> str:
    out = []
    for kind, (fill, _, _) in KIND_STYLE.items():
        out.append(f"<marker id='al-m-{kind}' viewBox='0 0 10 10' refX='9' refY='5' "
                   f"markerWidth='7' markerHeight='7' orient='auto-start-reverse'>"
                   f"<path d='M0,0 L10,5 L0,10 z' fill='{fill}'/></marker>")
    return "<defs>" + "".join(out) + "</defs>"


def sequence_svg(flow: FlowSnapshot, *, width: int | None = None) -> str:
    """One lifeline per agent and stream, one arrow per event, oldest at the top."""
    lanes = flow.lifelines()
    if len(lanes) > MAX_LANES:
        lanes = lanes[: MAX_LANES - 1] + ["(others)"]
    lane = max(110.0, min(LANE, (FIT_WIDTH - GUTTER) / max(1, len(lanes))))
    x = {name: GUTTER + lane * i + lane / 2 for i, name in enumerate(lanes)}
    events = flow.events
    total_w = width or int(GUTTER + lane * max(1, len(lanes)) + 10)
    height = HEAD + ROW * max(1, len(events)) + 14
    parts = [f"<svg class='al-seq' xmlns='http://www.w3.org/2000/svg' width='{total_w}' "
             f"height='{height}' viewBox='0 0 {total_w} {height}' "
             "font-family='system-ui, -apple-system, Segoe UI, sans-serif' font-size='11'>",
             _markers()]
    parts.append("<text x='8' y='18' font-weight='600' fill='#475569'>time · trace</text>")
    for name, cx in x.items():
        stream = is_stream(name)
        fill = STREAM_FILL if stream else OTHER_FILL if name in ("?", "(others)") else AGENT_FILL
        parts.append(f"<line x1='{cx}' y1='{HEAD - 8}' x2='{cx}' y2='{height - 4}' "
                     f"stroke='#cbd5e1' stroke-dasharray='{'6 3' if stream else '2 3'}'/>")
        parts.append(f"<rect x='{cx - lane / 2 + 8}' y='6' width='{lane - 16}' height='34' "
                     f"rx='{4 if stream else 12}' fill='{fill}' stroke='#94a3b8'/>")
        label = "unknown sender" if name == "?" else name
        role = _lifeline_kind(name, stream)
        parts.append(f"<text x='{cx}' y='{21}' text-anchor='middle' font-weight='600' "
                     f"fill='#1e293b'>{escape(_fit(label, lane - 24))}</text>")
        parts.append(f"<text x='{cx}' y='{34}' text-anchor='middle' fill='#64748b' "
                     f"font-size='10'>{role}</text>")
    if not events:
        parts.append(f"<text x='{GUTTER}' y='{HEAD + 16}' fill='#64748b'>No messages yet. "
                     "Publish a task (Dashboard ▸ publish task) and watch it flow.</text>")
    t0 = events[0].time if events else 0.0
    for i, event in enumerate(events):
        y = HEAD + ROW * i + ROW / 2 + 2
        kind = kind_of(event)
        c = colour(kind)
        tc = trace_colour(event.trace_id)
        parts.append(f"<text x='8' y='{y + 4}' fill='#64748b'>+{event.time - t0:6.2f}s</text>")
        if event.trace_id:
            parts.append(f"<circle cx='66' cy='{y}' r='5' fill='{tc}'/>"
                         f"<text x='75' y='{y + 4}' fill='{tc}' font-family='monospace'>"
                         f"{escape(event.trace_id[:8])}</text>")
        src = event.sender or "?"
        dst = event.receiver or event.consumer or "?"
        sx = x.get(src, x.get("(others)", GUTTER + lane / 2))
        dx = x.get(dst, x.get("(others)", sx))
        tip = escape(f"{event.kind} {event.subject} · {event.type} · {event.title} · "
                     f"trace {event.trace_id or '-'} · {event.size} B"
                     + (f" · {event.stream}#{event.stream_seq}" if event.stream_seq else "")
                     + (f" · delivery {event.deliveries}" if event.deliveries else ""))
        parts.append(f"<g><title>{tip}</title>")
        if event.kind == "advisory" or abs(dx - sx) < 1:
            cx = sx
            text = _fit(event.label(), lane * 2 - 20)
            w = min(lane * 2 - 10, len(text) * CHAR + 14)
            parts.append(f"<rect x='{cx - 6}' y='{y - 9}' width='{w}' height='17' rx='3' "
                         f"fill='#f5f3ff' stroke='{c}'/><text x='{cx}' y='{y + 4}' "
                         f"fill='{c}'>{escape(text)}</text></g>")
            continue
        dashed = " stroke-dasharray='4 3'" if event.kind in ("ack", "nak", "term",
                                                             "progress") else ""
        stroke = 2.4 if event.kind in ("dead_letter", "term") else 1.6
        end = dx - 4 if dx > sx else dx + 4
        parts.append(f"<line x1='{sx}' y1='{y}' x2='{end}' y2='{y}' stroke='{c}' "
                     f"stroke-width='{stroke}'{dashed} marker-end='url(#al-m-{kind})'/>")
        mid, span = (sx + dx) / 2, abs(dx - sx)
        label = _fit(event.label(), span - 8)
        parts.append(f"<text x='{mid}' y='{y - 4}' text-anchor='middle' fill='{c}' "
                     f"paint-order='stroke' stroke='white' stroke-width='3'>"
                     f"{escape(label)}</text></g>")
    parts.append("</svg>")
    return "".join(parts)


def _lifeline_kind(name: str, stream: bool) -> str:
    """What a lifeline stands for, under its name."""
    if stream:
        return "stream"
    if name in ("?", "(others)"):
        return ""
    if name.startswith("_INBOX."):
        return "requester (its reply inbox)"
    return "subject" if "." in name else "agent"


def topology_svg(topology: TopologySnapshot, *, width: int = 940) -> str:
    """Four columns: publishers → subjects → streams → receivers; edge labels count messages."""
    col_x = (10, 200, 610, 810)
    col_w = (120, 300, 160, 120)
    by_col = _ordered(topology)
    rows = max([len(v) for v in by_col.values()] + [1])
    gap = 34
    height = 40 + rows * gap + 10
    pos: dict[tuple[int, str], tuple[float, float]] = {}
    for column, names in by_col.items():
        offset = (rows - len(names)) * gap / 2
        for i, name in enumerate(names):
            pos[(column, name)] = (col_x[column], 40 + offset + i * gap)
    parts = [f"<svg class='al-topo' xmlns='http://www.w3.org/2000/svg' width='{width}' "
             f"height='{height}' viewBox='0 0 {width} {height}' font-size='11' "
             "font-family='system-ui, -apple-system, Segoe UI, sans-serif'>"]
    for column, title in enumerate(COLUMNS):
        parts.append(f"<text x='{col_x[column]}' y='16' font-weight='600' fill='#475569'>"
                     f"{title}</text>")
    if not topology.edges:
        parts.append("<text x='10' y='52' fill='#64748b'>Nothing observed yet.</text>")
    top = max([n for *_, n in topology.edges] + [1])
    labels: list[str] = []
    placed: list[tuple[float, float]] = []
    for a, b, n in topology.edges:
        if a not in pos or b not in pos:
            continue
        ax, ay = pos[a][0] + col_w[a[0]], pos[a][1] + 11
        bx, by = pos[b][0], pos[b][1] + 11
        c = "#16a34a" if a[0] == 2 else "#2563eb"
        w = 1 + 3 * math.log1p(n) / math.log1p(top)
        mx = (ax + bx) / 2
        parts.append(f"<path d='M{ax},{ay} C{mx},{ay} {mx},{by} {bx},{by}' fill='none' "
                     f"stroke='{c}' stroke-opacity='0.55' stroke-width='{w:.1f}'/>")
        # the count sits near the target end, moved along the edge until it overlaps none
        # (an edge that passes the streams column gets its count by the receiver)
        tries = (0.95, 0.9, 0.85) if b[0] - a[0] > 1 else (0.8, 0.65, 0.9, 0.5, 0.35, 0.72)
        for t in tries:
            lx, ly = _bezier(t, (ax, ay), (mx, ay), (mx, by), (bx, by))
            if all(abs(lx - px) > 22 or abs(ly - py) > 11 for px, py in placed):
                break
        placed.append((lx, ly))
        labels.append(f"<text x='{lx:.0f}' y='{ly + 4:.0f}' text-anchor='middle' "
                      f"fill='{c}' paint-order='stroke' stroke='white' stroke-width='3' "
                      f"font-weight='600'>{n:,}</text>")
    for (column, name), (nx, ny) in pos.items():
        fill = STREAM_FILL if column == 2 else "#f8fafc" if column == 1 else AGENT_FILL
        mono = " font-family='monospace'" if column == 1 else ""
        parts.append(f"<rect x='{nx}' y='{ny}' width='{col_w[column]}' height='22' "
                     f"rx='{4 if column != 0 and column != 3 else 11}' fill='{fill}' "
                     f"stroke='#94a3b8'/><text x='{nx + 8}' y='{ny + 15}'{mono} "
                     f"fill='#1e293b'>{escape(_fit(name, col_w[column] - 14))}</text>")
    parts.extend(labels)
    parts.append("</svg>")
    return "".join(parts)


def _bezier(t: float, *p: tuple[float, float]) -> tuple[float, float]:
    u = 1 - t
    k = (u ** 3, 3 * u * u * t, 3 * u * t * t, t ** 3)
    return (sum(c * q[0] for c, q in zip(k, p, strict=True)),
            sum(c * q[1] for c, q in zip(k, p, strict=True)))


def _ordered(topology: TopologySnapshot) -> dict[int, list[str]]:
    """Columns ordered to keep edges short: streams and receivers by name, subjects by
    where they lead, publishers by the subjects they feed."""
    by_col: dict[int, list[str]] = {c: [] for c in range(4)}
    for column, name in topology.nodes:
        by_col[column].append(name)
    for c in (2, 3):
        by_col[c].sort()
    rank = {n: i for i, n in enumerate(by_col[2])}
    rank.update({n: len(rank) + i for i, n in enumerate(by_col[3])})
    lead: dict[str, float] = {}
    for (ca, a), (_cb, b), _ in topology.edges:
        if ca == 1:
            lead[a] = min(lead.get(a, 1e9), rank.get(b, 1e9))
    by_col[1].sort(key=lambda n: (lead.get(n, 1e9), n))
    place = {n: i for i, n in enumerate(by_col[1])}
    feeds: dict[str, list[int]] = {}
    for (ca, a), (_cb, b), _ in topology.edges:
        if ca == 0 and b in place:
            feeds.setdefault(a, []).append(place[b])
    by_col[0].sort(key=lambda n: (sum(feeds.get(n, [0])) / max(1, len(feeds.get(n, []))), n))
    return by_col


def sparkline_svg(values: tuple[int, ...], *, width: int = 120, height: int = 22,
                  colour_: str = "#16a34a") -> str:
    """A tiny line of per-second counts, newest on the right, with the last value."""
    if not values:
        values = (0,)
    top = max(values) or 1
    step = width / max(1, len(values) - 1)
    points = " ".join(f"{i * step:.1f},{height - 2 - (v / top) * (height - 4):.1f}"
                      for i, v in enumerate(values))
    return (f"<svg width='{width}' height='{height}' class='al-spark'>"
            f"<title>acks per second over the last {len(values)} s (max {max(values)})"
            f"</title><polyline points='{points}' fill='none' stroke='{colour_}' "
            f"stroke-width='1.5'/></svg>")


def now() -> float:
    return time.time()
