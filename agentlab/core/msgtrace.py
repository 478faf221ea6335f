"""NATS message tracing (nats-server 2.11+, ADR-41): the servers' own account of one message.

    trace = trace_message(client, "genbrain.agents.cto.tasks", {"title": "ship it"})
    trace.ingress            # how it entered: the publishing connection, account, subject
    trace.jetstream          # the streams that stored it (JetStream events)
    trace.egresses           # every connection it left by: subscribers, routes, leafnodes
    trace.consumers          # the stream's consumers that deliver it (see below)

The message goes out with a ``Nats-Trace-Dest`` header naming a fresh inbox. Every server it
passes publishes one trace event there: what it did with the message, in order (``in``
ingress, ``sm`` subject mapping, ``se`` stream export, ``si`` service import, ``js`` the
stream that stored it, ``eg`` each egress). A server that forwards it over a route, gateway
or leafnode says to how many (``hops``) and the next server's event carries the hop id, so
the collection knows when every server has reported. ``trace_only=True`` adds
``Nats-Trace-Only``: the servers trace the message to its destinations without delivering or
storing it.

The servers' trace of a JetStream publish ends at the stream: a consumer delivers the stored
message later, on its own, so no trace event names it. The consumers here come from the
stream's consumer infos instead (the ones whose filter takes the subject), with whether each
has delivered the message yet (by its sequence, from the stream's receipt).

This module collects and holds the trace; ``agentlab.reports.msgtrace`` draws it (a table and
a diagram), and ``lab.trace_message(...)`` does both.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from ..errors import AgentlabError, NoMessage, SubscriptionClosed
from ._natspy import server_info
from .jetstream import PubAck
from .subjects import subject_matches

if TYPE_CHECKING:
    from nats.js.api import ConsumerInfo

    from .client import Client
    from .subscription import Subscription

__all__ = ["CONNECTION_KINDS", "EVENT_TYPES", "TRACE_DEST", "TRACE_HOP", "TRACE_ONLY",
           "ConsumerHop", "MessageTrace", "ServerTrace", "TraceEvent", "atrace_message",
           "all_reported", "parse_trace_event", "trace_message"]

TRACE_DEST = "Nats-Trace-Dest"  # where every server sends its trace event of the message
TRACE_ONLY = "Nats-Trace-Only"  # "true": trace it, deliver and store nothing
TRACE_HOP = "Nats-Trace-Hop"    # set by a server forwarding it: "1", "1.2", ...

# A connection's kind, as nats-server numbers them (ADR-41).
CONNECTION_KINDS = {0: "client", 1: "route", 2: "gateway", 3: "system", 4: "leafnode",
                    5: "jetstream", 6: "account"}
EVENT_TYPES = {"in": "ingress", "sm": "subject mapping", "se": "stream export",
               "si": "service import", "js": "jetstream", "eg": "egress"}
# How long to wait for consumers that deliver at once (push, or pull with a fetch waiting)
# to have delivered the traced message, after the stream's receipt.
CONSUMER_SETTLE = 0.5


@dataclass(frozen=True)
class TraceEvent:
    """One thing one server did with the message: an entry of its trace event's ``events``.

    ``subject``: for an ingress, the subject published on; for an egress to a client, its
    subscription; for JetStream, the subject stored; for a subject mapping, the new subject;
    for a stream export or service import, the subject in the other account.
    """

    server: str
    hop: str                 # "" on the server the message entered first
    type: str                # "in", "sm", "se", "si", "js", "eg"
    timestamp: datetime | None
    kind: str = ""           # ingress and egress: "client", "route", "gateway", "leafnode"...
    name: str = ""           # the connection's name; the stream's; the other account's
    subject: str = ""
    account: str = ""
    queue: str = ""          # an egress to a queue subscriber: its group
    cid: int | None = None   # the connection's id on that server
    next_hop: str = ""       # an egress to another server: the hop id it gets there
    no_interest: bool = False  # JetStream: an interest stream kept it for no consumer
    error: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def what(self) -> str:
        """``ingress``, ``subject mapping``, ``stream export``, ``service import``,
        ``jetstream`` or ``egress``."""
        return EVENT_TYPES.get(self.type, self.type)


@dataclass(frozen=True)
class ServerTrace:
    """One server's trace event: its name, hop id, how many servers it forwarded to."""

    server: str
    hop: str
    hops: int
    events: tuple[TraceEvent, ...]
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class ConsumerHop:
    """A consumer of a stream that stored the message, whose filter takes its subject.

    ``delivered``/``acked``: whether the consumer has delivered (its acks have covered) the
    message's stream sequence; None when nothing was stored to ask about (``trace_only``).
    """

    stream: str
    name: str
    mode: Literal["pull", "push"]
    filters: tuple[str, ...]
    deliver_subject: str
    delivered: bool | None
    acked: bool | None
    num_pending: int
    num_waiting: int
    num_ack_pending: int


