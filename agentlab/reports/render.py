"""How reports look: cells formatted as the nats CLI formats them, shown as a rich table in a
terminal and as an HTML table in Jupyter.

    format_bytes(1536)                            # '1.5 KiB', as `nats stream report` shows it
    rich.print(stream_report(client))             # any TableView renders itself
    Console(width=natural_width(table)).print(table)    # no cell wrapped or cut

Snapshots (:mod:`agentlab.reports.report`) are plain data; everything here turns them into text
and never talks to NATS, so terminal and notebook views show the same snapshot the same way.
Formatting follows natscli's columns.F and HumanizeDuration (github.com/nats-io/natscli).
"""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from rich.table import Table

    from .report import ConsumerRow, StreamRow

__all__ = ["format_count", "format_bytes", "format_duration", "stream_cells", "consumer_cells",
           "TableView", "natural_width"]


# -- cells, as the nats CLI formats them ----------------------------------------------------
def format_count(value: int) -> str:
    """``1234567`` -> ``'1,234,567'`` (humanize.Comma)."""
    return f"{int(value):,}"


def format_bytes(value: int) -> str:
    """IEC sizes as humanize.IBytes writes them: ``'512 B'``, ``'1.5 KiB'``, ``'20 MiB'``."""
    value = int(value)
    if value < 10:
        return f"{value} B"
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    exponent = min(int(math.floor(math.log(value) / math.log(1024))), len(units) - 1)
    scaled = math.floor(value / 1024 ** exponent * 10 + 0.5) / 10
    return f"{scaled:.1f} {units[exponent]}" if scaled < 10 else f"{scaled:.0f} {units[exponent]}"


def format_duration(seconds: float | None) -> str:
    """The nats CLI's duration style: ``'250ms'``, ``'4.20s'``, ``'5m0s'``, ``'1h2m3s'``."""
    if seconds is None:
        return ""
    if seconds < 0.001:
        return f"{round(seconds * 1e6)}µs"
    if seconds < 1:
        return f"{round(seconds * 1e3)}ms"
    total = int(seconds)
    mins, hours, days = total // 60, total // 3600, total // 86400
    years = days // 365
    if years:
        return f"{years}y{days % 365}d{hours % 24}h{mins % 60}m{total % 60}s"
    if days:
        return f"{days}d{hours % 24}h{mins % 60}m{total % 60}s"
    if hours:
        return f"{hours}h{mins % 60}m{total % 60}s"
    if mins:
        return f"{mins}m{total % 60}s"
    return f"{seconds:.2f}s"


def stream_cells(row: StreamRow) -> tuple[str, ...]:
    """The text of each ``nats stream report`` column for one stream."""
    lost = "0"
    if row.lost_messages > 0:
        lost = f"{format_count(row.lost_messages)} ({format_bytes(row.lost_bytes)})"
    return (row.name, row.storage, row.placement, format_count(row.consumers),
            format_count(row.messages), format_bytes(row.bytes), lost,
            format_count(row.deleted), row.api_level, ", ".join(row.replicas))


def consumer_cells(row: ConsumerRow, extras: bool = False) -> tuple[str, ...]:
    """The text of each ``nats consumer report`` column for one consumer; with ``extras``,
    agentlab's "Oldest Unprocessed" after them."""
    unprocessed = "0"
    if row.unprocessed > 0:
        share = 100.0 if row.stream_messages <= 0 else \
            min(100.0, math.floor(row.unprocessed / row.stream_messages * 100))
        unprocessed = f"{format_count(row.unprocessed)} / {share:.0f}%"
    cells = (row.name, row.mode, row.ack_policy, format_duration(row.ack_wait),
             format_count(row.ack_pending), format_count(row.redelivered), unprocessed,
             format_count(row.ack_floor), row.api_level, ", ".join(row.cluster))
    if extras:
        cells += (format_duration(row.oldest_unprocessed_age),)
    return cells


# -- tables -----------------------------------------------------------------------------------
class TableView:
    """Renders a snapshot as a rich Table for terminals and an HTML table for Jupyter.

    A subclass names its ``title`` and ``columns`` and gives the text of each row in
    ``table_cells()``; ``numeric`` columns are right-aligned, ``dim_columns`` shown dim.
    """

    title: ClassVar[str]
    columns: ClassVar[tuple[str, ...]]
    numeric: ClassVar[frozenset[str]] = frozenset()
    dim_columns: ClassVar[frozenset[str]] = frozenset()

    def table_cells(self) -> list[tuple[str, ...]]:
        raise NotImplementedError

    def to_table(self) -> Table:
        from rich.table import Table

        table = Table(title=self.title, title_justify="left", header_style="bold")
        for name in self.columns:
            table.add_column(name, justify="right" if name in self.numeric else "left",
                             style="dim" if name in self.dim_columns else None,
                             overflow="fold")  # never hide part of a name behind "…"
        for cells in self.table_cells():
            table.add_row(*cells)
        return table

    def __rich__(self) -> Table:
        return self.to_table()

    def _repr_html_(self) -> str:
        esc = html.escape
        head = "".join(f"<th style='text-align:{self._align(c)}'>{esc(c)}</th>"
                       for c in self.columns)
        body = "".join(
            "<tr>" + "".join(f"<td style='text-align:{self._align(c)}'>{esc(v)}</td>"
                             for c, v in zip(self.columns, cells)) + "</tr>"
            for cells in self.table_cells())
        return (f"<table><caption style='text-align:left'><b>{esc(self.title)}</b></caption>"
                f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def _align(self, column: str) -> str:
        return "right" if column in self.numeric else "left"

    def __str__(self) -> str:
        from rich.console import Console

        table = self.to_table()
        # force_jupyter=False: in a kernel rich would also display the table itself, so a
        # report at the end of a cell would show twice (its text, then rich's own output).
        console = Console(width=natural_width(table), record=True, file=_Discard(),
                          color_system=None, force_jupyter=False)
        console.print(table)
        return console.export_text().rstrip("\n")

    def __repr__(self) -> str:
        # Where only text can be shown (a plain console, some notebook frontends) the
        # table reads better than a dump of the dataclass fields.
        return self.__str__()


def natural_width(table: Table) -> int:
    """The width at which ``table`` prints without wrapping or truncating a cell."""
    from rich.console import Console

    measuring = Console(width=10_000, file=_Discard(), force_jupyter=False)
    return measuring.measure(table).maximum


class _Discard:
    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass
