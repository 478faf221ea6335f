"""Event-driven triggers: publish a domain event, and every agent type that cares wakes up.

    on_event(billing, "payment.processed", charge, group="billing")       # one per agent type
    on_event(notifier, "payment.*", notify, group="notification")         # a wildcard type
    emit_event(shop, "payment.processed", {"order": 42}, source="checkout")

An event of type ``T`` travels on ``{root}.events.T``. Each subscriber names its agent type
as ``group`` (a NATS queue group), so every agent TYPE gets one copy of each event and the
instances of one type share them. Adding an agent type is one more ``on_event`` call: the
emitter and the other agents do not change (seed 002, "event-driven agent triggers").

Event types may be dotted, as in the seed ("intent.identified.billing"); each part is one
subject token. Subscriptions may use ``*`` for one part and a final ``>`` for the rest
("intent.>"); emitted types must be concrete. Events are core NATS, fire and forget: an
agent type with no running instance misses them. Put work that must survive a restart in a
task queue (``Agent.delegate``), and use events to say what happened.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

from ..core.client import Client
from ..core.received import Message
from ..core.subjects import Subjects, validate_token
from ..core.subscription import Subscription
from ..errors import BadSubject
from ..wire.messages import UtcDatetime, WireModel, new_id, register_wire_model, utc_now
from .models import EventType

EventHandler = Callable[["Event"], Any]


@register_wire_model
class Event(WireModel):
    """A domain event on ``{root}.events.{type}``: what happened, who says so, and its data."""

    id: str = Field(default_factory=new_id, min_length=1,
                    description="Unique id of this event, set by the emitter.")
    type: EventType = Field(min_length=1,
                            description='What happened, e.g. "payment.processed".')
    source: str = Field(min_length=1, description="The agent or service that emitted it.")
    payload: dict[str, Any] = Field(default_factory=dict, description="Application data.")
    timestamp: UtcDatetime = Field(default_factory=utc_now)
    correlation_id: str | None = Field(
        default=None, description="The conversation or workflow this event belongs to.")


def event_subject(event_type: str, subjects: Subjects | None = None, *,
                  pattern: bool = False) -> str:
    """The subject of ``event_type``; with ``pattern=True`` it may hold '*' and a final '>'."""
    if not isinstance(event_type, str) or not event_type:
        raise BadSubject(f"event type {event_type!r} must be a non-empty str such as 'deploy'")
    parts = event_type.split(".")
    for i, part in enumerate(parts):
        wildcard = part == "*" or (part == ">" and i == len(parts) - 1)
        if wildcard and not pattern:
            raise BadSubject(f"event type {event_type!r} holds the wildcard {part!r}; emit a "
                             "concrete type such as 'deploy.started' (on_event takes patterns)")
        if not wildcard:
            validate_token(part, "event type part")
    # Subjects.event() builds the single-token form; dotted types extend it token by token.
    prefix = (subjects or Subjects()).event("TYPE").removesuffix("TYPE")
    return prefix + event_type


# -- emitting ---------------------------------------------------------------------------
def _event(event_type: str, payload: Any, source: str, correlation_id: str | None) -> Event:
    if isinstance(payload, BaseModel):
        payload = payload.model_dump(mode="json")
    return Event(type=event_type, source=source, payload=dict(payload or {}),
                 correlation_id=correlation_id)


def emit_event(client: Client, event_type: str, payload: Any = None, *, source: str,
               correlation_id: str | None = None, subjects: Subjects | None = None) -> Event:
    """Publish an ``Event`` of ``event_type`` (a dict or pydantic ``payload``); returns it."""
    subject = event_subject(event_type, subjects)
    event = _event(event_type, payload, source, correlation_id)
    client.publish(subject, event)
    return event


async def aemit_event(client: Client, event_type: str, payload: Any = None, *, source: str,
                      correlation_id: str | None = None,
                      subjects: Subjects | None = None) -> Event:
    subject = event_subject(event_type, subjects)
    event = _event(event_type, payload, source, correlation_id)
    await client.apublish(subject, event)
    return event


# -- reacting ---------------------------------------------------------------------------
def _decoding(client: Client, handler: EventHandler) -> Callable[[Message], Any]:
    """Wrap ``handler(event)`` as a message handler that decodes the Event first."""

    async def on_event_message(msg: Message) -> Any:
        # Decode on the loop (cheap), then let the bridge place the user's handler: async
        # ones on the loop, sync ones in its pool, so a slow handler never stalls the loop.
        return await client._bridge.arun_handler(handler, msg.decode(Event))
    return on_event_message


def _group(group: str) -> str:
    if group:
        validate_token(group, "group")
        if group == "*":
            raise BadSubject("group '*' is not an agent type; name the type, e.g. 'billing'")
    return group


def on_event(client: Client, event_type: str, handler: EventHandler, *, group: str,
             subjects: Subjects | None = None) -> Subscription:
    """Call ``handler(event)`` for events of ``event_type`` (a pattern is fine).

    ``group`` is the agent type: one instance of each group gets each event. Pass
    ``group=""`` to give every instance its own copy (e.g. a dashboard).
    Undecodable events are logged and counted in ``subscription.errors``.
    """
    subject = event_subject(event_type, subjects, pattern=True)
    return client.subscribe(subject, _decoding(client, handler), queue=_group(group))


async def aon_event(client: Client, event_type: str, handler: EventHandler, *, group: str,
                    subjects: Subjects | None = None) -> Subscription:
    subject = event_subject(event_type, subjects, pattern=True)
    return await client.asubscribe(subject, _decoding(client, handler), queue=_group(group))


__all__ = ["Event", "EventHandler", "event_subject", "emit_event", "aemit_event", "on_event",
           "aon_event"]
