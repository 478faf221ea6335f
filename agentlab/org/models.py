"""Wire models of the reference organisation: plain JSON any language can produce or read.

    task = Task(org="acme", role="cto", title="Design the API", requested_by="ceo")
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import Field

from ..wire.messages import WireModel, new_id, register_wire_model, utc_now


@register_wire_model
class Task(WireModel):
    """Work for a role, published on ``{root}.agents.{role}.tasks`` with Nats-Msg-Id = id."""

    # The id is the key of exactly-once (dedup, ledger, completion): a receiver must never
    # invent one, or each redelivery of an id-less task would look like a new task.
    wire_required: ClassVar[tuple[str, ...]] = ("id",)

    id: str = Field(default_factory=new_id, min_length=1)
    org: str = Field(min_length=1)
    role: str = Field(min_length=1, description="The role that must do the work.")
    title: str = Field(min_length=1)
    details: dict[str, Any] = Field(default_factory=dict)
    requested_by: str = Field(min_length=1, description="The role that asked for it.")
    created_at: datetime = Field(default_factory=utc_now)
    correlation_id: str | None = None
    causation_id: str | None = None


@register_wire_model
class TaskCompleted(WireModel):
    """Published on ``{root}.org.{org}.tasks.completed`` once a task's effect is recorded."""

    task_id: str
    org: str
    role: str
    instance: str
    title: str
    result: dict[str, Any] = Field(default_factory=dict)
    deliveries: int = 1
    duration_ms: float = 0.0
    completed_at: datetime = Field(default_factory=utc_now)
    correlation_id: str | None = None


@register_wire_model
class AgentAction(WireModel):
    """An audit event (``type: agent.action``) on ``{root}.org.{org}.events``."""

    type: Literal["agent.action"] = "agent.action"
    role: str
    org: str
    action: str
    details: dict[str, Any] = Field(default_factory=dict)
    task_id: str | None = None
    at: datetime = Field(default_factory=utc_now)


@register_wire_model
class Heartbeat(WireModel):
    role: str
    org: str
    instance: str
    processed: int = 0
    failed: int = 0
    in_flight: int = 0
    leaving: bool = Field(default=False, description="The last beat of an agent that stops "
                                                     "on purpose (stop(), scale down).")
    at: datetime = Field(default_factory=utc_now)


@register_wire_model
class DeadLetter(WireModel):
    """A message that will not be processed, with everything needed to understand or redrive it."""

    reason: Literal["max_deliveries", "poison"]
    error: str
    original_subject: str
    payload: str = Field(description="The original payload, UTF-8 text or base64 (see encoding).")
    encoding: Literal["utf-8", "base64"] = "utf-8"
    headers: dict[str, str] = Field(default_factory=dict)
    stream: str
    stream_seq: int
    consumer: str
    deliveries: int
    dead_at: datetime = Field(default_factory=utc_now)