@dataclass(frozen=True)
class MessageTrace:
    """Everything the servers reported about one traced message, in hop order."""

    subject: str
    trace_only: bool
    dest: str
    servers: tuple[ServerTrace, ...]
    receipt: PubAck | None = None   # the stream's receipt, when one stored it
    consumers: tuple[ConsumerHop, ...] = ()
    complete: bool = True           # every server the message reached has reported
    notes: tuple[str, ...] = ()     # what the trace cannot show, and why

    @property
    def events(self) -> list[TraceEvent]:
        return [event for server in self.servers for event in server.events]

    @property
    def ingress(self) -> TraceEvent | None:
        """How the message entered the first server (None if no server reported)."""
        return next((e for e in self.events if e.type == "in"), None)

    @property
    def jetstream(self) -> list[TraceEvent]:
        return [e for e in self.events if e.type == "js"]

    @property
    def egresses(self) -> list[TraceEvent]:
        return [e for e in self.events if e.type == "eg"]

    @property
    def subscribers(self) -> list[TraceEvent]:
        """The egresses to client connections: the subscribers that got it (or would)."""
        return [e for e in self.egresses if e.kind == "client"]

    @property
    def errors(self) -> list[str]:
        return [f"{e.server}: {e.what}: {e.error}" for e in self.events if e.error]


def parse_trace_event(body: dict[str, Any]) -> ServerTrace:
    """One trace message's JSON (a ``MsgTraceEvent`` of nats-server's msgtrace.go)."""
    server = str((body.get("server") or {}).get("name") or "?")
    header = (body.get("request") or {}).get("header") or {}
    hop = next((values[0] for key, values in header.items()
                if key.lower() == TRACE_HOP.lower() and values), "")
    return ServerTrace(server, str(hop), int(body.get("hops") or 0),
                       tuple(_event(server, str(hop), raw) for raw in body.get("events") or ()),
                       body)


def _event(server: str, hop: str, raw: dict[str, Any]) -> TraceEvent:
    kind = raw.get("kind")
    kind_name = CONNECTION_KINDS.get(kind, str(kind)) if kind is not None else ""
    type_ = str(raw.get("type", "?"))
    if type_ == "js":
        name, subject, account = raw.get("stream", ""), raw.get("subject", ""), ""
    elif type_ in ("se", "si"):
        name, subject, account = raw.get("acc", ""), raw.get("to", ""), raw.get("acc", "")
    elif type_ == "sm":
        name, subject, account = "", raw.get("to", ""), ""
    else:
        name = raw.get("name", "")
        subject = raw.get("subj", "") if type_ == "in" else raw.get("sub", "")
        account = raw.get("acc", "")
    return TraceEvent(server=server, hop=hop, type=type_, timestamp=_time(raw.get("ts")),
                      kind=kind_name, name=str(name), subject=str(subject),
                      account=str(account), queue=str(raw.get("queue", "")),
                      cid=raw.get("cid"), next_hop=str(raw.get("hop", "")),
                      no_interest=bool(raw.get("nointerest")), error=str(raw.get("error", "")),
                      raw=raw)


