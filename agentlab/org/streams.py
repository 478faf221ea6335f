"""The reference streams, one per domain as the seeds advise, declared idempotently.

    declare_reference_streams(lab)          # replicas 1 here, replicas=3 on a cluster
"""

from __future__ import annotations

from ..client import Client
from ..specs import DAY, MINUTE, MiB, StreamSpec
from ..subjects import Subjects


# Within this window a resent task id is dropped by the stream itself (Nats-Msg-Id).
TASK_DUPLICATE_WINDOW = 60.0


def reference_streams(subjects: Subjects, replicas: int = 1) -> list[StreamSpec]:
    s = subjects
    return [
        StreamSpec("AGENT_TASKS", [s.tasks("*")], retention="workqueue", storage="file",
                   max_age=7 * DAY, max_msgs=100_000, duplicate_window=TASK_DUPLICATE_WINDOW,
                   max_msg_size=MiB,
                   discard="old", replicas=replicas,
                   description="Task assignments per role; removed once acknowledged (seed 000)."),
        StreamSpec("AGENT_EVENTS", [s.org_events("*"), s.tasks_created("*"),
                                    s.tasks_completed("*")],
                   retention="limits", storage="file", max_age=7 * DAY, duplicate_window=60,
                   replicas=replicas,
                   description="Audit log of agent actions and task lifecycle; replayable."),
        StreamSpec("MEETINGS", [s.meeting_messages("*"), s.meeting_decisions("*")],
                   retention="limits", storage="file", max_age=7 * DAY, replicas=replicas,
                   description="Meeting transcripts and decisions; late joiners replay them."),
        StreamSpec("TOOL_REQUESTS", [s.tool_execute("*")], retention="workqueue",
                   storage="memory", max_age=5 * MINUTE, replicas=replicas,
                   description="Asynchronous tool calls waiting for a worker (seed 002)."),
        StreamSpec("TOOL_RESULTS", [s.tool_result("*")], retention="interest",
                   storage="memory", max_age=1 * MINUTE, replicas=replicas,
                   description="Tool results, kept while a consumer still wants them."),
        StreamSpec("DEAD_LETTERS", [s.dlq_all()], retention="limits", storage="file",
                   max_age=7 * DAY, duplicate_window=60, replicas=replicas,
                   description="Messages that failed for good, with the reason (DLQ)."),
        StreamSpec("CALL_INTENT", [s.call_intent("*")], retention="workqueue",
                   storage="file", max_age=DAY, allow_msg_ttl=True, replicas=replicas,
                   description="Short-lived intents with per-message TTL (seed 004)."),
    ]


def declare_reference_streams(client: Client, subjects: Subjects | None = None,
                              replicas: int = 1) -> list[str]:
    specs = reference_streams(subjects or Subjects(), replicas)
    for spec in specs:
        client.js.declare_stream(spec)
    return [spec.name for spec in specs]
