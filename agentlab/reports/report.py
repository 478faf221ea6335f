"""Stream and consumer reports, named column for column as ``nats stream report`` and
``nats consumer report`` name them, so what a learner reads here is what production shows.

    report = stream_report(client)               # every stream: a plain, frozen snapshot
    report.row("AGENT_TASKS").messages            # numbers stay numbers
    rich.print(report)                            # a rich table (also _repr_html_ in Jupyter)
    consumer_report(client, "AGENT_TASKS").row("cto").oldest_unprocessed_age   # seconds

Column names come from the nats CLI (github.com/nats-io/natscli): ``renderStreams`` in
cli/stream_command.go and ``reportAction`` in cli/consumer_command.go. Cells are formatted
the way that CLI formats them (thousands separators, IEC bytes, its duration style; see
:mod:`agentlab.reports.render`), so a snapshot printed here and ``nats ... report`` against the
same server read the same.

One column is agentlab's own, appended after the nats ones and listed separately in
``AGENTLAB_CONSUMER_COLUMNS``: **Oldest Unprocessed**, the age of the oldest message the
consumer has not acknowledged yet (seed 002: "message age (oldest unprocessed message
indicates latency)"), measured as :mod:`agentlab.reports.unprocessed` explains.

Snapshots are frozen dataclasses of plain values; views (rich, HTML, live widgets) render
them (:mod:`agentlab.reports.render`) from one column spec per report
(:mod:`agentlab.reports.columns`) and never talk to NATS themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from nats.js.api import ClusterInfo, ConsumerInfo, StreamInfo

from ..core.jetstream import LIST_TIMEOUT
from ..errors import StreamNotFound
from ..wire.messages import utc_now
from .columns import (
    AGENTLAB_CONSUMER_COLUMNS,
    CONSUMER_COLUMNS,
    CONSUMER_REPORT_COLUMNS,
    STREAM_COLUMNS,
    STREAM_REPORT_COLUMNS,
    Column,
    consumer_cells,
    pick,
    stream_cells,
)
from .render import TableView, format_bytes, format_count, format_duration, natural_width
from .unprocessed import afind_oldest_unprocessed, oldest_unprocessed

if TYPE_CHECKING:
    from ..core.client import Client

__all__ = [
    "STREAM_REPORT_COLUMNS", "CONSUMER_REPORT_COLUMNS", "AGENTLAB_CONSUMER_COLUMNS",
    "StreamRow", "StreamReport", "ConsumerRow", "ConsumerReport",
    "stream_report", "astream_report", "consumer_report", "aconsumer_report",
    "oldest_unprocessed", "status_reports",
    # rendering, re-exported from agentlab.reports.render where it lives
    "format_duration", "format_bytes", "format_count", "natural_width",
]

_REQUIRED_API_LEVEL = "_nats.req.level"  # jsm.go api.JsMetaRequiredServerLevel


def _cluster_peers(cluster: ClusterInfo | None) -> tuple[str, ...]:
    """natscli renderCluster: leader marked '*', lagging or offline replicas marked '!'."""
    if cluster is None:
        return ()
    names: list[str] = []
    flags: list[str] = []
    if cluster.leader:
        names.append(cluster.leader)
        flags.append("*")
    for peer in cluster.replicas or []:
        names.append(peer.name or "")  # nats-py types it optional; the server names peers
        flags.append("!" if (peer.offline or not peer.current) else "")
    return tuple(sorted(n + f for n, f in zip(_compact(names), flags, strict=True)))


def _compact(names: list[str]) -> list[str]:
    """Drop the domain suffix all names share, as natscli's CompactStrings does."""
    if not names:
        return names
    parts = [n.split(".") for n in names]
    shortest = min(len(p) for p in parts)
    suffix = ""
    for i in range(shortest - 1, 0, -1):
        if all(p[i] == parts[0][i] for p in parts):
            suffix = "." + parts[0][i] + suffix
        else:
            break
    return [n[: -len(suffix)] if suffix and n.endswith(suffix) else n for n in names]


def _enum(value: Any) -> str:
    return str(getattr(value, "value", value) or "")


def _api_level(metadata: dict[str, str] | None) -> str:
    return (metadata or {}).get(_REQUIRED_API_LEVEL) or "0"