def _time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    # Go writes nanoseconds; Python reads microseconds, and "Z" from 3.11 on.
    head, dot, tail = text.partition(".")
    if dot:
        digits = "".join(c for c in tail if c.isdigit())
        zone = tail[len(digits):]
        text = f"{head}.{digits[:6]}{zone}"
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _hop_order(hop: str) -> tuple[int, ...]:
    return tuple(int(part) for part in hop.split(".") if part.isdigit())


def trace_message(client: Client, subject: str, data: Any = b"", *,
                  headers: dict[str, str] | None = None, trace_only: bool = False,
                  timeout: float = 2.0, dest: str | None = None) -> MessageTrace:
    """Publish ``data`` on ``subject`` with tracing on, and collect what the servers report.

    Without ``trace_only`` the message is really delivered (and stored, if a stream captures
    the subject): the publish carries a reply inbox, so the stream's receipt says where.
    ``timeout`` bounds the wait for every server's report. ``dest`` is where they report to:
    by default a fresh inbox of this connection (a user who may not publish to its inbox
    names a subject it may publish and subscribe to).
    """
    return client._bridge.run(_trace(client, subject, data, headers, trace_only, timeout, dest),
                              operation="trace_message")


async def atrace_message(client: Client, subject: str, data: Any = b"", *,
                         headers: dict[str, str] | None = None, trace_only: bool = False,
                         timeout: float = 2.0, dest: str | None = None) -> MessageTrace:
    return await client._bridge.arun(
        _trace(client, subject, data, headers, trace_only, timeout, dest))


async def _trace(client: Client, subject: str, data: Any, headers: dict[str, str] | None,
                 trace_only: bool, timeout: float, dest: str | None) -> MessageTrace:
    dest = dest or client.nc.new_inbox()
    reply = "" if trace_only else client.nc.new_inbox()
    reports = await client.asubscribe(dest)
    replies = await client.asubscribe(reply) if reply else None
    try:
        sent = dict(headers or {})
        sent[TRACE_DEST] = dest
        if trace_only:
            sent[TRACE_ONLY] = "true"
        await client.apublish(subject, data, headers=sent, reply=reply)
        deadline = time.monotonic() + timeout
        servers = await _collect(reports, deadline)
        receipt: PubAck | None = None
        notes: list[str] = []
        stored = any(e.type == "js" and not e.error and not e.no_interest
                     for s in servers for e in s.events)
        if replies is not None and stored:
            receipt = await _receipt(replies, deadline, notes)
    finally:
        await reports.aunsubscribe()
        if replies is not None:
            await replies.aunsubscribe()
    expected = 1 + sum(s.hops for s in servers)
    complete = all_reported(servers)
    if not servers:
        version = server_info(client.nc).get("version", "?")
        notes.append(f"No server reported within {timeout:g} s. Message tracing needs "
                     f"nats-server 2.11 or later (this one is {version}), and the publisher "
                     f"must be allowed to publish to the trace destination '{dest}'.")
    elif not complete:
        notes.append(f"Only {len(servers)} of the servers the message reached (at least "
                     f"{max(expected, len(servers) + 1)}) reported within {timeout:g} s; "
                     "raise timeout= to wait for the others.")
    consumers = await _consumers(client, servers, receipt, deadline, notes)
    if any(e.type == "js" for s in servers for e in s.events):
        notes.append("The servers' trace ends at the stream: its consumers deliver the "
                     "stored message later, so they are read from the stream's consumer "
                     "infos, not from the trace.")
    return MessageTrace(subject, trace_only, dest, tuple(servers), receipt, tuple(consumers),
                        complete, tuple(notes))


