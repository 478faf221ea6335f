"""A FlowSnapshot as a Mermaid sequence diagram (paste it into any Markdown that renders it).

    print(observer.flow(limit=50).to_mermaid())
"""

from __future__ import annotations

import re

from .palette import is_stream, kind_of
from .snapshots import FlowSnapshot

# Mermaid arrows: ->> solid (publish), -->> dotted (delivery), -) async open (ack),
# -x cross (nak, term, dead letter)
ARROWS = {"publish": "->>", "deliver": "-->>", "redeliver": "-->>", "ack": "-)",
          "progress": "-)", "nak": "-x", "term": "-x", "dead_letter": "-x"}


def _id(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name or "unknown") or "unknown"


def _text(text: str) -> str:
    # ';' and '#' end or escape a Mermaid message; keep the line readable instead.
    return re.sub(r"[;#\n\r]", " ", text)[:80]


def to_mermaid(flow: FlowSnapshot) -> str:
    lines = ["sequenceDiagram"]
    for name in flow.lifelines():
        kind = "participant" if is_stream(name) else "actor" if name != "?" else "participant"
        label = "unknown sender" if name == "?" else name
        lines.append(f"    {kind} {_id(name)} as {label}")
    trace = None
    for event in flow.events:
        src = _id(event.sender or "?")
        dst = _id(event.receiver or event.consumer or "?")
        if event.trace_id != trace and event.trace_id:
            trace = event.trace_id
        kind = kind_of(event)
        label = _text(f"{event.label()} [{event.trace_id[:8]}]" if event.trace_id
                      else event.label())
        if event.kind == "advisory" or src == dst:
            lines.append(f"    Note over {src}: {label}")
        else:
            lines.append(f"    {src}{ARROWS.get(kind, '->>')}{dst}: {label}")
    return "\n".join(lines) + "\n"