# -- snapshots ----------------------------------------------------------------------------
@dataclass(frozen=True)
class StreamRow:
    """One stream, as plain values. ``cells()`` gives the nats CLI's text for each column."""

    name: str
    storage: str                  # "File" or "Memory", as the CLI prints it
    placement: str
    consumers: int
    messages: int
    bytes: int
    lost_messages: int
    lost_bytes: int
    deleted: int
    api_level: str
    replicas: tuple[str, ...]     # peers: leader marked '*', lagging/offline marked '!'
    description: str = ""
    subjects: tuple[str, ...] = ()
    retention: str = ""
    first_seq: int = 0
    last_seq: int = 0

    def cells(self) -> tuple[str, ...]:
        return stream_cells(self)

    @classmethod
    def from_info(cls, info: StreamInfo) -> StreamRow:
        config, state = info.config, info.state
        placement = ""
        if config.placement is not None:
            if config.placement.cluster:
                placement = f"cluster: {config.placement.cluster} "
            if config.placement.tags:
                placement = f"{placement}tags: {', '.join(config.placement.tags)}"
        deleted = state.num_deleted or 0
        if state.deleted:  # servers that predate num_deleted list the sequences
            deleted = len(state.deleted)
        lost = state.lost
        storage = _enum(config.storage)
        return cls(
            name=config.name or "", storage=storage.capitalize(), placement=placement,
            consumers=state.consumer_count, messages=state.messages, bytes=state.bytes,
            lost_messages=len(lost.msgs or []) if lost else 0,
            lost_bytes=(lost.bytes or 0) if lost else 0, deleted=deleted,
            api_level=_api_level(config.metadata), replicas=_cluster_peers(info.cluster),
            description=config.description or "", subjects=tuple(config.subjects or ()),
            retention=_enum(config.retention), first_seq=state.first_seq,
            last_seq=state.last_seq)


@dataclass(frozen=True)
class ConsumerRow:
    """One consumer, as plain values. ``depth`` = unprocessed + ack pending."""

    stream: str
    name: str
    mode: str                     # "Pull" or "Push"
    ack_policy: str               # "Explicit", "All" or "None"
    ack_wait: float               # seconds
    ack_pending: int              # delivered, not acknowledged yet
    redelivered: int
    unprocessed: int              # num_pending: not delivered yet
    ack_floor: int                # stream sequence at and below which all is acknowledged
    api_level: str
    cluster: tuple[str, ...]
    stream_messages: int = 0      # for the "n / p%" of the Unprocessed column
    delivered: int = 0            # last delivered stream sequence
    waiting: int = 0              # pull requests parked at the server (num_waiting)
    push_bound: bool = False
    filter_subjects: tuple[str, ...] = ()
    max_ack_pending: int = 0
    max_deliver: int = 0
    oldest_unprocessed_seq: int | None = None
    oldest_unprocessed_at: datetime | None = None
    oldest_unprocessed_age: float | None = None   # seconds, as of the report's taken_at

    @property
    def depth(self) -> int:
        """Messages this consumer still has to get through: not delivered + not acked."""
        return self.unprocessed + self.ack_pending

    def cells(self, extras: bool = False) -> tuple[str, ...]:
        return consumer_cells(self, extras)

    @classmethod
    def from_info(cls, info: ConsumerInfo, stream_messages: int = 0,
                  oldest: tuple[int, datetime] | None = None,
                  taken_at: datetime | None = None) -> ConsumerRow:
        config = info.config
        filters = tuple(config.filter_subjects or ()) or \
            ((config.filter_subject,) if config.filter_subject else ())
        age = None
        if oldest is not None:
            age = max(0.0, ((taken_at or utc_now()) - oldest[1]).total_seconds())
        return cls(
            stream=info.stream_name, name=info.name,
            mode="Push" if config.deliver_subject else "Pull",
            ack_policy=_enum(config.ack_policy).capitalize(),
            ack_wait=float(config.ack_wait or 0.0), ack_pending=info.num_ack_pending or 0,
            redelivered=info.num_redelivered or 0, unprocessed=info.num_pending or 0,
            ack_floor=info.ack_floor.stream_seq if info.ack_floor else 0,
            api_level=_api_level(config.metadata), cluster=_cluster_peers(info.cluster),
            stream_messages=stream_messages,
            delivered=info.delivered.stream_seq if info.delivered else 0,
            waiting=info.num_waiting or 0, push_bound=bool(info.push_bound),
            filter_subjects=filters, max_ack_pending=config.max_ack_pending or 0,
            max_deliver=config.max_deliver or 0,
            oldest_unprocessed_seq=oldest[0] if oldest else None,
            oldest_unprocessed_at=oldest[1] if oldest else None, oldest_unprocessed_age=age)


Row = TypeVar("Row", StreamRow, ConsumerRow)


class _RowsByName(Generic[Row]):
    """Both reports' rows, looked up by name (stream or consumer names are unique)."""

    rows: tuple[Row, ...]
    row_kind: ClassVar[str]  # what a row is, for the KeyError: "stream" or "consumer"

    def row(self, name: str) -> Row:
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(f"no {self.row_kind} {name!r} {self._scope()} ({self.row_kind}s: "
                       f"{', '.join(self.names) or 'none'})")

    def _scope(self) -> str:
        return "in this report"

    @property
    def names(self) -> list[str]:
        return [row.name for row in self.rows]

    def __len__(self) -> int:
        return len(self.rows)