def all_reported(servers: list[ServerTrace]) -> bool:
    """True once every server the message reached has reported: the first one (hop ""),
    each one a reported server forwarded to (its ``hops``), and the server that forwarded
    to each (the parent of hop "1.2" is "1"); they may report in any order."""
    hops = {s.hop for s in servers}
    parents_known = all(s.hop.rpartition(".")[0] in hops for s in servers if s.hop)
    return "" in hops and parents_known and len(servers) >= 1 + sum(s.hops for s in servers)


async def _collect(reports: Subscription, deadline: float) -> list[ServerTrace]:
    """Trace events until every server the message reached has sent its own."""
    servers: list[ServerTrace] = []
    while not all_reported(servers):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            msg = await reports.anext(timeout=left)
        except (NoMessage, SubscriptionClosed):
            break
        try:
            body = json.loads(msg.data)
        except ValueError:
            continue  # not a trace event: someone else publishes on the destination
        if isinstance(body, dict) and "events" in body:
            servers.append(parse_trace_event(body))
    return sorted(servers, key=lambda s: _hop_order(s.hop))


async def _receipt(replies: Subscription, deadline: float, notes: list[str]) -> PubAck | None:
    while (left := deadline - time.monotonic()) > 0:
        try:
            msg = await replies.anext(timeout=left)
        except (NoMessage, SubscriptionClosed):
            break
        try:
            body = json.loads(msg.data)
        except ValueError:
            continue  # a core service answered the request too
        if not isinstance(body, dict) or "stream" not in body:
            continue
        if body.get("error"):
            error = body["error"]
            notes.append(f"Stream '{body['stream']}' refused the message: "
                         f"{error.get('description')} (err_code {error.get('err_code')}).")
            return None
        return PubAck(body["stream"], int(body.get("seq", 0)), bool(body.get("duplicate")))
    notes.append("No receipt from the stream arrived in time: which sequence it stored the "
                 "message at is not known, nor whether consumers delivered it.")
    return None


async def _consumers(client: Client, servers: Iterable[ServerTrace], receipt: PubAck | None,
                     deadline: float, notes: list[str]) -> list[ConsumerHop]:
    """The consumers of each stream that stored (or, tracing only, would store) it."""
    stored = {(e.name, e.subject) for s in servers for e in s.events
              if e.type == "js" and not e.error}
    out: list[ConsumerHop] = []
    for stream, subject in sorted(stored):
        seq = receipt.seq if receipt is not None and receipt.stream == stream else None
        settle = min(max(0.0, deadline - time.monotonic()), CONSUMER_SETTLE) + time.monotonic()
        while True:
            try:
                infos = await client.js.aconsumers(stream)
            except AgentlabError as error:
                notes.append(f"Could not list the consumers of stream '{stream}': {error}")
                break
            hops = [_consumer_hop(stream, info, seq) for info in infos
                    if any(subject_matches(f, subject) for f in _filters(info))]
            waiting = [h for h in hops if h.delivered is False and
                       (h.mode == "push" or h.num_waiting > 0)]
            if not waiting or time.monotonic() >= settle:
                out.extend(sorted(hops, key=lambda h: h.name))
                break
            await asyncio.sleep(0.02)
    return out


def _filters(info: ConsumerInfo) -> tuple[str, ...]:
    config = info.config
    if config.filter_subjects:
        return tuple(config.filter_subjects)
    return (config.filter_subject,) if config.filter_subject else (">",)


def _consumer_hop(stream: str, info: ConsumerInfo, seq: int | None) -> ConsumerHop:
    delivered = acked = None
    if seq is not None:
        delivered = bool(info.delivered and (info.delivered.stream_seq or 0) >= seq)
        acked = bool(info.ack_floor and (info.ack_floor.stream_seq or 0) >= seq)
    push = bool(info.config.deliver_subject)
    return ConsumerHop(stream=stream, name=info.name, mode="push" if push else "pull",
                       filters=_filters(info), deliver_subject=info.config.deliver_subject or "",
                       delivered=delivered, acked=acked, num_pending=info.num_pending or 0,
                       num_waiting=info.num_waiting or 0,
                       num_ack_pending=info.num_ack_pending or 0)
