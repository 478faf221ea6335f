"""Every subject the organisation uses, once: the table the AsyncAPI document, docs/protocol.md
and the tap test are all made from.

    for channel in CHANNELS:
        print(channel.address, channel.pattern, channel.stream)
    # genbrain.agents.{role}.tasks  genbrain.agents.*.tasks  AGENT_TASKS ...

Addresses are built with the :class:`~agentlab.core.subjects.Subjects` builders (default root
``genbrain``), as ``Subjects.tree()`` draws them, so they cannot drift from the code; only the
server's own subjects (``$KV``, ``$JS``, ``$SRV``) and the Synadia protocol's are written out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..core.subjects import Subjects
from ..org.deadletters import ADVISORY
from ..org.models import EVENT_TYPE_PATTERN, TASK_ID_PATTERN, TOKEN_PATTERN
from ..org.streams import (
    DLQ_STREAM,
    EVENTS_STREAM,
    FAILURES_BUCKET,
    INTENT_STREAM,
    LEDGER_BUCKET,
    MEETINGS_STREAM,
    TASK_STREAM,
    TOOL_REQUEST_STREAM,
    TOOL_RESULT_STREAM,
)

__all__ = ["CHANNELS", "EXTERNAL_SCHEMAS", "HEADERS", "MESSAGES", "MULTI_TOKEN", "PARAMETERS",
           "Channel", "Message", "markdown_table"]

_S = Subjects()
SYNADIA_AGENT = "agentlab"  # agentlab.protocol.synadia.AGENT_NAME (that module needs its SDK)

# name -> (description, examples); a parameter is one subject token unless in MULTI_TOKEN.
PARAMETERS: dict[str, tuple[str, list[str]]] = {
    "role": ("A role, e.g. cto: one subject token. The role's agents share the durable "
             "consumer named after it.", ["cto", "ceo"]),
    "org": ("An organisation: one subject token, never 'system'.", ["acme"]),
    "meeting_id": ("A meeting's id: one subject token.", ["m3f9c2a1b0d4e"]),
    "tool": ("A tool's name: letters, digits, '_' and '-'.", ["web_search"]),
    "conversation_id": ("The caller's conversation: where its tool results go.", ["conv-7"]),
    "type": ("An event type: one or more tokens joined by '.'.", ["saga.started"]),
    "kind": ("An intent kind: one subject token.", ["book"]),
    "stream": ("The stream the message was stored in.", [TASK_STREAM]),
    "consumer": ("The durable consumer that gave up on it.", ["cto"]),
    "task_id": ("A task id: letters, digits, '-', '_', '=', '/'.", ["4f1c0e9a2b3d4c5e"]),
    "seq": ("The message's stream sequence.", ["42"]),
    "verb": ("PING, INFO or STATS (ADR-32).", ["PING", "INFO", "STATS"]),
    "service": ("A micro service name.", ["agentlab-agent-cto", "agents"]),
    "id": ("A micro service instance id.", ["Fp2IXDrnUTa7ALrK0sGmVb"]),
}
MULTI_TOKEN = frozenset({"type"})  # as a pattern: '>' (it is the last token), not '*'


def _header(description: str, **schema: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **schema}


_MSG_ID = "Nats-Msg-Id"
_TRACE = _header("W3C trace context; agentlab passes it on untouched (a redrive keeps it) "
                 "and its observer colours a flow by it. agentlab sets none itself.")
_REPUBLISHED = {
    "Nats-Stream": _header("Set by the server's republish: KV_TASK_LEDGER."),
    "Nats-Subject": _header(f"Set by the republish: the record's subject, "
                            f"$KV.{LEDGER_BUCKET}.{{org}}.{{task_id}}."),
    "Nats-Sequence": _header("Set by the republish: the record's sequence in KV_TASK_LEDGER."),
    "Nats-Last-Sequence": _header("Set by the republish: the stream's previous last sequence."),
    "Nats-Time-Stamp": _header("Set by the republish: when the record was stored."),
}


def _headers(required: dict[str, dict[str, Any]], **optional: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {**required, **optional},
            "required": list(required), "additionalProperties": {"type": "string"}}


# The header sets, by name: JSON Schemas of the NATS headers each message carries.
HEADERS: dict[str, dict[str, Any]] = {
    "TaskHeaders": _headers(
        {_MSG_ID: _header("The task id (a redriven task: redrive-{stream}.{seq}-{8 hex}); "
                          "AGENT_TASKS drops a resend within 60 s.", pattern=TASK_ID_PATTERN)},
        traceparent=_TRACE,
        **{"Agentlab-Redriven-From": _header(
            "Set by a redrive: the dead letter it came from; the agent then reads the "
            "ledger before it runs the task.", pattern=f"^{DLQ_STREAM}#[0-9]+$")}),
    "TaskCreatedHeaders": _headers({_MSG_ID: _header("{task id}.created.")}),
    "CompletionHeaders": _headers(
        {_MSG_ID: _header("{org}.{task_id}.completed: AGENT_EVENTS keeps one per task.")},
        **_REPUBLISHED),
    "LedgerHeaders": _headers({_MSG_ID: _header("{org}.{task_id}.completed.")}),
    "DeadLetterHeaders": _headers({_MSG_ID: _header("{stream}.{seq} of the original.")}),
    "ToolCallHeaders": _headers({_MSG_ID: _header("The call id.")}),
    "ToolResultHeaders": _headers({_MSG_ID: _header("{call id}.result.")}),
    "MeetingHeaders": _headers({_MSG_ID: _header("The entry's id.")}),
    "IntentHeaders": _headers(
        {"Nats-TTL": _header("Whole seconds the intent lives; then the server deletes it.",
                             pattern="^[1-9][0-9]*$")},
        **{_MSG_ID: _header("Optional: the intent's id, for deduplication.")}),
    "ErrorReplyHeaders": _headers(
        {"Agentlab-Error": _header("The class of the exception the handler raised.")}),
    "ServiceErrorHeaders": _headers(
        {"Nats-Service-Error": _header("What was wrong and how to fix it (ADR-32)."),
         "Nats-Service-Error-Code": _header("400: a bad request; 503: not stored, resend.",
                                            pattern="^[0-9]{3}$")}),
}


def _object(description: str, **properties: Any) -> dict[str, Any]:
    return {"type": "object", "description": description, "properties": properties}


# Payloads that are no agentlab wire model: the server's, ADR-32's, the Synadia protocol's.
EXTERNAL_SCHEMAS: dict[str, dict[str, Any]] = {
    "AnyJSON": {"description": "Any JSON value; agentlab does not look inside."},
    "Empty": {"description": "An empty body (or any: it is not read)."},
    "MaxDeliveriesAdvisory": _object(
        "The server's io.nats.jetstream.advisory.v1.max_deliver advisory.",
        type={"const": "io.nats.jetstream.advisory.v1.max_deliver"}, id={"type": "string"},
        timestamp={"type": "string"}, stream={"type": "string"},
        consumer={"type": "string"}, stream_seq={"type": "integer"},
        deliveries={"type": "integer"}),
    "MicroResponse": _object(
        "An ADR-32 io.nats.micro.v1.ping_response, info_response or stats_response.",
        type={"type": "string"}, name={"type": "string"}, id={"type": "string"},
        version={"type": "string"}, metadata={"type": "object"},
        endpoints={"type": "array", "items": {"type": "object"}}),
    "PoolStats": _object("A tool worker pool's counters and in_flight.",
                         calls={"type": "integer"}, ok={"type": "integer"},
                         errors={"type": "integer"}, in_flight={"type": "integer"}),
    "SynadiaEnvelope": _object("A Synadia Agent Protocol v0.3 prompt envelope; agentlab reads "
                               "prompt, and the extension fields prompt_id and details.",
                               prompt={"type": "string"}, prompt_id={"type": "string"},
                               details={"type": "object"}),
    "SynadiaChunk": _object("A Synadia Agent Protocol stream chunk: status chunks "
                            "(queued:, progress:, ack) then the result's JSON, then the "
                            "terminator."),
    "SynadiaHeartbeat": _object("A Synadia Agent Protocol §8.3 heartbeat."),
    "SynadiaStatus": _object("A Synadia Agent Protocol status answer."),
}


@dataclass(frozen=True)
class Message:
    """A message kind: its payload schema (a wire model or an EXTERNAL_SCHEMAS entry)."""

    name: str
    schema: str
    summary: str
    headers: str | None = None  # a HEADERS name


MESSAGES: dict[str, Message] = {m.name: m for m in [
    Message("Task", "Task", "A task: the bare Task object is the whole payload.", "TaskHeaders"),
    Message("TaskCreated", "Task", "A copy of a task as it is delegated.", "TaskCreatedHeaders"),
    Message("TaskCompleted", "TaskCompleted", "A task's recorded effect, announced once.",
            "CompletionHeaders"),
    Message("LedgerRecord", "TaskCompleted", "A task's record in TASK_LEDGER (first wins).",
            "LedgerHeaders"),
    Message("InboxRequest", "AnyJSON", "A request to a role (any body; the reply subject "
            "matters)."),
    Message("ProgressNote", "AgentMessage", 'An AgentMessage envelope, type "task.progress".'),
    Message("AgentStatus", "AgentStatus", "An agent's status reply."),
    Message("ErrorReply", "ErrorReply", "A handler raised: the reply says what.",
            "ErrorReplyHeaders"),
    Message("MeetingInvitation", "MeetingInvitation", "An invitation to a meeting."),
    Message("Heartbeat", "Heartbeat", "An agent instance's beat."),
    Message("Heartbeats", "Heartbeats", "The beats of every agent of a process."),
    Message("AgentAction", "AgentAction", "An audit event of an agent's action."),
    Message("AgentHealth", "AgentHealth", "An instance went up or down."),
    Message("ScalingSignal", "ScalingSignal", "A queue crossed a depth threshold."),
    Message("SystemMetrics", "SystemMetrics", "Every queue and agent, each tick."),
    Message("MeetingEntry", "MeetingEntry", "A transcript line.", "MeetingHeaders"),
    Message("ToolCall", "ToolCall", "An asynchronous tool call.", "ToolCallHeaders"),
    Message("ToolResult", "ToolResult", "A tool call's outcome.", "ToolResultHeaders"),
    Message("Event", "Event", "A domain event."),
    Message("Intent", "AnyJSON", "An intent (any JSON) that expires.", "IntentHeaders"),
    Message("DeadLetter", "DeadLetter", "A message that failed for good.", "DeadLetterHeaders"),
    Message("FailureRecord", "FailureRecord", "A message's latest failure."),
    Message("MaxDeliveriesAdvisory", "MaxDeliveriesAdvisory", "The server gave up on one."),
    Message("ServiceRequest", "Empty", "A request to a micro service endpoint."),
    Message("DelegateRequest", "DelegateRequest", "Delegate a task through the service."),
    Message("DelegateAccepted", "DelegateAccepted", "Where the delegated task is stored."),
    Message("ServiceError", "Empty", "An ADR-32 error reply: empty body, error headers.",
            "ServiceErrorHeaders"),
    Message("PoolStats", "PoolStats", "A tool pool's counters."),
    Message("MicroResponse", "MicroResponse", "A micro service's PING, INFO or STATS answer."),
    Message("SynadiaPrompt", "SynadiaEnvelope", "A prompt to a protocol agent."),
    Message("SynadiaChunk", "SynadiaChunk", "One chunk of a prompt's answer stream."),
    Message("SynadiaHeartbeat", "SynadiaHeartbeat", "A protocol agent's heartbeat."),
    Message("SynadiaStatus", "SynadiaStatus", "A protocol agent's status."),
]}


@dataclass(frozen=True)
class Channel:
    """One subject (``address``, ``{name}`` for a parameter) and what travels on it.

    ``sends``/``receives``: what agentlab itself does there (the document's operations);
    ``sent``: the messages agentlab sends there, when it receives the others only.
    ``replies``: the messages a request on it is answered with (NATS request/reply).
    """

    id: str
    address: str
    messages: tuple[str, ...]
    summary: str
    sender: str
    receiver: str
    stream: str = ""
    sends: bool = True
    receives: bool = False
    replies: tuple[str, ...] = ()
    tags: tuple[str, ...] = field(default=("organisation",))
    sent: tuple[str, ...] = ()

    @property
    def parameters(self) -> list[str]:
        return [token[1:-1] for token in self.address.split(".") if token.startswith("{")]

    @property
    def pattern(self) -> str:
        """The address with its parameters as wildcards: what a subscriber would use."""
        return ".".join((">" if token[1:-1] in MULTI_TOKEN else "*")
                        if token.startswith("{") else token for token in self.address.split("."))


_KV = "jetstream"
CHANNELS: list[Channel] = [
    Channel("agentTasks", _S.tasks("{role}"), ("Task",), "A role's durable work queue.",
            "anyone who delegates: an agent, Organisation.assign, any NATS client",
            "the role's agents (durable pull consumer {role}, explicit ack)", TASK_STREAM,
            receives=True),
    Channel("agentInbox", _S.inbox("{role}"), ("InboxRequest", "ProgressNote"),
            "Requests to a role, and progress notes for whoever asked for a task.",
            "any client (requests); agents reporting progress", "the role's agents "
            "(queue group {role}); the requester", sends=True, receives=True,
            replies=("AgentStatus", "ErrorReply"), sent=("ProgressNote",)),
    Channel("agentMeetings", _S.meetings("{role}"), ("MeetingInvitation",),
            "Meeting invitations for a role.", "a meeting's organizer", "the role's attendee",
            receives=True),
    Channel("agentHeartbeats", _S.heartbeats(), ("Heartbeats",),
            "The heartbeats of every agent of a process (one login, one interval) in one "
            "message.", "agentlab's agents (one timer per process)", "the health monitor",
            sends=True, receives=True),
    Channel("agentHeartbeat", _S.heartbeat("{role}"), ("Heartbeat",),
            "One agent instance's heartbeat, alone (agents of other kinds).",
            "an agent that beats on its own", "the health monitor", sends=False,
            receives=True),
    Channel("agentStatusService", _S.agent_service("{role}", "{org}", "status"),
            ("ServiceRequest",), "A role's micro service endpoint: status.", "any client",
            "the role's agents (queue group {role})", sends=False, receives=True,
            replies=("AgentStatus",), tags=("micro",)),
    Channel("agentDelegateService", _S.agent_service("{role}", "{org}", "delegate"),
            ("DelegateRequest",), "A role's micro service endpoint: delegate a task.",
            "any client", "the role's agents (queue group {role})", sends=False,
            receives=True, replies=("DelegateAccepted", "ServiceError"), tags=("micro",)),
    Channel("orgEvents", _S.org_events("{org}"), ("AgentAction",), "The org's audit log.",
            "agents (ctx.audit)", "audit replay", EVENTS_STREAM, receives=True),
    Channel("tasksCreated", _S.tasks_created("{org}"), ("TaskCreated",),
            "Every task as it is delegated.", "whoever delegates", "audit replay",
            EVENTS_STREAM, receives=True),
    Channel("tasksCompleted", _S.tasks_completed("{org}"), ("TaskCompleted",),
            "Each task's completion, announced once its effect is recorded.",
            "the server, republishing each TASK_LEDGER record; an agent announcing a "
            "recorded task again", "the delegator, the Synadia gateway, audit replay",
            EVENTS_STREAM, receives=True),
    Channel("systemHealth", _S.system_health(), ("AgentHealth",),
            "Agent instances going up or down.", "the health monitor", "dashboards"),
    Channel("systemScaling", _S.system_scaling(), ("ScalingSignal",),
            "Scaling cues, one per threshold crossing.", "the health monitor", "autoscalers"),
    Channel("systemMetrics", _S.system_metrics(), ("SystemMetrics",),
            "Queue and agent metrics, every tick.", "the health monitor", "dashboards"),
    Channel("meetingMessages", _S.meeting_messages("{meeting_id}"), ("MeetingEntry",),
            "What is said in a meeting.", "participants", "participants, late joiners",
            MEETINGS_STREAM, receives=True),
    Channel("meetingDecisions", _S.meeting_decisions("{meeting_id}"), ("MeetingEntry",),
            "What a meeting decides.", "participants", "participants, late joiners",
            MEETINGS_STREAM, receives=True),
    Channel("toolExecute", _S.tool_execute("{tool}"), ("ToolCall",),
            "Asynchronous tool calls.", "agents (ToolClient)",
            "the tool's worker pool (durable consumer tool-{tool})", TOOL_REQUEST_STREAM,
            receives=True),
    Channel("toolResult", _S.tool_result("{conversation_id}"), ("ToolResult",),
            "A conversation's tool results.", "the worker pools",
            "the conversation's ToolClient (its own consumer)", TOOL_RESULT_STREAM,
            receives=True),
    Channel("toolStatsService", _S.tool_service("{tool}", "stats"), ("ServiceRequest",),
            "A tool pool's micro service endpoint: stats.", "any client",
            "the pool (queue group tool-{tool})", sends=False, receives=True,
            replies=("PoolStats",), tags=("micro",)),
    Channel("events", _S.event("{type}"), ("Event",), "Domain events; sagas report on "
            "saga.*.", "emit_event, sagas", "each subscribed agent type once (queue group)",
            receives=True),
    Channel("callIntent", _S.call_intent("{kind}"), ("Intent",),
            "Intents with a per-message TTL.", "publish_intent",
            "IntentQueue (durable consumer intent-{kind})", INTENT_STREAM, receives=True),
    Channel("deadLetters", _S.dlq("{stream}", "{consumer}"), ("DeadLetter",),
            "Messages that failed for good, with the reason.",
            "the dead-letter office; agents and tool pools (poison)",
            "agentlab dlq, DeadLetterOffice (list, redrive)", DLQ_STREAM, receives=True),
    Channel("taskLedger", f"$KV.{LEDGER_BUCKET}.{{org}}.{{task_id}}", ("LedgerRecord",),
            "TASK_LEDGER: each task's effect, once (key {org}.{task_id}).",
            "the agent that ran the task", "agents and the gateway (KV get)",
            f"KV_{LEDGER_BUCKET}", receives=True, tags=(_KV,)),
    Channel("taskFailures", f"$KV.{FAILURES_BUCKET}.{{stream}}.{{seq}}", ("FailureRecord",),
            "TASK_FAILURES: the latest error of a work-queue message (key {stream}.{seq}).",
            "agents, tool pools", "the dead-letter office", f"KV_{FAILURES_BUCKET}",
            receives=True, tags=(_KV,)),
    Channel("maxDeliveries", f"{ADVISORY}.{{stream}}.{{consumer}}",
            ("MaxDeliveriesAdvisory",), "The server gave up on a message.", "nats-server",
            "the dead-letter office", sends=False, receives=True, tags=(_KV,)),
    Channel("microAll", "$SRV.{verb}", ("ServiceRequest",), "ADR-32 discovery: every service.",
            "nats micro ls, any client", "every agent, tool pool and Synadia gateway service",
            sends=False, receives=True, replies=("MicroResponse",), tags=("micro",)),
    Channel("microByName", "$SRV.{verb}.{service}", ("ServiceRequest",),
            "ADR-32 discovery: one service's instances.", "nats micro info, any client",
            "the named service's instances", sends=False, receives=True,
            replies=("MicroResponse",), tags=("micro",)),
    Channel("microById", "$SRV.{verb}.{service}.{id}", ("ServiceRequest",),
            "ADR-32 discovery: one instance.", "any client", "that instance", sends=False,
            receives=True, replies=("MicroResponse",), tags=("micro",)),
    Channel("synadiaPrompt", f"agents.prompt.{SYNADIA_AGENT}.{{org}}.{{role}}",
            ("SynadiaPrompt",), "The Synadia gateway: a prompt becomes a durable task.",
            "any Synadia Agent Protocol caller", "the gateway (agentlab.protocol.synadia)",
            sends=False, receives=True, replies=("SynadiaChunk",), tags=("synadia",)),
    Channel("synadiaStatus", f"agents.status.{SYNADIA_AGENT}.{{org}}.{{role}}",
            ("ServiceRequest",), "The Synadia gateway's status endpoint.",
            "protocol callers", "the gateway", sends=False, receives=True,
            replies=("SynadiaStatus",), tags=("synadia",)),
    Channel("synadiaHeartbeat", f"agents.hb.{SYNADIA_AGENT}.{{org}}.{{role}}",
            ("SynadiaHeartbeat",), "The Synadia gateway's protocol heartbeats.",
            "the gateway", "protocol discovery", tags=("synadia",)),
]


def parameter_schema(name: str) -> dict[str, Any]:
    """The JSON Schema a parameter's value satisfies (for docs and the tap test)."""
    pattern = {"type": EVENT_TYPE_PATTERN, "task_id": TASK_ID_PATTERN}.get(name, TOKEN_PATTERN)
    return {"type": "string", "pattern": pattern}


_PLAIN = {"AnyJSON": "any JSON", "Empty": "empty body"}


def markdown_table() -> str:
    """docs/protocol.md's table of subjects (between its generated-table markers)."""
    rows = ["| subject | stored in | payload | headers | from → to |",
            "|---|---|---|---|---|"]
    def shown(message: Message) -> str:
        return _PLAIN.get(message.schema, f"`{message.schema}`")

    for channel in CHANNELS:
        messages = [MESSAGES[name] for name in channel.messages]
        replies = [MESSAGES[name] for name in channel.replies]
        payload = ", ".join(dict.fromkeys(shown(m) for m in messages))
        if replies:
            payload += " → reply " + ", ".join(shown(m) for m in replies)
        headers = ", ".join(dict.fromkeys(m.headers for m in messages + replies
                                          if m.headers)) or "–"
        rows.append(f"| `{channel.address}` | {channel.stream or 'core NATS'} | {payload} | "
                    f"{headers} | {channel.sender} → {channel.receiver} |")
    return "\n".join(rows) + "\n"
