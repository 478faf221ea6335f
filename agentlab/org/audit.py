"""Replay the audit log: every agent action and task event of AGENT_EVENTS, from the start
or from a point in time (event sourcing, seed 000).

    for record in replay(lab, org="acme", since=an_hour_ago):
        print(record.time, record.kind, record.event)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..core.client import Client
from ..core.subjects import Subjects
from ..errors import MessageDecodeError
from .models import AgentAction, Task, TaskCompleted
from .streams import EVENTS_STREAM


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    time: datetime
    subject: str
    kind: str  # "agent.action", "task.created", "task.completed" or "unknown"
    event: Any  # the decoded model, or the raw JSON for unknown kinds


def replay(client: Client, org: str = "*", *, since: datetime | None = None,
           subjects: Subjects | None = None, timeout: float = 2.0) -> list[AuditRecord]:
    """The events of ``org`` (every org by default) stored now, oldest first."""
    s = subjects or Subjects()
    pattern = f"{s.root}.org.{org}.>"
    records = []
    for msg in client.js.read(EVENTS_STREAM, pattern, since=since, timeout=timeout):
        kind, event = _decode(msg.subject, msg)
        records.append(AuditRecord(msg.info.stream_seq, msg.info.timestamp, msg.subject,
                                   kind, event))
    return records


def _decode(subject: str, msg: Any) -> tuple[str, Any]:
    try:
        if subject.endswith(".tasks.created"):
            return "task.created", msg.decode(Task)
        if subject.endswith(".tasks.completed"):
            return "task.completed", msg.decode(TaskCompleted)
        if subject.endswith(".events"):
            return "agent.action", msg.decode(AgentAction)
    except MessageDecodeError:
        pass  # something else published here: keep it, undecoded, rather than hide it
    try:
        return "unknown", msg.json()
    except MessageDecodeError:
        return "unknown", msg.data
