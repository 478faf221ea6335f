"""The flow recorder: raw taps in, FlowEvents and running totals out, all of it bounded.

    recorder = FlowRecorder(capacity=10_000)
    recorder.tap("lab", msg)            # on agentlab's loop: one append, nothing else
    recorder.ingest()                   # anywhere else (the UI pump, a snapshot call)
    recorder.flow(pattern="genbrain.agents.>", limit=40)

Taps do the least possible work on the loop the agents share: they append a tuple to a
bounded deque. Classifying (JSON bodies, ack subjects, advisories) happens in ``ingest``,
called by whoever reads. If nobody reads for a while the raw deque drops its oldest
entries; ``dropped`` counts them. Every dict kept here is capped too, so memory stays flat
over millions of messages.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import Any

from .events import (
    ACK_VERBS,
    BodyInfo,
    FlowEvent,
    advisory_fields,
    body_info,
    consumer_owner,
    normalise_subject,
    parse_ack,
    requester,
    subject_receiver,
)
from .snapshots import FlowSnapshot, TopologySnapshot

RATE_WINDOW = 60          # seconds of per-consumer rate history (the sparklines)
MAX_EDGES = 2_000
_NOISE = ("heartbeat", "metrics")


class _LRU(OrderedDict):
    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def put(self, key: Any, value: Any) -> None:
        self[key] = value
        if len(self) > self.size:
            self.popitem(last=False)


class FlowRecorder:
    """Bounded buffers of what the observer saw; snapshots of them on demand."""

    def __init__(self, capacity: int = 10_000, *, root: str = "genbrain",
                 stream_of: Callable[[str], str] | None = None,
                 max_ingest: int = 20_000, requests: bool = False):
        self.capacity = capacity
        self.root = root
        self.stream_of = stream_of or (lambda subject: "")
        self.max_ingest = max_ingest  # per ingest() call: a reader never stalls for long
        # A publish with a reply inbox is a request only when its answers are tapped too:
        # a JetStream publish has one as well, for its PubAck.
        self.requests = requests
        self._raw: deque[tuple] = deque(maxlen=capacity)
        self.events: deque[FlowEvent] = deque(maxlen=capacity)
        self.received = 0          # tapped (incremented on the loop)
        self.ignored = 0           # tapped but not recorded (API chatter, inbox replies)
        self.recorded = 0
        self.kinds: Counter[str] = Counter()
        self.edges: Counter[tuple[str, str]] = Counter()
        self.version = 0
        self._bodies: _LRU = _LRU(4096)        # Nats-Msg-Id -> BodyInfo
        self._delivered: _LRU = _LRU(8192)     # (stream, seq) -> (subject, BodyInfo)
        # ephemeral consumer -> the connection that created it (from the API audit)
        self.owners: _LRU = _LRU(4096)
        self._requests: _LRU = _LRU(4096)      # reply inbox -> (request event)
        self._rates: dict[tuple[str, str], deque[list[int]]] = {}
        self._recent: deque[float] = deque(maxlen=4096)   # times, for the events/s figure
        self._lock = threading.Lock()          # one ingest at a time
        self._seq = 0
        self._read = 0                         # raw entries taken by ingest()
        self._skipped = 0                      # ... of which not recorded
        self.streams_seen: set[str] = set()

    # -- on the loop ------------------------------------------------------------------
    def tap(self, source: str, msg: Any) -> None:
        """Record a raw message from a tap: cheap enough for every message on the wire."""
        self.received += 1
        self._raw.append((source, time.time(), msg.subject, msg.reply, msg.headers, msg.data))

    def skip(self) -> None:
        self.received += 1
        self.ignored += 1

    # -- off the loop -----------------------------------------------------------------
    @property
    def dropped(self) -> int:
        """Raw messages that fell out of the buffer before anyone read them."""
        return max(0, self.received - self.ignored - self._read - len(self._raw))

    def ingest(self) -> int:
        """Classify what the taps collected since last time; returns how many were read."""
        if not self._lock.acquire(blocking=False):
            return 0
        try:
            n = 0
            pop = self._raw.popleft
            while n < self.max_ingest:
                try:
                    raw = pop()
                except IndexError:
                    break
                n += 1
                self._read += 1
                event = self._classify(*raw)
                if event is None:
                    self._skipped += 1
                    continue
                self._record(event)
            if n:
                self.version += 1
            return n
        finally:
            self._lock.release()

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def _info(self, data: bytes, headers: dict | None) -> tuple[BodyInfo, str]:
        msg_id = (headers or {}).get("Nats-Msg-Id", "")
        if msg_id:
            known = self._bodies.get(msg_id)
            if known is not None:
                return known, msg_id
        info = body_info(data, headers)
        if msg_id:
            self._bodies.put(msg_id, info)
        return info, msg_id

    def _classify(self, source: str, at: float, subject: str, reply: str,
                  headers: dict | None, data: bytes) -> FlowEvent | None:
        if source == "ack":
            return self._ack(at, subject, data)
        if source == "api":  # an ephemeral consumer was created: remember by whom
            owned = consumer_owner(data)
            if owned is not None:
                self.owners.put(*owned)
            return None
        if source == "advisory":
            what, stream, consumer, seq, deliveries = advisory_fields(subject, data)
            subject_of, info = self._delivered.get((stream, seq), ("", BodyInfo()))
            return FlowEvent(self._next(), at, "advisory", subject_of or subject,
                             sender=stream, receiver=consumer, type=what, size=len(data),
                             trace_id=info.trace_id, stream=stream, consumer=consumer,
                             stream_seq=seq, deliveries=deliveries, title=info.title)
        info, msg_id = self._info(data, headers)
        if reply.startswith("$JS.ACK."):            # a JetStream delivery
            parsed = parse_ack(reply)
            if parsed is None:
                return None
            stream, consumer, delivered, seq = parsed
            self._delivered.put((stream, seq), (subject, info))
            return FlowEvent(self._next(), at, "deliver", subject, sender=stream,
                             receiver=consumer, type=info.type, size=len(data),
                             trace_id=info.trace_id, msg_id=msg_id, stream=stream,
                             consumer=consumer, stream_seq=seq, deliveries=delivered,
                             title=info.title)
        if source == "reply":
            return self._reply(at, subject, headers, data, info)
        if source != "lab":
            return None
        stream = self.stream_of(subject)
        receiver = stream or info.receiver or subject_receiver(subject, self.root)
        if not receiver and not subject.startswith(f"{self.root}."):
            receiver = subject  # a subject of its own (a tap given by ``subjects=``)
        if self.requests and reply and not reply.startswith("$JS.") and not stream:
            event = FlowEvent(self._next(), at, "request", subject,
                              sender=info.sender or requester(reply),
                              receiver=receiver or subject, type=info.type, size=len(data),
                              trace_id=info.trace_id, msg_id=msg_id, title=info.title,
                              reply=reply)
            self._requests.put(reply, event)
            return event
        kind = "dead_letter" if subject.startswith(f"{self.root}.dlq.") else "publish"
        kind_text = info.type
        if not kind_text and subject == f"{self.root}.agents.heartbeats":
            kind_text = "heartbeat"  # a body too large to parse: a process of many agents
        if kind_text == "task" and subject.endswith(".tasks.created"):
            kind_text = "task.created"
        return FlowEvent(self._next(), at, kind, subject, sender=info.sender,
                         receiver=receiver, type=kind_text, size=len(data),
                         trace_id=info.trace_id, msg_id=msg_id, stream=stream,
                         title=info.title)

    def _reply(self, at: float, subject: str, headers: dict | None, data: bytes,
               info: BodyInfo) -> FlowEvent | None:
        request = self._requests.pop(subject, None)
        if request is None:  # a PubAck, a pull status, an answer to a request not seen
            return None
        status = (headers or {}).get("Status", "")
        what = "no responders" if status == "503" else info.type
        return FlowEvent(self._next(), at, "reply", subject,
                         sender=info.sender or request.receiver,
                         receiver=requester(subject), type=what, size=len(data),
                         trace_id=request.trace_id or info.trace_id, title=info.title,
                         reply=subject)

    def _ack(self, at: float, subject: str, data: bytes) -> FlowEvent | None:
        parsed = parse_ack(subject)
        if parsed is None:
            return None
        stream, consumer, delivered, seq = parsed
        kind = ACK_VERBS.get(data[:4].rstrip(), "")
        if not kind:
            kind = "term" if data.startswith(b"+TERM") else "nak" if \
                data.startswith(b"-NAK") else "ack"
        subject_of, info = self._delivered.get((stream, seq), ("", BodyInfo()))
        title = info.title
        if kind == "term" and len(data) > 6:
            title = data[6:80].decode("utf-8", "replace")
        return FlowEvent(self._next(), at, kind, subject_of or subject, sender=consumer,
                         receiver=stream, type=info.type, size=len(data),
                         trace_id=info.trace_id, stream=stream, consumer=consumer,
                         stream_seq=seq, deliveries=delivered, title=title)

    def _record(self, event: FlowEvent) -> None:
        self.events.append(event)
        self.recorded += 1
        self.kinds[event.kind] += 1
        self._recent.append(event.time)
        if event.stream and len(self.streams_seen) < 256:
            self.streams_seen.add(event.stream)
        if event.kind in ("publish", "dead_letter", "request"):
            node = normalise_subject(event.subject, self.root)
            self._edge(event.sender or "?", node)
            if event.receiver:
                self._edge(node, event.receiver)
        elif event.kind == "deliver":
            self._edge(event.stream, event.consumer)
        elif event.kind == "reply":
            self._edge(event.sender or "?", event.receiver)
        if event.kind in ("ack", "deliver", "nak", "term"):
            self._count_rate((event.stream, event.consumer), event.kind, int(event.time))

    def _edge(self, src: str, dst: str) -> None:
        key = (src, dst)
        if key in self.edges or len(self.edges) < MAX_EDGES:
            self.edges[key] += 1
        else:
            self.edges[("(other)", "(other)")] += 1

    def _count_rate(self, key: tuple[str, str], kind: str, second: int) -> None:
        series = self._rates.get(key)
        if series is None:
            if len(self._rates) >= 512:
                return
            series = self._rates[key] = deque(maxlen=RATE_WINDOW)
        if not series or series[-1][0] != second:
            series.append([second, 0, 0])
        series[-1][1 if kind == "ack" else 2] += 1

    # -- who a consumer is -------------------------------------------------------------
    def participant(self, name: str) -> str:
        """The participant a consumer belongs to: for an ephemeral (ordered, reading)
        consumer, the name of the connection that created it (an agent's instance, such as
        ``cto-1``); else the name itself (a durable consumer is named after its role)."""
        return self.owners.get(name) or name

    def _labelled(self, event: FlowEvent) -> FlowEvent:
        owner = self.owners.get(event.consumer) if event.consumer else None
        if not owner:
            return event
        name = event.consumer
        return dataclasses.replace(
            event, sender=owner if event.sender == name else event.sender,
            receiver=owner if event.receiver == name else event.receiver)

    # -- snapshots ----------------------------------------------------------------------
    def rates(self, now: float | None = None) -> dict[tuple[str, str], tuple[int, ...]]:
        """Acks per second over the last RATE_WINDOW seconds, per (stream, consumer)."""
        now_s = int(now if now is not None else time.time())
        out = {}
        for key, series in list(self._rates.items()):
            by_second = {s: acks for s, acks, _ in list(series)}
            out[key] = tuple(by_second.get(s, 0) for s in range(now_s - RATE_WINDOW, now_s))
        return out

    def flow(self, *, pattern: str = ">", limit: int = 40, hide_noise: bool = True,
             trace: str = "") -> FlowSnapshot:
        """The last ``limit`` events whose subject matches ``pattern`` (a NATS wildcard), of
        one trace if ``trace`` (an id, or its first characters) is given."""
        self.ingest()
        match = matcher(pattern)
        picked: list[FlowEvent] = []
        for event in reversed(list(self.events)):
            if hide_noise and event.type in _NOISE:
                continue
            if trace and not event.trace_id.startswith(trace):
                continue
            if match(event.subject):
                picked.append(event)
                if len(picked) >= limit:
                    break
        now = time.time()
        recent = sum(1 for t in list(self._recent) if now - t <= 5.0) / 5.0
        events = tuple(self._labelled(event) for event in reversed(picked))
        return FlowSnapshot(events=events, taken_at=now, pattern=pattern,
                            received=self.received, recorded=self.recorded,
                            dropped=self.dropped, ignored=self.ignored + self._skipped,
                            kinds=dict(self.kinds), rate=recent, capacity=self.capacity,
                            trace=trace)

    def topology(self, *, hide_noise: bool = True, limit: int = 40) -> TopologySnapshot:
        self.ingest()
        named: Counter[tuple[str, str]] = Counter()
        for (src, dst), n in list(self.edges.items()):
            named[(self.participant(src), self.participant(dst))] += n
        edges = [(s, d, n) for (s, d), n in named.most_common()
                 if not (hide_noise and _noisy(s, d))]
        return TopologySnapshot.build(edges[:limit], streams=frozenset(self.streams_seen))


def _noisy(src: str, dst: str) -> bool:
    return src == "health" or dst in ("health", "observers") or \
        any(n.endswith((".heartbeat", ".heartbeats", ".metrics", ".health", ".scaling"))
            for n in (src, dst))


def matcher(pattern: str) -> Callable[[str], bool]:
    """A fast NATS wildcard matcher for ``pattern`` (``*`` one token, ``>`` the rest)."""
    pattern = (pattern or ">").strip() or ">"
    if pattern == ">":
        return lambda subject: True
    want = pattern.split(".")
    tail = want[-1] == ">"
    head = want[:-1] if tail else want

    def match(subject: str) -> bool:
        have = subject.split(".")
        if len(have) < len(head) + (1 if tail else 0) or (not tail and len(have) != len(head)):
            return False
        # Past the head, a '>' tail matches whatever is left of the subject.
        return all(w == "*" or w == h for w, h in zip(head, have, strict=False))

    return match


def merge_kinds(counts: Iterable[tuple[str, int]]) -> dict[str, int]:
    out: Counter[str] = Counter()
    for kind, n in counts:
        out[kind] += n
    return dict(out)
