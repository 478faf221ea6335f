"""The one column spec of each report: every column a stream or consumer row can show, named
as ``nats stream report`` and ``nats consumer report`` name them, and which of them each view
shows, in which order.

    STREAM_COLUMNS["Bytes"].text(row)             # '1.5 KiB', as the nats CLI prints it
    pick(STREAM_COLUMNS, STREAM_REPORT_COLUMNS)   # the nats CLI's columns, in its order

Every view renders from here (:func:`agentlab.reports.render.rich_table` and ``html_table``):
the reports (``agentlab status``, ``_repr_html_``) and the observer's live Streams and
Consumers views, in a terminal and in Jupyter alike. A column added here, and named in a
view's list, shows in that view's rich and HTML tables at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .render import format_bytes, format_count, format_duration

if TYPE_CHECKING:
    from .report import ConsumerRow, StreamRow

__all__ = ["AGENTLAB_CONSUMER_COLUMNS", "CONSUMER_COLUMNS", "CONSUMER_REPORT_COLUMNS",
           "LIVE_CONSUMER_COLUMNS", "LIVE_STREAM_COLUMNS", "STREAM_COLUMNS",
           "STREAM_REPORT_COLUMNS", "Column", "consumer_cells", "pick", "stream_cells"]

R = TypeVar("R")


@dataclass(frozen=True)
class Column(Generic[R]):
    """One column: its header, where its value comes from and how it reads.

    ``get`` is a row attribute's name or a function of the row; ``format`` turns that value
    into the cell's text, or ``cell`` the whole row when the text needs more than the value
    (a newline in the text is a line break in both renderings). ``html`` gives markup of its
    own where text cannot say it (a sparkline). ``watch``: the observer compares the value
    between polls, flashes the cell when it changed and shows the difference, so a watched
    value must be an int.
    """

    header: str
    get: str | Callable[[R], Any]
    format: Callable[[Any], str] = str
    cell: Callable[[R], str] | None = None
    tip: str = ""                                  # what the column means: the HTML tooltip
    numeric: bool = False                          # right-aligned
    bold: bool = False                             # the row's own name
    code: bool = False                             # subjects: monospace in HTML
    watch: bool = False
    warn: Callable[[R], bool] | None = None        # this cell needs attention: red
    html: Callable[[R], str] | None = None

    def value(self, row: R) -> Any:
        return getattr(row, self.get) if isinstance(self.get, str) else self.get(row)

    def text(self, row: R) -> str:
        return self.cell(row) if self.cell is not None else self.format(self.value(row))


def pick(spec: Mapping[str, Column[R]], headers: tuple[str, ...]) -> tuple[Column[R], ...]:
    """The columns named by ``headers``, in that order."""
    return tuple(spec[header] for header in headers)


def _by_header(*columns: Column[R]) -> dict[str, Column[R]]:
    return {column.header: column for column in columns}


def _lines(values: tuple[str, ...]) -> str:
    return "\n".join(values)


def _joined(values: tuple[str, ...]) -> str:
    return ", ".join(values)


def _lost(row: StreamRow) -> str:
    if row.lost_messages <= 0:
        return "0"
    return f"{format_count(row.lost_messages)} ({format_bytes(row.lost_bytes)})"


def _unprocessed(row: ConsumerRow) -> str:
    """natscli's "n / p%": the share of the stream's messages not delivered yet."""
    if row.unprocessed <= 0:
        return "0"
    share = 100.0 if row.stream_messages <= 0 else \
        min(100.0, math.floor(row.unprocessed / row.stream_messages * 100))
    return f"{format_count(row.unprocessed)} / {share:.0f}%"


def _oldest_is_late(row: ConsumerRow) -> bool:
    # Waiting longer than one ack wait (and than a moment) means nobody is keeping up.
    age = row.oldest_unprocessed_age
    return age is not None and age > max(5.0, row.ack_wait)


STREAM_COLUMNS: dict[str, Column[StreamRow]] = _by_header(
    Column("Stream", "name", bold=True, tip="The stream's name"),
    Column("Subjects", "subjects", _lines, code=True,
           tip="Subjects whose messages the stream stores"),
    Column("Retention", "retention",
           tip="limits: keep until limits; workqueue: remove once acked; "
               "interest: keep while a consumer still needs it"),
    Column("Storage", "storage", tip="File (survives restarts) or Memory"),
    Column("Placement", "placement", tip="The cluster and server tags the stream is placed by"),
    Column("Consumers", "consumers", format_count, numeric=True, watch=True,
           tip="Consumers reading this stream"),
    Column("Messages", "messages", format_count, numeric=True, watch=True,
           tip="Messages stored now"),
    Column("Bytes", "bytes", format_bytes, numeric=True, watch=True, tip="Bytes stored now"),
    Column("Lost", "lost_messages", cell=_lost, numeric=True,
           tip="Messages (and bytes) the server lost, to a damaged disk say"),
    Column("Deleted", "deleted", format_count, numeric=True,
           tip="Messages removed from the middle of the stream (gaps in its sequence)"),
    Column("First Seq", "first_seq", format_count, numeric=True, watch=True,
           tip="Sequence number of the oldest stored message"),
    Column("Last Seq", "last_seq", format_count, numeric=True, watch=True,
           tip="Sequence number of the newest message ever stored"),
    Column("API Level", "api_level", tip="The JetStream API level the stream's config needs"),
    Column("Replicas", "replicas", _joined,
           tip="Servers holding a copy: * the leader, ! lagging or offline"),
)

CONSUMER_COLUMNS: dict[str, Column[ConsumerRow]] = _by_header(
    Column("Stream", "stream", tip="The stream the consumer reads"),
    Column("Consumer", "name", bold=True,
           tip="Durable name (an agent role shares one per role)"),
    Column("Filter", "filter_subjects", lambda subjects: ", ".join(subjects) or ">",
           code=True, tip="Only messages on these subjects"),
    Column("Mode", "mode", tip="Pull: workers fetch; Push: the server sends"),
    Column("Ack Policy", "ack_policy", tip="Explicit: each message must be acked"),
    Column("Ack Wait", "ack_wait", format_duration,
           tip="How long a delivery may stay unacked before it is redelivered"),
    Column("Ack Pending", "ack_pending", format_count, numeric=True, watch=True,
           tip="Delivered, waiting for an ack"),
    Column("Redelivered", "redelivered", format_count, numeric=True, watch=True,
           tip="Delivered more than once, waiting for an ack"),
    Column("Unprocessed", "unprocessed", cell=_unprocessed, numeric=True, watch=True,
           tip="Stored, matching, not delivered yet (num_pending), and its share of the "
               "stream"),
    Column("Ack Floor", "ack_floor", format_count, numeric=True, watch=True,
           tip="Stream sequence at and below which everything is acked"),
    Column("Waiting", "waiting", format_count, numeric=True, watch=True,
           tip="Pull requests parked at the server: idle workers"),
    Column("Last Delivered", "delivered", format_count, numeric=True, watch=True,
           tip="Stream sequence of the last message delivered"),
    Column("API Level", "api_level", tip="The JetStream API level the consumer's config needs"),
    Column("Cluster", "cluster", _joined,
           tip="Servers holding the consumer: * the leader, ! lagging or offline"),
    Column("Oldest Unprocessed", "oldest_unprocessed_age",
           lambda age: format_duration(age) or "—", numeric=True, warn=_oldest_is_late,
           tip="Age of the oldest message not yet acked: the queue's latency"),
)

# natscli cli/stream_command.go, func (c *streamCmd) renderStreams: table.AddHeaders(...)
STREAM_REPORT_COLUMNS: tuple[str, ...] = (
    "Stream", "Storage", "Placement", "Consumers", "Messages", "Bytes", "Lost", "Deleted",
    "API Level", "Replicas")
# natscli cli/consumer_command.go, func (c *consumerCmd) reportAction: table.AddHeaders(...)
CONSUMER_REPORT_COLUMNS: tuple[str, ...] = (
    "Consumer", "Mode", "Ack Policy", "Ack Wait", "Ack Pending", "Redelivered", "Unprocessed",
    "Ack Floor", "API Level", "Cluster")
# agentlab's addition, shown after the nats columns (see agentlab.reports.report).
AGENTLAB_CONSUMER_COLUMNS: tuple[str, ...] = ("Oldest Unprocessed",)

# The observer's live views (agentlab.observe): what a learner watches change while it runs.
LIVE_STREAM_COLUMNS: tuple[str, ...] = (
    "Stream", "Subjects", "Retention", "Storage", "Consumers", "Messages", "Bytes",
    "First Seq", "Last Seq")
# ... followed by the observer's own acks per second (agentlab.observe.columns)
LIVE_CONSUMER_COLUMNS: tuple[str, ...] = (
    "Stream", "Consumer", "Filter", "Ack Policy", "Unprocessed", "Ack Pending", "Redelivered",
    "Waiting", "Last Delivered", "Oldest Unprocessed")


def stream_cells(row: StreamRow) -> tuple[str, ...]:
    """The text of each ``nats stream report`` column for one stream."""
    return tuple(column.text(row) for column in pick(STREAM_COLUMNS, STREAM_REPORT_COLUMNS))


def consumer_cells(row: ConsumerRow, extras: bool = False) -> tuple[str, ...]:
    """The text of each ``nats consumer report`` column for one consumer; with ``extras``,
    agentlab's "Oldest Unprocessed" after them."""
    headers = CONSUMER_REPORT_COLUMNS + (AGENTLAB_CONSUMER_COLUMNS if extras else ())
    return tuple(column.text(row) for column in pick(CONSUMER_COLUMNS, headers))
