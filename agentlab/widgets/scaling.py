"""A live view of an autoscaler: the queue's lag, the replicas running and wanted, and each
decision, over time.

    scaler = org.autoscale("cto", lag_threshold=10, max_replicas=5)
    ScalingView(scaler)                   # live in Jupyter; static HTML where no kernel runs
    HTML(scaling_html(scaler))            # the same picture, once, without a widget

The view reads the autoscaler's history (:class:`agentlab.org.autoscale.ScalingDecision`,
one per tick); it never talks to NATS. The chart shows the last ``window`` seconds: the lag
(num_pending + num_ack_pending, left axis) as a filled line, the replicas running (solid) and
wanted (dashed) as steps on the right axis, and a marker at every tick that scaled, coloured
by its action, with the count it moved to. Below it: where the role stands now and the
latest decisions as a table (the autoscaler's own).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from html import escape
from typing import Any

from ..org.autoscale import Autoscaler, ScalingDecision
from .views import _LiveView

__all__ = ["ACTION_COLOURS", "ScalingView", "scaling_html", "scaling_svg"]

ACTION_COLOURS = {  # action -> (colour, what the legend calls it)
    "activate": ("#16a34a", "activate (from zero)"),
    "scale_up": ("#2563eb", "scale up"),
    "scale_down": ("#d97706", "scale down"),
    "scale_to_zero": ("#dc2626", "scale to zero (after the cooldown)"),
    "error": ("#64748b", "lag unreadable / scale_to failed"),
}
LAG, RUNNING, WANTED = "#0ea5e9", "#16a34a", "#7c3aed"
WIDTH, HEIGHT = 930, 230
LEFT, RIGHT, TOP, BOTTOM = 52, 44, 16, 30  # the plot's margins inside the SVG
WINDOW = 120.0


def _nice_top(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten at or above ``value`` (at least 1)."""
    if value <= 1:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return float(step * power)
    return float(10 * power)


def _seconds(at: datetime, end: datetime) -> float:
    return (at - end).total_seconds()


def scaling_svg(history: Sequence[ScalingDecision], *, window: float = WINDOW,
                max_replicas: int | None = None, width: int = WIDTH,
                height: int = HEIGHT) -> str:
    """The chart of ``history`` (oldest first) over its last ``window`` seconds, as SVG."""
    parts = [f"<svg class='al-scaling' xmlns='http://www.w3.org/2000/svg' width='{width}' "
             f"height='{height}' viewBox='0 0 {width} {height}' "
             "font-family='system-ui, -apple-system, Segoe UI, sans-serif' font-size='11'>"]
    plot_w, plot_h = width - LEFT - RIGHT, height - TOP - BOTTOM
    parts.append(f"<rect x='{LEFT}' y='{TOP}' width='{plot_w}' height='{plot_h}' "
                 "fill='#f8fafc' stroke='#cbd5e1'/>")
    if not history:
        parts.append(f"<text x='{LEFT + 12}' y='{TOP + 24}' fill='#64748b'>No tick yet: the "
                     "autoscaler reads the lag every interval; the first one shows here."
                     "</text></svg>")
        return "".join(parts)
    end = history[-1].at
    shown = [d for d in history if _seconds(d.at, end) >= -window]
    span = max(window if len(shown) < len(history) else -_seconds(shown[0].at, end), 1.0)
    lag_step = _nice_top(max((d.lag or 0) for d in shown) / 4)  # four round steps
    lag_top = lag_step * max(1, math.ceil(max((d.lag or 0) for d in shown) / lag_step))
    rep_top = float(max(1, max_replicas or 0, *(max(d.running, d.wanted) for d in shown)))

    def x(d: ScalingDecision) -> float:
        return LEFT + plot_w * (1 + _seconds(d.at, end) / span)

    def y_lag(value: float) -> float:
        return TOP + plot_h * (1 - value / lag_top)

    def y_rep(value: float) -> float:
        return TOP + plot_h * (1 - value / rep_top)

    # Axes: lag on the left, replicas on the right, seconds before the latest tick below.
    for i in range(int(round(lag_top / lag_step)) + 1):
        value = lag_step * i
        yy = y_lag(value)
        parts.append(f"<line x1='{LEFT}' y1='{yy:.1f}' x2='{LEFT + plot_w}' y2='{yy:.1f}' "
                     "stroke='#e2e8f0'/>")
        parts.append(f"<text x='{LEFT - 6}' y='{yy + 4:.1f}' text-anchor='end' "
                     f"fill='{LAG}'>{value:,.0f}</text>")
    for n in range(int(rep_top) + 1):
        if rep_top > 10 and n % math.ceil(rep_top / 10):
            continue
        parts.append(f"<text x='{LEFT + plot_w + 6}' y='{y_rep(n) + 4:.1f}' "
                     f"fill='{RUNNING}'>{n}</text>")
    for i in range(5):
        ago = span * (4 - i) / 4
        xx = LEFT + plot_w * i / 4
        parts.append(f"<text x='{xx:.1f}' y='{TOP + plot_h + 16}' text-anchor='middle' "
                     f"fill='#64748b'>{'now' if ago == 0 else f'-{ago:.0f}s'}</text>")
    parts.append(f"<text x='{LEFT - 44}' y='{TOP + 10}' fill='{LAG}' font-weight='600'>lag"
                 "</text>")
    parts.append(f"<text x='{width - 2}' y='{TOP - 3}' text-anchor='end' fill='{RUNNING}' "
                 "font-weight='600'>replicas</text>")

    # The lag: a filled line over the ticks that could read it.
    read = [d for d in shown if d.lag is not None]
    if read:
        points = " ".join(f"{x(d):.1f},{y_lag(d.lag or 0):.1f}" for d in read)
        base = TOP + plot_h
        parts.append(f"<polygon points='{x(read[0]):.1f},{base} {points} {x(read[-1]):.1f},"
                     f"{base}' fill='{LAG}' fill-opacity='0.15'/>")
        parts.append(f"<polyline points='{points}' fill='none' stroke='{LAG}' "
                     "stroke-width='1.5'/>")

    # Replicas: steps, running solid and wanted dashed (wanted is what each tick asked for).
    for attr, colour, dash in (("wanted", WANTED, " stroke-dasharray='5 3'"),
                               ("running", RUNNING, "")):
        steps: list[str] = []
        before: float | None = None
        for d in shown:
            level = y_rep(d.wanted if attr == "wanted" else d.running)
            if before is not None:
                steps.append(f"{x(d):.1f},{before:.1f}")  # hold until this tick, then step
            steps.append(f"{x(d):.1f},{level:.1f}")
            before = level
        parts.append(f"<polyline points='{' '.join(steps)}' fill='none' stroke='{colour}' "
                     f"stroke-width='2'{dash}/>")

    # Each decision that scaled (or failed): a marker and the count it moved to.
    for d in shown:
        if d.action == "hold":
            continue
        colour, _ = ACTION_COLOURS.get(d.action, ("#64748b", d.action))
        cx, cy = x(d), y_rep(d.wanted)
        label = "✖" if d.action == "error" else f"{d.running}→{d.wanted}"
        parts.append(f"<g><title>{escape(d.at.strftime('%H:%M:%S'))} {escape(d.action)}: "
                     f"{escape(d.reason)}</title><circle cx='{cx:.1f}' cy='{cy:.1f}' r='5' "
                     f"fill='{colour}' stroke='white'/><text x='{cx + 7:.1f}' "
                     f"y='{max(TOP + 10, cy - 6):.1f}' fill='{colour}' font-weight='600'>"
                     f"{escape(label)}</text></g>")
    parts.append("</svg>")
    return "".join(parts)


def _legend() -> str:
    items = [(LAG, "lag (pending + ack pending)", "line"), (RUNNING, "replicas running", "line"),
             (WANTED, "replicas wanted", "dash")]
    items += [(c, text, "dot") for c, text in ACTION_COLOURS.values()]
    out = []
    for colour, text, kind in items:
        mark = (f"<span style='display:inline-block;width:9px;height:9px;border-radius:50%;"
                f"background:{colour}'></span>" if kind == "dot" else
                f"<span style='display:inline-block;width:16px;border-top:2px "
                f"{'dashed' if kind == 'dash' else 'solid'} {colour};vertical-align:middle'>"
                "</span>")
        out.append(f"<span style='margin-right:12px;white-space:nowrap'>{mark} "
                   f"{escape(text)}</span>")
    return "<div style='font-size:11px;color:#475569;margin:4px 0'>" + "".join(out) + "</div>"


def _now(history: Sequence[ScalingDecision]) -> str:
    if not history:
        return "no tick yet"
    d = history[-1]
    lag = "?" if d.lag is None else f"{d.lag:,}"
    return (f"now: lag <b>{lag}</b>, running <b>{d.running}</b>, wanted <b>{d.wanted}</b> · "
            f"{escape(d.action)}: {escape(d.reason)}")


def scaling_html(scaler: Autoscaler, *, window: float = WINDOW) -> str:
    """The ScalingView's picture of ``scaler``, once: title, chart, legend, where it stands,
    the latest decisions. Static HTML: display it anywhere (``IPython.display.HTML``)."""
    history = scaler.history
    return ("<div class='al-view agentlab-scaling' style='font-family:system-ui, sans-serif'>"
            f"<h3 style='margin:4px 0'>{escape(scaler.title)}</h3>"
            f"{scaling_svg(history, window=window, max_replicas=scaler.max_replicas)}"
            f"{_legend()}<div style='font-size:12px;margin:4px 0'>{_now(history)}</div>"
            f"{scaler._repr_html_()}</div>")


class ScalingView(_LiveView):
    """Lag, replicas running and wanted, and each decision of ``scaler`` over the last
    ``window`` seconds, redrawn as ticks arrive (at most twice a second). Displayed where no
    kernel runs, it shows the same picture as static HTML."""

    min_interval = 0.5

    def __init__(self, scaler: Autoscaler, *, window: float = WINDOW, **kwargs: Any):
        self._closed = True  # until it is made: a refused one is collected quietly
        if not isinstance(scaler, Autoscaler):
            raise TypeError(f"ScalingView shows an Autoscaler (org.autoscale(role) returns "
                            f"one), not {type(scaler).__name__}")
        if not window > 0:
            raise ValueError(f"window={window!r}: the seconds of history to show; use a "
                             "positive number, e.g. 120")
        self.scaler, self.window = scaler, float(window)
        super().__init__(**kwargs)

    def _key(self) -> Any:
        history = self.scaler.history
        return len(history), history[-1].at if history else None, self.scaler.service_state

    def render(self) -> str:
        return scaling_html(self.scaler, window=self.window)
