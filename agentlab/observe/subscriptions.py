"""Which subscription gets which message: a program's own subscriptions beside the messages
the observer saw, routed by the server's wildcard and queue-group rules.

    snap = subscriptions_snapshot(observer.flow(limit=12), [star, rest, *workers])
    HTML(subscriptions_html(snap))

The counts (received, handled) are the subscriptions' own: what the server really handed
them. Which message reached which subscription is worked out as the server does it: every
subscription whose pattern matches the subject gets a copy, except that a queue group's
members share one copy between them (one column per group: the group got it, one member did
the work). A message published before a subscription existed matches its pattern but never
reached it: its count then says fewer than the ticks.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from html import escape
from typing import Any

from ..core.subjects import subject_matches
from .events import FlowEvent
from .snapshots import FlowSnapshot

__all__ = ["SubscriptionRow", "SubscriptionsSnapshot", "subscriptions_html",
           "subscriptions_snapshot"]

ROUTED = ("publish", "request", "dead_letter")  # the events that go out to subscribers


@dataclass(frozen=True)
class SubscriptionRow:
    """One subscription: whose connection, which pattern, which queue group, how many."""

    connection: str
    subject: str
    queue: str
    received: int
    handled: int
    closed: bool = False

    @property
    def column(self) -> str:
        """The matrix column it counts in: its pattern, or its queue group's."""
        return f"{self.subject} [{self.queue}]" if self.queue else self.subject


@dataclass(frozen=True)
class SubscriptionsSnapshot:
    rows: tuple[SubscriptionRow, ...]
    columns: tuple[str, ...]                                  # patterns and queue groups
    messages: tuple[tuple[FlowEvent, tuple[bool, ...]], ...]  # newest first, who got each
    taken_at: float = 0.0

    def got(self, column: str) -> list[str]:
        """The subjects of the shown messages that ``column`` (a pattern) received."""
        i = self.columns.index(column)
        return [event.subject for event, hits in self.messages if hits[i]]

    def _repr_html_(self) -> str:
        return subscriptions_html(self)


def _row(sub: Any) -> SubscriptionRow:
    client = getattr(sub, "client", None)
    closed = bool(getattr(sub, "_closed", False) or getattr(client, "is_closed", False))
    return SubscriptionRow(connection=str(getattr(client, "name", "") or ""),
                           subject=str(sub.subject), queue=str(getattr(sub, "queue", "") or ""),
                           received=int(getattr(sub, "received", 0)),
                           handled=int(getattr(sub, "handled", 0)), closed=closed)


def subscriptions_snapshot(flow: FlowSnapshot, subscriptions: Iterable[Any], *,
                           limit: int = 12) -> SubscriptionsSnapshot:
    """``subscriptions`` (agentlab Subscriptions, or anything with ``subject``, ``queue``,
    ``received``, ``handled`` and ``client.name``) and the last ``limit`` messages of
    ``flow`` that went out to subscribers, each with the columns that received it."""
    rows = tuple(_row(sub) for sub in subscriptions)
    columns: list[str] = []
    patterns: list[str] = []
    for row in rows:
        if row.column not in columns:
            columns.append(row.column)
            patterns.append(row.subject)
    routed = [event for event in flow.events if event.kind in ROUTED][-limit:]
    messages = tuple((event, tuple(subject_matches(p, event.subject) for p in patterns))
                     for event in reversed(routed))
    return SubscriptionsSnapshot(rows=rows, columns=tuple(columns), messages=messages,
                                 taken_at=time.time())


def subscriptions_html(snap: SubscriptionsSnapshot) -> str:
    from .html import _view

    top = max([row.received for row in snap.rows] + [1])
    body = []
    for row in snap.rows:
        bar = "█" * round(20 * row.received / top) if row.received else ""
        state = " <span class='al-warn'>(closed)</span>" if row.closed else ""
        body.append(f"<tr><td>{escape(row.connection)}{state}</td><td><code>"
                    f"{escape(row.subject)}</code></td><td>{escape(row.queue or '—')}</td>"
                    f"<td class='n'>{row.received:,}</td><td class='n'>{row.handled:,}</td>"
                    f"<td style='color:#2563eb'>{bar}</td></tr>")
    head = "".join(f"<th title='{escape(tip)}'>{name}</th>" for name, tip in (
        ("connection", "whose subscription it is"), ("subject", "its subject or pattern"),
        ("queue group", "members of one group share the messages"),
        ("received", "messages the server handed this subscription"),
        ("handled", "messages its handler finished"), ("", "received, as a bar")))
    subs = (f"<table class='al-subs'><thead><tr>{head}</tr></thead><tbody>"
            f"{''.join(body) or '<tr><td colspan=6>no subscriptions</td></tr>'}</tbody></table>")
    cols = "".join(f"<th><code>{escape(c)}</code></th>" for c in snap.columns)
    lines = []
    for event, hits in snap.messages:
        when = time.strftime("%H:%M:%S", time.localtime(event.time))
        ticks = "".join("<td style='text-align:center;color:#16a34a'>✓</td>" if hit else
                        "<td style='text-align:center;color:#cbd5e1'>·</td>" for hit in hits)
        lines.append(f"<tr><td>{when}</td><td><code>{escape(event.subject)}</code></td>"
                     f"{ticks}</tr>")
    empty = f"<tr><td colspan={2 + len(snap.columns)}>no messages seen yet</td></tr>"
    matrix = (f"<h3 style='margin-top:8px'>Who got which message (newest first)</h3>"
              f"<table class='al-matrix'><thead><tr><th>time</th><th>published to</th>{cols}"
              f"</tr></thead><tbody>{''.join(lines) or empty}</tbody></table>")
    return _view("Subscriptions", "Each subscription gets a copy of every message whose "
                 "subject its pattern matches (* one token, > the rest); the members of a "
                 "queue group share one copy.", subs + matrix)
