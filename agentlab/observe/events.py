"""One observed message, as a plain frozen object: who sent what to whom, and what it was.

    event = FlowEvent.publish(...)            # built by the recorder, read by every view
    event.kind, event.sender, event.receiver, event.trace_id, event.redelivered

What the observer can see, and how (one connection, four taps; see observer.py):

* **publishes** on the lab's subjects (``genbrain.>``): subject, size, headers and body, so
  the sender (``sender`` / ``requested_by`` / ``instance`` / ``role`` in the JSON), the type,
  ``Nats-Msg-Id`` and the trace (W3C ``traceparent``, else ``correlation_id``, else the
  task id). The connection that published is *not* visible: NATS does not carry it.
* **deliveries** of JetStream consumers whose deliver subject is an ``_INBOX.>`` inbox (pull
  consumers made by nats-py, hence every agent): the server routes them by the inbox and
  shows the original subject, with a ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>...``
  reply that says which consumer got it and the how-many-th delivery it is. Push consumers
  with other deliver subjects are not seen (their ack/advisories still are).
* **acks, naks, terms and progress** (``$JS.ACK.>``): the body is ``+ACK``, ``-NAK``,
  ``+TERM`` or ``+WPI``; the subject names stream, consumer and stream sequence. Who acked
  is the consumer; which instance of it is not visible.
* **advisories** (``$JS.EVENT.ADVISORY.>``): max deliveries reached (the dead-letter
  trigger), terminated, nak'ed, consumer/stream created or deleted, leader elections.
  The API audit advisory (one per JetStream API call) is counted, not recorded, but for
  the creation of a consumer with no durable name (an ordered consumer, a stream read): its
  ``client`` says which connection made it, so views name that consumer by its participant
  (the connection's name, an agent's instance such as ``cto-1``) instead of the name the
  server generated (``consumer_owner``).
* **dead letters** are publishes on ``genbrain.dlq.>`` (the DLQ office, decision 6).

* **requests and replies** (``replies=True``): a publish with a reply subject is a request;
  the answer that then arrives on that inbox (``_INBOX.>``) is its reply. The requester is
  named by its reply inbox (``_INBOX.<its prefix>.*``: NATS does not carry who published).
  Other inbox traffic (PubAcks, pull statuses) is counted, not recorded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

KINDS = ("publish", "request", "reply", "deliver", "ack", "nak", "term", "progress",
         "dead_letter", "advisory")
ACK_VERBS = {b"+ACK": "ack", b"-NAK": "nak", b"+TERM": "term", b"+WPI": "progress",
             b"+NXT": "ack"}


@dataclass(frozen=True, slots=True)
class FlowEvent:
    """One thing that happened on the wire, as the observer saw it.

    ``kind``: publish, deliver, ack, nak, term, progress (``+WPI``), dead_letter, advisory.
    ``sender``/``receiver``: an agent role, a stream name or "" when not knowable.
    ``subject``: the message's subject (for acks: the subject of the message acked, when
    its delivery was seen). ``deliveries``: how many times JetStream has delivered it.
    """

    seq: int
    time: float
    kind: str
    subject: str
    sender: str = ""
    receiver: str = ""
    type: str = ""
    size: int = 0
    trace_id: str = ""
    msg_id: str = ""
    stream: str = ""
    consumer: str = ""
    stream_seq: int = 0
    deliveries: int = 0
    title: str = ""
    reply: str = ""              # a request's reply inbox

    @property
    def redelivered(self) -> bool:
        return self.deliveries > 1

    @property
    def is_ack(self) -> bool:
        return self.kind == "ack"

    @property
    def is_nak(self) -> bool:
        return self.kind == "nak"

    @property
    def is_term(self) -> bool:
        return self.kind == "term"

    @property
    def is_dead_letter(self) -> bool:
        return self.kind == "dead_letter"

    def label(self) -> str:
        """A short text for an arrow: what it was, and which task or step."""
        what = self.type or self.kind
        if self.kind == "deliver" and self.redelivered:
            what = f"redelivery #{self.deliveries}: {what}"
        elif self.kind == "request":
            what = f"request, reply to {self.reply}"
        elif self.kind == "reply":
            what = f"reply{': ' + self.type if self.type else ''} → {self.subject}"
        elif self.kind in ("ack", "nak", "term", "progress"):
            what = {"ack": "ack", "nak": "nak (retry)", "term": "term (never retry)",
                    "progress": "in progress"}[self.kind]
        return f"{what} · {self.title}" if self.title else what


@dataclass(frozen=True, slots=True)
class BodyInfo:
    """What the JSON body of a lab message says about itself (parsed once per message id)."""

    sender: str = ""
    type: str = ""
    trace_id: str = ""
    title: str = ""
    receiver: str = ""


_EMPTY = BodyInfo()


def body_info(data: bytes, headers: dict | None) -> BodyInfo:
    """Sender, type, trace and a title from a JSON body; empty for anything else."""
    trace = _traceparent(headers)
    if not data or data[:1] != b"{" or len(data) > 65536:
        return BodyInfo(trace_id=trace) if trace else _EMPTY
    try:
        body = json.loads(data)
    except ValueError:
        return BodyInfo(type="not JSON", trace_id=trace, title="(poison?)")
    if not isinstance(body, dict):
        return BodyInfo(trace_id=trace) if trace else _EMPTY
    get = body.get
    kind = get("type")
    raw_payload = get("payload")
    payload = raw_payload if isinstance(raw_payload, dict) else {}
    if "requested_by" in body and "role" in body and "title" in body:           # Task
        return BodyInfo(sender=_s(get("requested_by")), type="task",
                        trace_id=trace or _s(get("correlation_id") or get("id")),
                        title=_s(get("title")), receiver=_s(get("role")))
    if "task_id" in body and "instance" in body:                                # TaskCompleted
        return BodyInfo(sender=completer(_s(get("role")), _s(get("instance"))),
                        type="task.completed",
                        trace_id=trace or _s(get("correlation_id") or get("task_id")),
                        title=_s(get("title")))
    if "reason" in body and "original_subject" in body:                         # DeadLetter
        return BodyInfo(sender=_s(get("consumer")), type=f"dead letter ({get('reason')})",
                        title=_s(get("error"))[:60])
    if "invitee" in body and "organizer" in body and "meeting_id" in body:       # invitation
        return BodyInfo(sender=_s(get("organizer")), type="meeting.invitation",
                        trace_id=trace or _s(get("meeting_id")), title=_s(get("topic")),
                        receiver=_s(get("invitee")))
    if "meeting_id" in body and "kind" in body and "sender" in body:            # MeetingEntry
        return BodyInfo(sender=_s(get("sender")), type=f"meeting.{get('kind')}",
                        trace_id=trace or _s(get("meeting_id")), title=_s(get("text")))
    if "tool" in body and "conversation_id" in body and "arguments" in body:    # ToolCall
        return BodyInfo(sender=_s(get("requested_by")), type=f"tool call: {get('tool')}",
                        trace_id=trace or _s(get("id")), title=_s(get("tool")))
    if "call_id" in body and "status" in body and "tool" in body:               # ToolResult
        return BodyInfo(sender=f"tool-{get('tool')}", type=f"tool result: {get('status')}",
                        trace_id=trace or _s(get("call_id")), title=_s(get("tool")))
    if "sender" in body:                                                         # AgentMessage
        text = payload.get("text") or payload.get("title") or ""
        return BodyInfo(sender=_s(get("sender")), type=_s(kind or "message"),
                        trace_id=trace or _s(get("correlation_id") or get("id")),
                        title=_s(text))
    if kind == "agent.action":
        return BodyInfo(sender=_s(get("role")), type=f"audit: {get('action')}",
                        trace_id=trace or _s(get("task_id") or ""),
                        title=_s((get("details") or {}).get("title", "")))
    if "instance" in body and "processed" in body:                              # Heartbeat
        return BodyInfo(sender=_s(get("role")), type="heartbeat", trace_id=trace)
    if "beats" in body and "interval" in body:                                  # Heartbeats
        return BodyInfo(sender="agents", type="heartbeat", trace_id=trace)
    if "queues" in body and "scale_threshold" in body:                          # SystemMetrics
        return BodyInfo(sender="health", type="metrics", trace_id=trace)
    sender = get("sender") or get("from") or get("source") or get("role") or \
        get("worker") or ""
    return BodyInfo(sender=_s(sender), type=_s(kind or ""), trace_id=trace,
                    title=_s(get("title") or get("text") or ""))


def completer(role: str, instance: str) -> str:
    """Who completed a task: its role, when one of the role's agents did (instances are named
    ``<role>-<n>``), else ``<role>/<worker>``: a queue worked by hand, such as the browser
    agent's ``cto/browser`` or an MCP client's desk."""
    if not instance or instance == role or instance.startswith(f"{role}-"):
        return role
    return f"{role}/{instance}"


def _s(value: object) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


def _traceparent(headers: dict | None) -> str:
    """The trace id of a W3C ``traceparent`` header (version-traceid-spanid-flags)."""
    if not headers:
        return ""
    value = headers.get("traceparent")
    if not value:
        return ""
    parts = value.split("-")
    return parts[1] if len(parts) >= 4 else value


def requester(reply: str) -> str:
    """Who asked, named by its reply inbox: a connection's requests share one prefix
    (``_INBOX.<prefix>.<token>``), so ``_INBOX.<prefix>.*`` names the requester."""
    tokens = reply.split(".")
    return ".".join(tokens[:-1]) + ".*" if len(tokens) > 2 else reply


def subject_receiver(subject: str, root: str) -> str:
    """Who a subject is addressed to, from the lab's hierarchy (``agents.{role}.inbox``...)."""
    tokens = subject.split(".")
    if tokens[0] != root or len(tokens) < 3:
        return ""
    section = tokens[1]
    if section == "agents" and tokens[2:] == ["heartbeats"]:
        return "health"
    if section == "agents" and len(tokens) >= 4:
        return tokens[2] if tokens[3] in ("inbox", "tasks", "meetings") else "health" \
            if tokens[3] == "heartbeat" else ""
    if section == "tools" and len(tokens) >= 4:
        return f"tool:{tokens[3]}" if tokens[2] == "execute" else ""
    if section == "org" and len(tokens) >= 4 and tokens[2] == "system":
        return "observers"
    return ""


def normalise_subject(subject: str, root: str) -> str:
    """Fold per-conversation tokens so the topology has one node per kind of subject."""
    tokens = subject.split(".")
    if len(tokens) >= 3 and tokens[0] == root:
        if tokens[1] == "meetings":
            return ".".join(tokens[:2] + ["*"] + tokens[3:])
        if tokens[1] == "tools" and len(tokens) >= 4 and tokens[2] == "result":
            return ".".join(tokens[:3] + ["*"])
        if tokens[1] == "dlq":
            return ".".join(tokens[:2] + [">"])
    if tokens[0] == "$JS" and len(tokens) >= 4 and tokens[1] == "EVENT":
        return ".".join(tokens[:5])
    return subject


def parse_ack(subject: str) -> tuple[str, str, int, int] | None:
    """``(stream, consumer, delivered, stream_seq)`` from a ``$JS.ACK`` subject (v1 or v2)."""
    tokens = subject.split(".")
    if len(tokens) < 9 or tokens[0] != "$JS" or tokens[1] != "ACK":
        return None
    if len(tokens) >= 12:
        tokens = tokens[:2] + tokens[4:]
    try:
        return tokens[2], tokens[3], int(tokens[4]), int(tokens[5])
    except ValueError:
        return None


API_AUDIT = "$JS.EVENT.ADVISORY.API"
_CREATES = (b'"$JS.API.CONSUMER.CREATE.', b'"$JS.API.CONSUMER.DURABLE.CREATE.')