@dataclass(frozen=True, repr=False)
class StreamReport(_RowsByName[StreamRow], TableView):
    """Every stream on the server at ``taken_at``; rows ordered as the nats CLI orders them
    by default (by size, smallest first), or as ``stream_report(sort=...)`` asked."""

    rows: tuple[StreamRow, ...]
    taken_at: datetime = field(default_factory=utc_now)
    title: ClassVar[str] = "Stream Report"
    row_kind: ClassVar[str] = "stream"

    def table_columns(self) -> tuple[Column[StreamRow], ...]:
        return pick(STREAM_COLUMNS, STREAM_REPORT_COLUMNS)

    def table_rows(self) -> tuple[StreamRow, ...]:
        return self.rows


@dataclass(frozen=True, repr=False)
class ConsumerReport(_RowsByName[ConsumerRow], TableView):
    """The consumers of one stream at ``taken_at``, ordered by name."""

    stream: str
    stream_messages: int
    rows: tuple[ConsumerRow, ...]
    taken_at: datetime = field(default_factory=utc_now)
    extras: bool = True            # show agentlab's "Oldest Unprocessed" after the nats columns
    dim_columns: ClassVar[frozenset[str]] = frozenset(AGENTLAB_CONSUMER_COLUMNS)
    row_kind: ClassVar[str] = "consumer"

    def table_columns(self) -> tuple[Column[ConsumerRow], ...]:
        return pick(CONSUMER_COLUMNS, CONSUMER_REPORT_COLUMNS +
                    (AGENTLAB_CONSUMER_COLUMNS if self.extras else ()))

    def table_rows(self) -> tuple[ConsumerRow, ...]:
        return self.rows

    @property
    def title(self) -> str:
        # natscli: "Consumer report for %s with %s consumers"
        return f"Consumer report for {self.stream} with {format_count(len(self.rows))} consumers"

    def _scope(self) -> str:
        return f"on stream {self.stream!r}"


# -- collecting ---------------------------------------------------------------------------
_SORTS = {
    "bytes": lambda r: (r.bytes, r.name), "messages": lambda r: (r.messages, r.name),
    "consumers": lambda r: (r.consumers, r.name), "name": lambda r: r.name,
    "storage": lambda r: (r.storage, r.name),
}


def stream_report(client: Client, *, sort: str = "bytes") -> StreamReport:
    """A snapshot of every stream. ``sort``: bytes (the nats CLI default), messages,
    consumers, name or storage."""
    return client._bridge.run(_stream_report(client, sort), operation="stream_report")


async def astream_report(client: Client, *, sort: str = "bytes") -> StreamReport:
    return await client._bridge.arun(_stream_report(client, sort))


async def _stream_report(client: Client, sort: str) -> StreamReport:
    if sort not in _SORTS:
        raise ValueError(f"sort={sort!r}: use one of {', '.join(_SORTS)}")
    infos = await client.js.astreams(timeout=LIST_TIMEOUT)
    rows = sorted((StreamRow.from_info(info) for info in infos), key=_SORTS[sort])
    return StreamReport(rows=tuple(rows), taken_at=utc_now())


def consumer_report(client: Client, stream: str, *, extras: bool = True) -> ConsumerReport:
    """A snapshot of every consumer of ``stream``, with each one's oldest unprocessed age.

    ``extras=False`` renders exactly the nats CLI's columns.
    """
    return client._bridge.run(_consumer_report(client, stream, extras),
                              operation="consumer_report")


async def aconsumer_report(client: Client, stream: str, *,
                           extras: bool = True) -> ConsumerReport:
    return await client._bridge.arun(_consumer_report(client, stream, extras))


async def _consumer_report(client: Client, stream: str, extras: bool) -> ConsumerReport:
    stream_info = await client.js.astream_info(stream, timeout=LIST_TIMEOUT)
    infos = await client.js.aconsumers(stream, timeout=LIST_TIMEOUT)
    direct = bool(stream_info.config.allow_direct)
    taken_at = utc_now()
    rows = []
    for info in sorted(infos, key=lambda i: i.name):
        oldest = await afind_oldest_unprocessed(client, stream, info, direct)
        rows.append(ConsumerRow.from_info(info, stream_info.state.messages, oldest, taken_at))
    return ConsumerReport(stream=stream, stream_messages=stream_info.state.messages,
                          rows=tuple(rows), taken_at=taken_at, extras=extras)


def status_reports(client: Client) -> list[StreamReport | ConsumerReport]:
    """What ``agentlab status`` prints: the stream report, then the consumer report of every
    stream that has consumers (streams by name)."""
    streams = stream_report(client)
    reports: list[StreamReport | ConsumerReport] = [streams]
    for name in sorted(row.name for row in streams.rows if row.consumers > 0):
        try:
            reports.append(consumer_report(client, name))
        except StreamNotFound:  # deleted since the stream report was taken
            continue
    return reports
