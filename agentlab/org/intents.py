"""Intents that expire (seed 004): a voice agent publishes "book this slot" with a TTL; if no
booking agent takes it in time, the server deletes it and nobody acts on a stale intent.

    publish_intent(lab, "book", {"call_id": "abc", "slot": "15:00"}, ttl=300)
    intents = IntentQueue(lab, "book")            # a durable consumer per intent kind
    for msg in intents.fetch(timeout=1):
        book(msg.json()); msg.ack()
    intents.expired                               # the kinds' intents that expired untaken

When the last intent of a kind expires, CALL_INTENT keeps a subject delete marker in its
place (NATS 2.11): a message without payload whose ``Nats-Marker-Reason`` header says why
(``MaxAge``). It is delivered like an intent, so the booking agent learns that one went
stale; ``fetch()`` acknowledges it, leaves it out and notes it in ``expired``. A marker lives
``INTENT_MARKER_TTL`` (agentlab.org.streams), then expires too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ..core.client import Client
from ..core.jetstream import PubAck, PullConsumer
from ..core.received import Message
from ..core.specs import ConsumerSpec
from ..core.subjects import Subjects
from .streams import INTENT_STREAM

MARKER_REASON = "Nats-Marker-Reason"  # ADR-43: MaxAge, Purge or Remove


def is_delete_marker(msg: Message) -> bool:
    """True for a subject delete marker: what a stream stores when a subject's last message
    expires (or is purged or removed), instead of that message."""
    return bool(msg.headers.get(MARKER_REASON))


@dataclass(frozen=True)
class ExpiredIntent:
    """The news a delete marker brings: the last intent on ``subject`` expired untaken."""

    subject: str
    reason: str          # "MaxAge": its own TTL or the stream's max age ran out
    noticed_at: datetime


def publish_intent(client: Client, kind: str, payload: Any, *, ttl: int,
                   intent_id: str | None = None, subjects: Subjects | None = None) -> PubAck:
    """Store an intent for ``ttl`` whole seconds; after that it is gone, delivered or not."""
    subject = (subjects or Subjects()).call_intent(kind)
    return client.js.publish(subject, payload, ttl=ttl, msg_id=intent_id)


class IntentQueue:
    """The durable consumer of one intent kind (work queue: each intent handled once)."""

    def __init__(self, client: Client, kind: str, *, ack_wait: float = 30.0,
                 subjects: Subjects | None = None):
        subject = (subjects or Subjects()).call_intent(kind)
        spec = ConsumerSpec(f"intent-{kind}", filter_subject=subject, ack_wait=ack_wait,
                            max_deliver=5, description=f"Handles '{kind}' intents")
        client.js.declare_consumer(INTENT_STREAM, spec)
        self._consumer: PullConsumer = client.js.pull(INTENT_STREAM, spec.durable)
        self.expired: list[ExpiredIntent] = []  # delete markers fetch() took, oldest first

    def fetch(self, batch: int = 10, timeout: float = 1.0) -> list[Message]:
        """Up to ``batch`` live intents. Delete markers among the messages are acknowledged
        (removed from the work queue) and noted in ``expired`` instead."""
        live = []
        for msg in self._consumer.fetch(batch, timeout):
            if is_delete_marker(msg):
                self.expired.append(ExpiredIntent(msg.subject, msg.headers[MARKER_REASON],
                                                  datetime.now(timezone.utc)))
                msg.ack()
            else:
                live.append(msg)
        return live

    def pending(self) -> int:
        return self._consumer.info().num_pending or 0  # nats-py types it optional
