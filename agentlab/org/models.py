"""Wire models of the reference organisation: plain JSON any language can produce or read.

    task = Task(org="acme", role="cto", title="Design the API", requested_by="ceo")

A field that an agent puts into a subject (an org, a role, a task id, ...) is checked by the
model with the subject builders' own rule, and its JSON Schema carries that rule as a
``pattern``: bad input is refused when it is decoded (a poison dead letter at the first
delivery), never half-way through a task (a BadSubject, retried until max_deliver).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Field, GetJsonSchemaHandler, ValidationInfo
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError

from ..core.subjects import Subjects, validate_token
from ..errors import BadSubject
from ..wire.messages import UtcDatetime, WireModel, new_id, register_wire_model, utc_now

# What validate_token accepts as one concrete token: the characters nats-server refuses in a
# subject (space, tab, CR, LF, FF), the separator and the wildcards are out.
TOKEN_PATTERN = r"^[^ \t\n\r\f.*>]+$"
# A TASK_LEDGER key token (org/ledger.py): the characters a KV key allows, less the '.'.
TASK_ID_PATTERN = r"^[-/_=A-Za-z0-9]+$"
# An event type: one or more such tokens joined by '.', as in "payment.processed".
EVENT_TYPE_PATTERN = r"^[^ \t\n\r\f.*>]+(\.[^ \t\n\r\f.*>]+)*$"
_TASK_ID = re.compile(TASK_ID_PATTERN)
_SUBJECTS = Subjects()  # only its rules are used: they are the same under any root


def task_id_problem(task_id: str) -> str | None:
    """Why ``task_id`` cannot key the ledger (so the task could never be recorded), or None."""
    # fullmatch: with match(), '$' would also accept a trailing newline.
    if _TASK_ID.fullmatch(task_id):
        return None
    return (f"task id {task_id!r} cannot key the ledger: use letters, digits and "
            "'-', '_', '=', '/' only (no '.', no spaces), e.g. a uuid4 hex")


def _refuse(problem: str) -> PydanticCustomError:
    # A custom error, so the reason reads as the rule itself, not "Value error, ...".
    return PydanticCustomError("subject_token", "{problem}", {"problem": problem})


def _concrete_token(value: str, info: ValidationInfo) -> str:
    what = info.field_name or "token"
    try:
        validate_token(value, what)
    except BadSubject as error:
        raise _refuse(str(error)) from None
    if value == "*":  # a builder takes '*' to make a pattern; a message names one token
        raise _refuse(f"{what} '*' is the one-token wildcard; a message names one concrete "
                      f"{what}, not a pattern")
    return value


def _org_token(value: str, info: ValidationInfo) -> str:
    _concrete_token(value, info)
    try:
        _SUBJECTS.org_events(value)  # the builder's own rule: 'system' is reserved
    except BadSubject as error:
        raise _refuse(str(error)) from None
    return value


def _dotted_tokens(value: str, info: ValidationInfo) -> str:
    for part in value.split("."):
        _concrete_token(part, info)
    return value


def _task_id(value: str) -> str:
    problem = task_id_problem(value)
    if problem is not None:
        raise _refuse(problem)
    return value


class _Schema:
    """Adds ``extra`` to a field's JSON Schema: the rule its validator enforces."""

    def __init__(self, **extra: Any):
        self.extra = extra

    def __get_pydantic_json_schema__(self, core: CoreSchema,
                                     handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return {**handler(core), **self.extra}


SubjectToken = Annotated[str, AfterValidator(_concrete_token), _Schema(pattern=TOKEN_PATTERN)]
"""A str that becomes one subject token: a role, a meeting id, a conversation id, ..."""
OrgToken = Annotated[str, AfterValidator(_org_token),
                     _Schema(pattern=TOKEN_PATTERN, **{"not": {"const": "system"}})]
"""An org: a subject token, and not 'system' ({root}.org.system.* is the platform's)."""
EventType = Annotated[str, AfterValidator(_dotted_tokens), _Schema(pattern=EVENT_TYPE_PATTERN)]
"""Subject tokens joined by '.': the tail of ``{root}.events.{type}``."""
TaskId = Annotated[str, AfterValidator(_task_id), _Schema(pattern=TASK_ID_PATTERN)]
"""A task id: the second token of its TASK_LEDGER key ``{org}.{task_id}``."""


@register_wire_model
class Task(WireModel):
    """Work for a role, published on ``{root}.agents.{role}.tasks`` with Nats-Msg-Id = id."""

    # The id is the key of exactly-once (dedup, ledger, completion): a receiver must never
    # invent one, or each redelivery of an id-less task would look like a new task.
    wire_required: ClassVar[tuple[str, ...]] = ("id",)

    id: TaskId = Field(default_factory=new_id, min_length=1)
    org: OrgToken = Field(min_length=1)
    role: SubjectToken = Field(min_length=1, description="The role that must do the work.")
    title: str = Field(min_length=1)
    details: dict[str, Any] = Field(default_factory=dict)
    requested_by: SubjectToken = Field(
        min_length=1, description="The role that asked for it: progress notes go to its inbox.")
    created_at: UtcDatetime = Field(default_factory=utc_now)
    correlation_id: str | None = None
    causation_id: str | None = None


@register_wire_model
class TaskCompleted(WireModel):
    """Published on ``{root}.org.{org}.tasks.completed`` once a task's effect is recorded."""

    task_id: TaskId
    org: OrgToken
    role: SubjectToken
    instance: str
    title: str
    result: dict[str, Any] = Field(default_factory=dict)
    deliveries: int = 1
    duration_ms: float = 0.0
    completed_at: UtcDatetime = Field(default_factory=utc_now)
    correlation_id: str | None = None


@register_wire_model
class AgentAction(WireModel):
    """An audit event (``type: agent.action``) on ``{root}.org.{org}.events``."""

    type: Literal["agent.action"] = "agent.action"
    role: SubjectToken
    org: OrgToken
    action: str
    details: dict[str, Any] = Field(default_factory=dict)
    task_id: str | None = None
    at: UtcDatetime = Field(default_factory=utc_now)


@register_wire_model
class Heartbeat(WireModel):
    """One agent instance's beat: alone on ``{root}.agents.{role}.heartbeat`` (core NATS), or
    one of the beats of a ``Heartbeats`` message (what agentlab's agents send)."""

    role: SubjectToken
    org: OrgToken
    instance: str
    processed: int = 0
    failed: int = 0
    in_flight: int = 0
    leaving: bool = Field(default=False, description="The last beat of an agent that stops "
                                                     "on purpose (stop(), scale down).")
    at: UtcDatetime = Field(default_factory=utc_now)


# A Heartbeats message stays far below the server's max_payload (1 MB by default): a beat is
# about 200 bytes, so a process with more agents than this sends several.
BEATS_PER_MESSAGE = 500


@register_wire_model
class Heartbeats(WireModel):
    """The beats of the agents of one process that beat at one interval, on one login, in one
    message on ``{root}.agents.heartbeats`` (core NATS): one message per interval, not one
    per agent (up to ``BEATS_PER_MESSAGE`` beats in each). An agent of another kind (another
    language, a browser tab) may beat alone on ``{root}.agents.{role}.heartbeat``; the health
    monitor hears both."""

    beats: list[Heartbeat] = Field(min_length=1)
    interval: float = Field(ge=0, description="Seconds between these agents' beats.")
    at: UtcDatetime = Field(default_factory=utc_now)


@register_wire_model
class DeadLetter(WireModel):
    """A message that will not be processed, with everything needed to understand or redrive it."""

    # max_deliveries: every attempt failed; poison: no attempt could (not a valid task);
    # given_up: its worker said no retry would help (TaskDesk.fail(retry=False)).
    reason: Literal["max_deliveries", "poison", "given_up"]
    error: str
    original_subject: str
    payload: str = Field(description="The original payload, UTF-8 text or base64 (see encoding).")
    encoding: Literal["utf-8", "base64"] = "utf-8"
    headers: dict[str, str] = Field(default_factory=dict)
    stream: SubjectToken
    stream_seq: int
    consumer: SubjectToken
    deliveries: int
    dead_at: UtcDatetime = Field(default_factory=utc_now)


@register_wire_model
class FailureRecord(WireModel):
    """The latest failure of a stream message, in TASK_FAILURES under ``{stream}.{seq}``:
    what its dead letter will say if the deliveries run out."""

    error: str
    deliveries: int


@register_wire_model
class AgentStatus(WireModel):
    """An agent's answer to a request on ``{root}.agents.{role}.inbox`` (no ``on_request``)."""

    role: SubjectToken
    instance: str
    org: OrgToken
    status: Literal["ok"] = "ok"
    processed: int = Field(default=0, description="Tasks this instance has completed.")
    in_flight: int = Field(default=0, description="Tasks it is working on now.")


@register_wire_model
class ErrorReply(WireModel):
    """The reply to a request whose handler raised (an agent's ``on_request``, any
    ``client.serve`` handler), sent with the header ``Agentlab-Error: <exception class>``."""

    error: str = Field(description='"<exception class>: <message>".')
