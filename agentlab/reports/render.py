"""How reports look: cells formatted as the nats CLI formats them, shown as a rich table in a
terminal and as an HTML table in Jupyter.

    format_bytes(1536)                            # '1.5 KiB', as `nats stream report` shows it
    rich.print(stream_report(client))             # any TableView renders itself
    Console(width=natural_width(table)).print(table)    # no cell wrapped or cut
    html_table(columns, rows)                     # the same table as rich_table(title, ...)

Snapshots (:mod:`agentlab.reports.report`) are plain data; everything here turns them into text
and never talks to NATS, so terminal and notebook views show the same snapshot the same way:
both tables are made from one list of columns (:mod:`agentlab.reports.columns`).
Formatting follows natscli's columns.F and HumanizeDuration (github.com/nats-io/natscli).
"""

from __future__ import annotations

import abc
import html
import io
import math
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from rich.table import Table
    from rich.text import Text

    from .columns import Column

__all__ = ["format_count", "format_bytes", "format_duration", "rich_table", "html_table",
           "TableView", "natural_width"]

# The observer's marks: None if a cell did not change since the poll before, else by how
# much (0: changed, nothing to subtract, as for a row that is new).
Mark = Callable[[Any, "Column[Any]"], "int | None"]


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


# -- tables -----------------------------------------------------------------------------------
def rich_table(title: str, columns: Sequence[Column[Any]], rows: Iterable[Any], *,
               dim: Collection[str] = (), mark: Mark | None = None) -> Table:
    """``rows`` as a rich Table of ``columns``; ``dim``: headers of columns shown dim,
    ``mark``: the observer's changed cells, shown bold yellow with their difference."""
    from rich.table import Table

    table = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        table.add_column(column.header, justify="right" if column.numeric else "left",
                         style="dim" if column.header in dim else None,
                         overflow="fold")  # never hide part of a name behind "…"
    for row in rows:
        table.add_row(*(_rich_cell(column, row, mark) for column in columns))
    return table


def _rich_cell(column: Column[Any], row: Any, mark: Mark | None) -> Text:
    from rich.text import Text

    text = column.text(row)
    styles = ["bold"] if column.bold else []
    if column.warn is not None and column.warn(row):
        styles.append("red")
    delta = mark(row, column) if mark is not None and column.watch else None
    if delta is not None:
        text += f" ({delta:+,})" if delta else ""
        styles = ["bold yellow"]
    return Text(text, style=" ".join(styles))  # Text: a "[" in a name is not rich markup


def html_table(columns: Sequence[Column[Any]], rows: Iterable[Any], *, title: str = "",
               css_class: str = "", dim: Collection[str] = (), mark: Mark | None = None,
               empty: str = "") -> str:
    """``rows`` as an HTML table of ``columns``, the same table :func:`rich_table` makes.

    Alignment and colours are inline, so that it reads right in any notebook; the classes
    (``n``, ``al-chg``, ``al-up``/``al-down``) are for the observer's stylesheet.
    """
    esc = html.escape
    head = "".join(
        f"<th{_html_attrs(column, dim)}{_tip(column)}>{esc(column.header)}</th>"
        for column in columns)
    body = "".join(
        "<tr>" + "".join(_html_cell(column, row, dim, mark) for column in columns) + "</tr>"
        for row in rows)
    if not body and empty:
        body = f"<tr><td colspan={len(columns)}>{esc(empty)}</td></tr>"
    caption = f"<caption style='text-align:left'><b>{esc(title)}</b></caption>" if title else ""
    table = f"<table class='{esc(css_class)}'>" if css_class else "<table>"
    return f"{table}{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _tip(column: Column[Any]) -> str:
    return f" title='{html.escape(column.tip)}'" if column.tip else ""


def _html_attrs(column: Column[Any], dim: Collection[str], classes: tuple[str, ...] = (),
                colour: str = "") -> str:
    if column.numeric:
        classes = ("n", *classes)
    style = f"text-align:{'right' if column.numeric else 'left'}"
    colour = colour or ("#64748b" if column.header in dim else "")
    if colour:
        style += f";color:{colour}"
    return (f" class='{' '.join(classes)}'" if classes else "") + f" style='{style}'"


def _html_cell(column: Column[Any], row: Any, dim: Collection[str], mark: Mark | None) -> str:
    if column.html is not None:
        body = column.html(row)
    else:
        body = "<br>".join(html.escape(line) for line in column.text(row).split("\n"))
        if column.code:
            body = f"<code>{body}</code>"
        if column.bold:
            body = f"<b>{body}</b>"
    classes: tuple[str, ...] = ()
    colour = ""
    if column.warn is not None and column.warn(row):
        classes, colour = ("al-warn",), "#b91c1c"
    delta = mark(row, column) if mark is not None and column.watch else None
    if delta is not None:
        classes += ("al-chg",)
        if delta:
            body += f"<span class='{'al-up' if delta > 0 else 'al-down'}'>{delta:+,}</span>"
    return f"<td{_html_attrs(column, dim, classes, colour)}>{body}</td>"


class TableView(abc.ABC):
    """Renders a snapshot as a rich Table for terminals and an HTML table for Jupyter, both
    from the one column spec (:mod:`agentlab.reports.columns`).

    A subclass names its ``title``, its columns in ``table_columns()`` and its rows in
    ``table_rows()``; ``dim_columns`` (headers) are shown dim.
    """

    dim_columns: ClassVar[frozenset[str]] = frozenset()

    @property
    @abc.abstractmethod
    def title(self) -> str:
        """The table's caption: a subclass sets it as a class attribute or a property."""

    @abc.abstractmethod
    def table_columns(self) -> tuple[Column[Any], ...]:
        """The columns shown, in order, from the report's one spec."""

    @abc.abstractmethod
    def table_rows(self) -> Sequence[Any]:
        """The rows, in order."""

    @property
    def columns(self) -> tuple[str, ...]:
        """The headers, in order."""
        return tuple(column.header for column in self.table_columns())

    def table_cells(self) -> list[tuple[str, ...]]:
        columns = self.table_columns()
        return [tuple(column.text(row) for column in columns) for row in self.table_rows()]

    def to_table(self) -> Table:
        return rich_table(self.title, self.table_columns(), self.table_rows(),
                          dim=self.dim_columns)

    def __rich__(self) -> Table:
        return self.to_table()

    def _repr_html_(self) -> str:
        return html_table(self.table_columns(), self.table_rows(), title=self.title,
                          dim=self.dim_columns)

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


class _Discard(io.StringIO):
    """A text file (what rich's Console takes) that keeps nothing written to it."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass
