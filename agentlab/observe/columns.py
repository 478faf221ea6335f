"""The columns of the observer's live Streams and Consumers views, for the terminal
(:mod:`.terminal`) and HTML (:mod:`.html`) alike.

    rich_table("Streams", stream_columns(state), state.streams.rows, mark=marker(state))

They come from the reports' one column spec (:mod:`agentlab.reports.columns`); only acks per
second is the observer's own, since only its taps see the acks.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from ..reports import columns as spec
from ..reports.columns import Column
from ..reports.render import Mark
from .svg import sparkline_svg

if TYPE_CHECKING:
    from .snapshots import StateSnapshot

__all__ = ["consumer_columns", "marker", "row_key", "sparkline", "stream_columns"]

BARS = " ▁▂▃▄▅▆▇█"


def sparkline(values: tuple[int, ...], width: int = 20) -> str:
    values = values[-width:] or (0,)
    top = max(values) or 1
    return "".join(BARS[round(v / top * (len(BARS) - 1))] for v in values)


def row_key(row: Any) -> str:
    """How ``StateSnapshot.changed`` names a row: a stream, or ``stream/consumer``."""
    stream = getattr(row, "stream", None)
    return row.name if stream is None else f"{stream}/{row.name}"


def stream_columns(state: StateSnapshot) -> tuple[Column[Any], ...]:
    return spec.pick(spec.STREAM_COLUMNS, spec.LIVE_STREAM_COLUMNS)


def consumer_columns(state: StateSnapshot) -> tuple[Column[Any], ...]:
    def rate(row: Any) -> tuple[int, ...]:
        return tuple(state.rates.get((row.stream, row.name), ()))

    def last(row: Any) -> int:
        values = rate(row)
        return values[-1] if values else 0

    acks = Column("Acks/s (60 s)", rate,
                  cell=lambda row: f"{sparkline(rate(row))} {last(row)}/s",
                  html=lambda row: f"{sparkline_svg(rate(row))} <b>{last(row)}</b>/s",
                  tip="Acks per second over the last minute, seen by the observer")
    def named(row: Any) -> str:
        owner = state.owners.get(row.name)
        return f"{owner} ({row.name})" if owner else row.name

    columns = tuple(
        dataclasses.replace(column, get=named, tip="Durable name (an agent role shares one "
                            "per role); an ephemeral consumer shows its participant, the "
                            "connection that created it, before the name the server gave it")
        if column.header == "Consumer" else column
        for column in spec.pick(spec.CONSUMER_COLUMNS, spec.LIVE_CONSUMER_COLUMNS))
    return columns + (acks,)


def marker(state: StateSnapshot) -> Mark:
    """The cells of ``state`` that changed since the poll before, for the renderers."""
    def mark(row: Any, column: Column[Any]) -> int | None:
        key = (row_key(row), column.header)
        if key not in state.changed:
            return None
        return state.deltas.get(key) or 0
    return mark
