"""Colours that mean something, shared by the HTML, SVG and terminal views."""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .events import FlowEvent

# kind -> (colour, rich style, what it means: the legend's words)
KIND_STYLE: dict[str, tuple[str, str, str]] = {
    "publish": ("#2563eb", "blue", "publish: a message sent to a subject"),
    "request": ("#0891b2", "cyan", "request: a message that waits for an answer on a reply "
                "inbox"),
    "reply": ("#0d9488", "dark_cyan", "reply: the answer, sent to the requester's inbox"),
    "deliver": ("#16a34a", "green", "deliver: JetStream hands a stored message to a consumer"),
    "redeliver": ("#ea580c", "dark_orange", "redelivery: delivered again (no ack in time, or nak)"),
    "ack": ("#64748b", "grey50", "ack: done, the stream may forget it"),
    "progress": ("#94a3b8", "grey62", "in progress (+WPI): still working, restart the clock"),
    "nak": ("#d97706", "yellow", "nak: failed, deliver it again later"),
    "term": ("#dc2626", "red", "term: never deliver again (poison)"),
    "dead_letter": ("#991b1b", "bold red", "dead letter: copied to DEAD_LETTERS with the reason"),
    "advisory": ("#7c3aed", "magenta",
                 "advisory: the server reports an event (e.g. max deliveries)"),
}

AGENT_FILL, STREAM_FILL, OTHER_FILL = "#e0e7ff", "#fef3c7", "#f1f5f9"
TRACE_COLOURS = ("#0ea5e9", "#a855f7", "#f43f5e", "#10b981", "#f59e0b", "#6366f1",
                 "#14b8a6", "#ec4899", "#84cc16", "#ef4444")


def kind_of(event: FlowEvent) -> str:
    """The legend entry of an event (a redelivery is a deliver with deliveries > 1)."""
    if event.kind == "deliver" and event.deliveries > 1:
        return "redeliver"
    return event.kind


def colour(kind: str) -> str:
    return KIND_STYLE.get(kind, ("#334155", "", ""))[0]


def trace_colour(trace_id: str) -> str:
    if not trace_id:
        return "#cbd5e1"
    return TRACE_COLOURS[zlib.crc32(trace_id.encode()) % len(TRACE_COLOURS)]


def is_stream(name: str) -> bool:
    """Stream names are upper case by convention (AGENT_TASKS, KV_TASK_LEDGER...)."""
    return bool(name) and name.upper() == name and any(c.isalpha() for c in name)
