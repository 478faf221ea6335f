"""Rich renderables of the snapshots, for terminals (``rich.print(observer.snapshot())``)."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from ..reports.report import format_bytes, format_count, format_duration
from .palette import KIND_STYLE, kind_of
from .snapshots import COLUMNS, FlowSnapshot, StateSnapshot, TopologySnapshot

BARS = " ▁▂▃▄▅▆▇█"


def sparkline(values: tuple[int, ...], width: int = 20) -> str:
    values = values[-width:] or (0,)
    top = max(values) or 1
    return "".join(BARS[round(v / top * (len(BARS) - 1))] for v in values)


def _mark(state: StateSnapshot, key: str, column: str, text: str) -> Text:
    if (key, column) in state.changed:
        delta = state.deltas.get((key, column))
        extra = f" ({'+' if delta and delta > 0 else ''}{delta:,})" if delta else ""
        return Text(text + extra, style="bold yellow")
    return Text(text)


def state_group(state: StateSnapshot) -> Group:
    streams = Table(title="Streams", title_justify="left", header_style="bold")
    for name in ("Stream", "Subjects", "Retention", "Storage", "Consumers", "Messages",
                 "Bytes", "First Seq", "Last Seq"):
        streams.add_column(name, justify="right" if name in ("Consumers", "Messages", "Bytes",
                                                             "First Seq", "Last Seq") else "left")
    for row in state.streams.rows if state.streams else ():
        k = row.name
        streams.add_row(row.name, ", ".join(row.subjects), row.retention, row.storage,
                        _mark(state, k, "Consumers", format_count(row.consumers)),
                        _mark(state, k, "Messages", format_count(row.messages)),
                        _mark(state, k, "Bytes", format_bytes(row.bytes)),
                        _mark(state, k, "First Seq", format_count(row.first_seq)),
                        _mark(state, k, "Last Seq", format_count(row.last_seq)))
    consumers = Table(title="Consumers", title_justify="left", header_style="bold")
    for name in ("Stream", "Consumer", "Filter", "Ack Policy", "Unprocessed", "Ack Pending",
                 "Redelivered", "Waiting", "Last Delivered", "Oldest Unprocessed", "Acks/s"):
        consumers.add_column(name, justify="left" if name in ("Stream", "Consumer", "Filter",
                                                              "Ack Policy", "Acks/s") else "right")
    for row in state.consumer_rows():
        k = f"{row.stream}/{row.name}"
        rate = state.rates.get((row.stream, row.name), ())
        consumers.add_row(row.stream, row.name, ", ".join(row.filter_subjects) or ">",
                          row.ack_policy,
                          _mark(state, k, "Unprocessed", format_count(row.unprocessed)),
                          _mark(state, k, "Ack Pending", format_count(row.ack_pending)),
                          _mark(state, k, "Redelivered", format_count(row.redelivered)),
                          _mark(state, k, "Waiting", format_count(row.waiting)),
                          _mark(state, k, "Last Delivered", format_count(row.delivered)),
                          format_duration(row.oldest_unprocessed_age) or "—",
                          f"{sparkline(rate)} {rate[-1] if rate else 0}/s")
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
    return tree
