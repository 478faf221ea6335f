"""Rich renderables of the snapshots, for terminals (``rich.print(observer.snapshot())``)."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from ..reports.render import rich_table
from .columns import consumer_columns, marker, sparkline, stream_columns
from .palette import KIND_STYLE, kind_of
from .snapshots import COLUMNS, FlowSnapshot, StateSnapshot, TopologySnapshot

__all__ = ["flow_table", "sparkline", "state_group", "topology_tree"]


def state_group(state: StateSnapshot) -> Group:
    mark = marker(state)
    streams = rich_table("Streams", stream_columns(state),
                         state.streams.rows if state.streams else (), mark=mark)
    consumers = rich_table("Consumers", consumer_columns(state), state.consumer_rows(),
                           mark=mark)
    return Group(streams, consumers)


def flow_table(flow: FlowSnapshot, rows: int = 20) -> Table:
    table = Table(title=f"Message flow ({flow.recorded:,} recorded, {flow.rate:,.0f}/s, "
                        f"filter {flow.pattern})", title_justify="left", header_style="bold")
    for name in ("time", "what", "from → to", "subject", "type", "title", "trace"):
        table.add_column(name, no_wrap=name != "title")
    for event in flow.events[-rows:]:
        kind = kind_of(event)
        style = KIND_STYLE.get(kind, ("", "", ""))[1]
        when = time.strftime("%H:%M:%S", time.localtime(event.time))
        table.add_row(when, Text(kind.replace("_", " "), style=style),
                      f"{event.sender or '?'} → {event.receiver or event.consumer or '?'}",
                      event.subject, event.type, event.title[:50], event.trace_id[:8])
    return table


def topology_tree(topology: TopologySnapshot) -> Tree:
    tree = Tree("[bold]Topology[/] (" + " → ".join(COLUMNS) + "; counts = messages)")
    by_source: dict[Any, list[tuple[Any, int]]] = {}
    for a, b, n in topology.edges:
        by_source.setdefault(a, []).append((b, n))
    for (column, name), targets in sorted(by_source.items()):
        branch = tree.add(f"[cyan]{name}[/] [dim]({COLUMNS[column][:-1]})[/]")
        for (_, target), n in targets:
            branch.add(f"{target}  [bold]{n:,}[/]")
    if topology.services:
        services = tree.add("[bold]Services[/] [dim](answering $SRV.PING)[/]")
        for org, name, instance in topology.services:
            services.add(f"{name} {instance}" + (f" [dim]({org})[/]" if org else ""))
    return tree
