"""Snapshots: plain frozen objects that the widgets, the notebook's static HTML and the
terminal (rich) all render. Nothing here talks to NATS.

    snap = observer.snapshot()
    snap.flow.events[-1].kind          # 'ack'
    snap.state.streams.row("AGENT_TASKS").messages
    print(snap.flow.to_mermaid())      # the recorded flow as a Mermaid sequence diagram
    rich.print(snap)                   # the same, in a terminal
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .events import FlowEvent

if TYPE_CHECKING:
    from ..reports.report import ConsumerReport, StreamReport

COLUMNS = ("publishers", "subjects", "streams", "receivers")


@dataclass(frozen=True)
class FlowSnapshot:
    """The last events matching ``pattern``, oldest first, and the recorder's totals."""

    events: tuple[FlowEvent, ...]
    taken_at: float
    pattern: str = ">"
    received: int = 0              # messages the taps saw
    recorded: int = 0              # ... turned into events (others: API chatter, replies)
    dropped: int = 0               # ... lost because nobody read the buffer in time
    ignored: int = 0
    kinds: Mapping[str, int] = field(default_factory=dict)
    rate: float = 0.0              # events per second, last 5 s
    capacity: int = 0
    trace: str = ""                # only this trace's events (its id or first characters)

    def lifelines(self) -> list[str]:
        """Participants, left to right: those who only publish (the board), the streams
        that deliver work, the agents consuming it, then streams that only store (events,
        dead letters); each group in order of appearance."""
        order: list[str] = []
        consumers, delivering = set(), set()
        for event in self.events:
            if event.kind == "deliver":
                consumers.add(event.receiver or event.consumer)  # its participant, if known
                delivering.add(event.stream)
            for name in (event.sender or "?", event.stream, event.receiver or event.consumer):
                if name and name not in order:
                    order.append(name)

        def group(name: str) -> int:
            if name in delivering:
                return 1
            if name in consumers:
                return 2
            if name.upper() == name and any(c.isalpha() for c in name):
                return 3
            return 0
        return sorted(order, key=lambda name: (group(name), order.index(name)))

    def traces(self) -> list[str]:
        seen: list[str] = []
        for event in self.events:
            if event.trace_id and event.trace_id not in seen:
                seen.append(event.trace_id)
        return seen

    def to_mermaid(self) -> str:
        from .mermaid import to_mermaid

        return to_mermaid(self)

    def _repr_html_(self) -> str:
        from .html import flow_html

        return flow_html(self)

    def __rich__(self) -> Any:
        from .terminal import flow_table

        return flow_table(self)


@dataclass(frozen=True)
class TopologySnapshot:
    """Who publishes to which subjects, which streams store them, who receives them."""

    nodes: tuple[tuple[int, str], ...]                  # (column, name); see COLUMNS
    edges: tuple[tuple[tuple[int, str], tuple[int, str], int], ...]
    # The NATS micro services answering $SRV.PING at the last poll: (org, service, instance),
    # so the picture names every running agent, busy or idle, as `nats micro ls` would.
    services: tuple[tuple[str, str, str], ...] = ()

    @classmethod
    def build(cls, edges: list[tuple[str, str, int]], streams: frozenset[str]
              ) -> TopologySnapshot:
        def column(name: str, as_source: bool) -> int:
            if name in streams:
                return 2
            if "." in name:
                return 1
            return 0 if as_source else 3

        nodes: list[tuple[int, str]] = []
        out = []
        for src, dst, n in edges:
            a, b = (column(src, True), src), (column(dst, False), dst)
            if a[0] == 1 and b[0] == 0:
                b = (3, dst)
            for node in (a, b):
                if node not in nodes:
                    nodes.append(node)
            out.append((a, b, n))
        return cls(nodes=tuple(sorted(nodes)), edges=tuple(out))

    def count(self, src: str, dst: str) -> int:
        return sum(n for (_, a), (_, b), n in self.edges if a == src and b == dst)

    def _repr_html_(self) -> str:
        from .html import topology_html

        return topology_html(self)

    def __rich__(self) -> Any:
        from .terminal import topology_tree

        return topology_tree(self)


@dataclass(frozen=True)
class StateSnapshot:
    """Stream and consumer state as last polled, with what changed since the poll before."""

    streams: StreamReport | None
    consumers: tuple[ConsumerReport, ...] = ()
    rates: Mapping[tuple[str, str], tuple[int, ...]] = field(default_factory=dict)
    changed: frozenset[tuple[str, str]] = frozenset()    # (row key, column name)
    deltas: Mapping[tuple[str, str], int] = field(default_factory=dict)
    taken_at: float = 0.0
    polls: int = 0
    error: str = ""
    # ephemeral consumer -> its participant (the connection that created it), for the names
    owners: Mapping[str, str] = field(default_factory=dict)

    def consumer_rows(self) -> list[Any]:
        return [row for report in self.consumers for row in report.rows]

    def _repr_html_(self) -> str:
        from .html import consumers_html, streams_html

        return streams_html(self) + consumers_html(self)

    def __rich__(self) -> Any:
        from .terminal import state_group

        return state_group(self)


@dataclass(frozen=True)
class LabSnapshot:
    """Everything the dashboard shows, at one moment."""

    flow: FlowSnapshot
    topology: TopologySnapshot
    state: StateSnapshot

    def _repr_html_(self) -> str:
        from .html import consumers_html, flow_html, streams_html, topology_html

        return (streams_html(self.state) + consumers_html(self.state) + flow_html(self.flow)
                + topology_html(self.topology))

    def __rich__(self) -> Any:
        from rich.console import Group

        from .terminal import flow_table, state_group, topology_tree

        return Group(state_group(self.state), flow_table(self.flow),
                     topology_tree(self.topology))