def creates_consumer(data: bytes) -> bool:
    """Whether an API audit advisory is about creating a consumer (cheap: no JSON parsing)."""
    return any(create in data for create in _CREATES)


def consumer_owner(data: bytes) -> tuple[str, str] | None:
    """``(consumer, connection name)`` from the API audit of an ephemeral consumer's
    creation (no durable name: a durable belongs to a role, not to one connection)."""
    try:
        audit = json.loads(data)
        response = json.loads(audit.get("response") or "{}")
    except (ValueError, TypeError, AttributeError):
        return None
    if not isinstance(response, dict) or response.get("error"):
        return None
    config = response.get("config") or {}
    name = response.get("name")
    owner = (audit.get("client") or {}).get("name")
    if not name or not owner or config.get("durable_name"):
        return None
    return str(name), str(owner)


ADVISORY_NAMES = {
    "MAX_DELIVERIES": "max deliveries reached", "MSG_TERMINATED": "terminated",
    "MSG_NAKED": "nak'ed", "CREATED": "created", "DELETED": "deleted",
    "LEADER_ELECTED": "leader elected", "QUORUM_LOST": "quorum lost",
    "DELIVERY_EXCEEDED": "max deliveries reached",
}


def advisory_fields(subject: str, data: bytes) -> tuple[str, str, str, int, int]:
    """``(what, stream, consumer, stream_seq, deliveries)`` of a JetStream advisory."""
    tokens = subject.split(".")
    # $JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<consumer>
    what = tokens[4] if len(tokens) > 4 else "?"
    stream = tokens[5] if len(tokens) > 5 else ""
    consumer = tokens[6] if len(tokens) > 6 else ""
    seq = deliveries = 0
    try:
        body = json.loads(data)
        seq = int(body.get("stream_seq") or 0)
        deliveries = int(body.get("deliveries") or 0)
    except (ValueError, TypeError, AttributeError):
        pass
    return ADVISORY_NAMES.get(what, what.lower().replace("_", " ")), stream, consumer, \
        seq, deliveries
