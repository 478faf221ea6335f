"""Stream and consumer specs: what you want JetStream to hold, in seconds and plain words.

    StreamSpec("AGENT_TASKS", ["genbrain.agents.*.tasks"], retention="workqueue", max_age=7 * DAY)
    ConsumerSpec("cto", filter_subject="genbrain.agents.cto.tasks", ack_wait=30, max_deliver=3)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

MINUTE = 60.0
HOUR = 60 * MINUTE
DAY = 24 * HOUR
KiB, MiB = 1024, 1024 * 1024


@dataclass(frozen=True)
class StreamSpec:
    """A stream: which subjects it stores, how long, and when it may forget them.

    ``retention``: "limits" keeps messages until a limit, "workqueue" removes each one once a
    consumer acks it, "interest" keeps them while some consumer still has to read them.
    Durations are in seconds; 0 or -1 means unlimited.

    ``allow_msg_ttl`` lets a publish expire its own message (``js.publish(..., ttl=60)``, the
    ``Nats-TTL`` header). ``subject_delete_marker_ttl`` (NATS 2.11, ADR-43): when max age or
    a message's TTL removes the last message on a subject, the stream stores a marker there
    instead (no payload; headers ``Nats-Marker-Reason: MaxAge``, ``Nats-TTL``), which
    consumers receive and which itself expires after that many seconds (at least 1). It
    turns on message TTLs and roll-ups, as the server does, and the server raises any
    shorter message TTL to it, so that no marker is ever missed.
    """

    name: str
    subjects: list[str] = field(default_factory=list)
    retention: Literal["limits", "workqueue", "interest"] = "limits"
    storage: Literal["file", "memory"] = "file"
    max_age: float = 0
    max_msgs: int = -1
    max_bytes: int = -1
    max_msg_size: int = -1
    duplicate_window: float = 120
    discard: Literal["old", "new"] = "old"
    replicas: int = 1
    allow_msg_ttl: bool = False
    subject_delete_marker_ttl: float = 0
    allow_direct: bool = True
    description: str = ""

    def to_config(self) -> StreamConfig:
        if 0 < self.subject_delete_marker_ttl < 1:
            raise ValueError(f"Stream '{self.name}': subject_delete_marker_ttl="
                             f"{self.subject_delete_marker_ttl!r}; the server needs at least "
                             "1 second (or 0: no markers).")
        markers = self.subject_delete_marker_ttl > 0
        return StreamConfig(
            name=self.name,
            description=self.description or None,
            subjects=list(self.subjects),
            retention=RetentionPolicy(self.retention),
            storage=StorageType(self.storage),
            max_age=self.max_age or None,
            max_msgs=self.max_msgs,
            max_bytes=self.max_bytes,
            max_msg_size=self.max_msg_size,
            # The server refuses a duplicate window longer than max_age; clamp the default.
            duplicate_window=min(self.duplicate_window, self.max_age) if self.max_age > 0
            else self.duplicate_window,
            discard=DiscardPolicy(self.discard),
            num_replicas=self.replicas,
            allow_msg_ttl=self.allow_msg_ttl or markers or None,
            allow_rollup_hdrs=markers,  # a marker rolls its subject up
            subject_delete_marker_ttl=self.subject_delete_marker_ttl if markers else None,
            allow_direct=self.allow_direct,
        )


@dataclass(frozen=True)
class ConsumerSpec:
    """A durable consumer: a named, remembered position in a stream and its redelivery rules.

    ``ack_wait`` seconds after a delivery without ack, the message is delivered again, up to
    ``max_deliver`` times in all. ``max_ack_pending`` caps the messages out for processing.
    ``deliver`` says where a new consumer starts: "all", "new", "last" or "by_start_time".
    ``memory_state`` True keeps the consumer's delivery state in memory instead of on file
    (the stream's messages stay where the stream keeps them): a delivery costs the server
    less, and the less the more consumers it serves, but a server restart forgets the
    consumer (one server) or its deliveries: what was out is handed out again as first
    deliveries. False keeps it on file. None (the default): on file for a new consumer, and
    an existing one as it is (the server cannot change it; agentlab's role consumers are in
    memory unless asked otherwise, and a hand-made spec of the same name works with them).
    """

    durable: str
    filter_subject: str | None = None
    filter_subjects: list[str] | None = None
    ack_wait: float = 30.0
    max_deliver: int = -1
    max_ack_pending: int = 1000
    deliver: Literal["all", "new", "last", "by_start_time"] = "all"
    start_time: datetime | None = None
    backoff: list[float] | None = None
    inactive_threshold: float | None = None
    description: str = ""
    memory_state: bool | None = None

    def to_config(self) -> ConsumerConfig:
        if self.deliver == "by_start_time" and self.start_time is None:
            raise ValueError(f"Consumer '{self.durable}': deliver='by_start_time' needs "
                             "start_time=.")
        return ConsumerConfig(
            durable_name=self.durable,
            description=self.description or None,
            filter_subject=self.filter_subject,
            filter_subjects=self.filter_subjects,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            max_deliver=self.max_deliver,
            max_ack_pending=self.max_ack_pending,
            deliver_policy=DeliverPolicy(self.deliver),
            opt_start_time=self.start_time,
            backoff=self.backoff,
            inactive_threshold=self.inactive_threshold,
            mem_storage=self.memory_state or None,
        )
