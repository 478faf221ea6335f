"""The rows of the pauses, partitions and leader kills, and the distribution of recoveries.

After a SIGKILL of the node that leads AGENT_TASKS, the time until work flows again has two
parts. The first is nats-server's: for every Raft group the node led (the stream, and often
a consumer or a KV bucket's stream too) the other nodes wait out the election timeout (4 to
9 s after the leader's last heartbeat, random per group, compiled into nats-server 2.15, not
configurable) before one of them campaigns. The second is the clients': the publisher's
resend to the new leader and the agents' pull requests reaching the new consumer leader,
counted from the last leader-elected advisory before the first completion. The table shows
both as distributions (min, p50, p95, max and a histogram); the clients' part is held to the
2 s target (docs/operations.md, "Faults and recovery").
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

from rich.table import Table

from .config import Fault

TARGET = 2.0  # seconds: from a new leader to the first task completed through it
_EDGES = (1.0, 2.0, 4.0, 6.0, 8.0, 10.0)


def percentile(values: Sequence[float], p: float) -> float:
    """The nearest-rank percentile ``p`` (0-100) of ``values`` (not empty)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def distribution(values: Sequence[float]) -> str:
    if not values:
        return "none"
    return (f"min {min(values):.2f}, p50 {percentile(values, 50):.2f}, p95 "
            f"{percentile(values, 95):.2f}, max {max(values):.2f} s")


def histogram(values: Sequence[float]) -> str:
    """``<1 s ██ 2 · 1-2 s █ 1 · ...``: how many values fall in each band."""
    bands = [0] * (len(_EDGES) + 1)
    for value in values:
        bands[sum(1 for edge in _EDGES if value >= edge)] += 1
    names = [f"<{_EDGES[0]:g}", *(f"{a:g}-{b:g}" for a, b in itertools.pairwise(_EDGES)),
             f">={_EDGES[-1]:g}"]
    return " · ".join(f"{name} s {'█' * n} {n}"
                      for name, n in zip(names, bands, strict=True) if n)


def after_election(fault: Fault) -> float | None:
    """From the last leader-elected advisory (of any stream or consumer) before the first
    completion of a task published after the fault, to that completion: the clients' share
    of the recovery."""
    back = fault.leaders_back if fault.leaders_back is not None else fault.elected
    if fault.completed is None or back is None:
        return None
    return max(0.0, fault.completed - back)


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"


def add_fault_rows(report: Any, table: Table, good: str = "[green]",
                   bad: str = "[bold red]") -> None:
    """The pause, partition and leader-kill rows of ``report`` (a ChaosReport)."""
    cfg, faults = report.config, report.faults
    pauses = [f for f in faults if f.kind == "agent pause"]
    if cfg.agent_pauses:
        table.add_row("agent processes paused", str(len(pauses)),
                      f"SIGSTOP for {cfg.agent_pause_seconds():g} s (ack wait "
                      f"{cfg.ack_wait:g} s), then SIGCONT: their tasks went to the others "
                      f"({sum(f.completions_during for f in pauses):,} completed meanwhile); "
                      "their late acks and completions counted in 'applied twice'")
    for kind, title, what in (
            ("server pause", "server paused", f"SIGSTOP for {cfg.server_pause_seconds():g} s"),
            ("partition", "partition", f"cut off the network for {cfg.partition_for:g} s")):
        for fault in (f for f in faults if f.kind == kind):
            if fault.skipped:
                table.add_row(f"{title} {fault.number}", "[yellow]skipped", fault.skipped)
                continue
            if cfg.cluster:  # the others work on: how soon through the new leader
                value = fault.completed
                note = (f"{fault.label}: {what}; to the first completion of a task published "
                        f"after it began (first receipt {_seconds(fault.published)}, new "
                        f"leader {_seconds(fault.elected)}); {fault.completions_during:,} "
                        "completed meanwhile")
            else:  # everything waits for the server: how soon after it is back
                value = fault.resumed
                note = (f"{fault.label}: {what}; from SIGCONT to the next completion (the "
                        "first task published after it began: "
                        f"{_seconds(fault.completed)} from its start, first receipt "
                        f"{_seconds(fault.published)})")
            colour = good if value is not None and value < TARGET else bad
            table.add_row(f"{title} {fault.number}", f"{colour}{_seconds(value)}", note)
    kills = [f for f in faults if f.kind == "leader kill"]
    if not kills:
        return
    table.add_row("leader kills", str(len(kills)),
                  f"SIGKILL of the AGENT_TASKS leader, restarted after {cfg.server_down:g} s; "
                  "seconds from the kill:")
    elected = [f.elected for f in kills if f.elected is not None]
    back = [f.leaders_back for f in kills if f.leaders_back is not None]
    published = [f.published for f in kills if f.published is not None]
    completed = [f.completed for f in kills if f.completed is not None]
    clients = [v for v in map(after_election, kills) if v is not None]
    table.add_row("  new leader elected", f"{percentile(elected, 95):.2f} s" if elected
                  else "never", f"p95; {distribution(elected)} (nats-server's Raft election "
                  "timeout, 4-9 s, compiled in)")
    table.add_row("  first publish acknowledged", f"{percentile(published, 95):.2f} s"
                  if published else "never", f"p95; {distribution(published)}")
    table.add_row("  last leader elected", f"{percentile(back, 95):.2f} s" if back
                  else "never", f"p95; {distribution(back)} (the last stream or consumer "
                  "election before the first completion: the dead node led it too)")
    table.add_row("  first task completed", f"{percentile(completed, 95):.2f} s"
                  if completed else "never", f"p95; {distribution(completed)}")
    table.add_row("", "", f"[dim]{histogram(completed)}")
    ok = bool(clients) and len(clients) == len(kills) and percentile(clients, 95) < TARGET
    table.add_row("  then to first completion",
                  f"{good if ok else bad}{percentile(clients, 95):.2f} s" if clients
                  else f"{bad}never",
                  f"p95 (target < {TARGET:g} s): the clients' part; {distribution(clients)}")
