"""The reference streams, one per domain as the seeds advise, declared idempotently.

    declare_reference_streams(lab)          # replicas 1 here
    declare_replicated_streams(lab, 3)      # on a cluster: 3 copies, retried while it settles
"""

from __future__ import annotations

import logging
import time

from ..core._natspy import server_info
from ..core.client import Client
from ..core.specs import DAY, MINUTE, MiB, StreamSpec
from ..core.subjects import Subjects
from ..errors import JetStreamError, RequestTimeout
from ..tenants.config import TenantAssets

log = logging.getLogger("agentlab")


# The reference organisation's streams, named here and nowhere else.
TASK_STREAM = "AGENT_TASKS"
EVENTS_STREAM = "AGENT_EVENTS"
MEETINGS_STREAM = "MEETINGS"
TOOL_REQUEST_STREAM = "TOOL_REQUESTS"
TOOL_RESULT_STREAM = "TOOL_RESULTS"
DLQ_STREAM = "DEAD_LETTERS"
INTENT_STREAM = "CALL_INTENT"
# Its key-value and object buckets.
LEDGER_BUCKET = "TASK_LEDGER"
LEASE_BUCKET = "TASK_LEASES"
FAILURES_BUCKET = "TASK_FAILURES"
PAYLOAD_BUCKET = "TOOL_PAYLOADS"
# Streams whose max-delivery advisories the dead-letter office turns into letters.
WORK_STREAMS = (TASK_STREAM, TOOL_REQUEST_STREAM)

# Within this window a resent task id is dropped by the stream itself (Nats-Msg-Id).
TASK_DUPLICATE_WINDOW = 60.0
# How long the marker an expired intent leaves in CALL_INTENT stays (NATS 2.11 subject delete
# markers). The server raises every shorter message TTL to it, so it is the shortest there
# is: an intent published with ttl=1 still lives one second.
INTENT_MARKER_TTL = 1.0


def reference_streams(subjects: Subjects, replicas: int = 1) -> list[StreamSpec]:
    s = subjects
    return [
        StreamSpec(TASK_STREAM, [s.tasks("*")], retention="workqueue", storage="file",
                   max_age=7 * DAY, max_msgs=100_000, duplicate_window=TASK_DUPLICATE_WINDOW,
                   max_msg_size=MiB,
                   discard="old", replicas=replicas,
                   description="Task assignments per role; removed once acknowledged (seed 000)."),
        StreamSpec(EVENTS_STREAM, [s.org_events("*"), s.tasks_created("*"),
                                    s.tasks_completed("*")],
                   retention="limits", storage="file", max_age=7 * DAY, duplicate_window=60,
                   replicas=replicas,
                   description="Audit log of agent actions and task lifecycle; replayable."),
        StreamSpec(MEETINGS_STREAM, [s.meeting_messages("*"), s.meeting_decisions("*")],
                   retention="limits", storage="file", max_age=7 * DAY, replicas=replicas,
                   description="Meeting transcripts and decisions; late joiners replay them."),
        StreamSpec(TOOL_REQUEST_STREAM, [s.tool_execute("*")], retention="workqueue",
                   storage="memory", max_age=5 * MINUTE, replicas=replicas,
                   description="Asynchronous tool calls waiting for a worker (seed 002)."),
        StreamSpec(TOOL_RESULT_STREAM, [s.tool_result("*")], retention="interest",
                   storage="memory", max_age=1 * MINUTE, replicas=replicas,
                   description="Tool results, kept while a consumer still wants them."),
        StreamSpec(DLQ_STREAM, [s.dlq_all()], retention="limits", storage="file",
                   max_age=7 * DAY, duplicate_window=60, replicas=replicas,
                   description="Messages that failed for good, with the reason (DLQ)."),
        StreamSpec(INTENT_STREAM, [s.call_intent("*")], retention="workqueue",
                   storage="file", max_age=DAY, allow_msg_ttl=True,
                   subject_delete_marker_ttl=INTENT_MARKER_TTL, replicas=replicas,
                   description="Short-lived intents with per-message TTL; the last one of "
                               "a kind to expire leaves a delete marker (seed 004)."),
    ]


def reference_assets() -> TenantAssets:
    """What each tenant of a lab running the reference organisation keeps in JetStream."""
    return TenantAssets(reference_streams, (LEDGER_BUCKET, LEASE_BUCKET, FAILURES_BUCKET),
                        (PAYLOAD_BUCKET,))


def declare_reference_streams(client: Client, subjects: Subjects | None = None,
                              replicas: int = 1) -> list[str]:
    specs = reference_streams(subjects or Subjects(), replicas)
    for spec in specs:
        client.js.declare_stream(spec)
    return [spec.name for spec in specs]


_RETRYABLE = ("temporarily unavailable", "insufficient resources", "no suitable peers",
              "timed out", "timeout", "leader")


def declare_replicated_streams(client: Client, replicas: int = 3,
                               subjects: Subjects | None = None, timeout: float = 20
                               ) -> tuple[list[str], int]:
    """The reference streams with ``replicas`` copies each; returns (names, replicas used).

    A server that is not clustered cannot keep more than one copy: there, one is used (and
    a warning logged). Just after a cluster forms, JetStream may not place replicas yet; the
    declaration is retried until ``timeout``.
    """
    if replicas > 1 and not server_info(client.nc).get("cluster"):
        log.warning("The server at %s is not part of a cluster: the streams get 1 replica, "
                    "not %d.", client.url, replicas)
        replicas = 1
    deadline = time.monotonic() + timeout
    while True:
        try:
            return declare_reference_streams(client, subjects, replicas=replicas), replicas
        except (JetStreamError, RequestTimeout) as error:
            retry = isinstance(error, RequestTimeout) or \
                any(word in str(error).lower() for word in _RETRYABLE)
            if not retry or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
