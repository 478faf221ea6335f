"""Intents that expire (seed 004): a voice agent publishes "book this slot" with a TTL; if no
booking agent takes it in time, the server deletes it and nobody acts on a stale intent.

    publish_intent(lab, "book", {"call_id": "abc", "slot": "15:00"}, ttl=300)
    intents = IntentQueue(lab, "book")            # a durable consumer per intent kind
    for msg in intents.fetch(timeout=1):
        book(msg.json()); msg.ack()
"""

from __future__ import annotations

from typing import Any

from ..core.client import Client
from ..core.jetstream import PubAck, PullConsumer
from ..core.received import Message
from ..core.specs import ConsumerSpec
from ..core.subjects import Subjects
from .streams import INTENT_STREAM


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

    def fetch(self, batch: int = 10, timeout: float = 1.0) -> list[Message]:
        return self._consumer.fetch(batch, timeout)

    def pending(self) -> int:
        return self._consumer.info().num_pending or 0  # nats-py types it optional
