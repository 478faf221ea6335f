"""The agentlab message envelope, payload encoding, and the JSON Schemas of the wire format.

Usage::

    msg = AgentMessage(sender="planner", type="task.assigned", payload={"task": "sum 1..10"})
    data = msg.to_bytes()                     # plain UTF-8 JSON that any language can read
    same = AgentMessage.from_bytes(data, subject="agents.worker")
    answer = same.follow_up(sender="worker", type="task.done", payload={"result": 55})

Schemas for non-Python agents: ``agentlab schemas [DIR]``.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar

import pydantic_core
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)
from typing_extensions import Self

from agentlab.errors import MessageDecodeError

M = TypeVar("M", bound=BaseModel)
SCHEMA_BASE_URL = "https://agentlab.dev/schemas/"
SCHEMA_DIR = Path(__file__).with_name("schemas")


def utc_now() -> datetime:
    """The current time, timezone-aware in UTC: the default of every wire timestamp."""
    return datetime.now(timezone.utc)


def new_id() -> str:
    """A fresh random id, 32 hex digits: the default of every wire id."""
    return uuid.uuid4().hex


def as_utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive one (no offset on the wire) is read as UTC."""
    # Senders in other languages often write local-looking ISO strings without an offset
    # (Python's utcnow().isoformat(), a hand-written "2025-01-01T12:00:00"); the schemas say
    # such a time is UTC, and comparing it with an aware time would raise TypeError.
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


# Every wire timestamp: ISO 8601, always aware in Python, whatever the sender wrote.
UtcDatetime = Annotated[datetime, AfterValidator(as_utc),
                        Field(description="ISO 8601 date-time; without an offset it is UTC.")]


class WireModel(BaseModel):
    """Base of every wire model: unknown fields are rejected, so a typo fails loudly.

    Subclass it and register the subclass (``register_wire_model``) to export its schema.
    """

    model_config = ConfigDict(extra="forbid")


class AgentMessage(WireModel):
    """The envelope every agentlab agent sends: one JSON object, UTF-8 encoded.

    Unknown top-level fields are rejected: a typo such as "sendr" fails loudly instead of
    being dropped, and application data belongs in "payload", which accepts any object.
    "id" and "timestamp" must be present on the wire so that every receiver sees the same
    values; naive timestamps are read as UTC.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    # A receiver decoding bytes must not invent these: two receivers would disagree.
    wire_required: ClassVar[tuple[str, ...]] = ("id", "timestamp")

    id: str = Field(default_factory=new_id, min_length=1,
                    description="Unique id of this message, set by the sender.")
    sender: str = Field(min_length=1, description="Name of the agent that sent the message.")
    type: str = Field(min_length=1, description='What the message means, e.g. "task.assigned".')
    payload: dict[str, Any] = Field(default_factory=dict, description="Application data.")
    timestamp: datetime = Field(default_factory=utc_now,
                                description="Creation time, ISO 8601 (no offset = UTC).")
    correlation_id: str | None = Field(
        default=None, description="The conversation or workflow this message belongs to.")
    causation_id: str | None = Field(
        default=None, description="The id of the message that caused this one.")

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        # Python's datetime.utcnow().isoformat() has no offset; UTC is what such senders meant.
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)

    def follow_up(self, sender: str, type: str, payload: dict[str, Any] | None = None) -> Self:
        """A new message caused by this one, in the same conversation.

        Named ``follow_up`` rather than ``reply`` because a NATS reply is a message sent to a
        request's inbox; this one can go to any subject.
        """
        return self.__class__(sender=sender, type=type, payload={} if payload is None else payload,
                              correlation_id=self.correlation_id or self.id, causation_id=self.id)

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, data: bytes, subject: str | None = None) -> Self:
        """Decode and validate; raises MessageDecodeError naming the subject and the reason."""
        return decode_model(data, cls, subject)


WIRE_MODELS: list[type[BaseModel]] = [AgentMessage]


def register_wire_model(model: type[M]) -> type[M]:
    """Add a model to the wire schemas (json_schemas, export_schemas). Usable as a decorator."""
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise TypeError(f"register_wire_model() needs a pydantic model class, got {model!r}")
    for known in WIRE_MODELS:
        if known is model:
            return model
        if known.__name__ == model.__name__:
            # Schema files are named after the class, so the second would overwrite the first.
            raise ValueError(
                f"a wire model named {model.__name__!r} is already registered "
                f"({known.__module__}.{known.__qualname__}); rename one of them"
            )
    WIRE_MODELS.append(model)
    return model


def to_bytes(value: Any) -> bytes:
    """Encode any payload agentlab can send: bytes as-is, str as UTF-8, the rest as JSON.

    dict/list/tuple/int/float/bool/None become compact JSON (datetime as ISO 8601, UUID and
    Decimal as strings, Enum as its value, dataclasses and nested models as objects, NaN and
    infinity as null); a pydantic model is sent with model_dump_json().
    """
    kind = type(value)  # exact-type checks first: this runs for every message sent
    if kind is bytes:
        return value
    if kind is str:
        return value.encode()
    if kind is dict or kind is list:
        return _json(value)
    if isinstance(value, BaseModel):
        return value.model_dump_json().encode()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    if value is None or isinstance(value, (dict, list, tuple, int, float)):
        return _json(value)
    raise TypeError(
        f"cannot send an object of type {kind.__qualname__}: pass bytes, str, a dict/list "
        "(sent as JSON) or a pydantic model"
    )


def _json(value: Any) -> bytes:
    # pydantic_core's serializer is ~7x faster than json.dumps and already knows datetime,
    # UUID, Enum, Decimal and dataclasses; NaN -> null matches what model_dump_json() does.
    try:
        return pydantic_core.to_json(value, inf_nan_mode="null")
    except pydantic_core.PydanticSerializationError as exc:
        raise TypeError(
            f"cannot send this {type(value).__name__} as JSON: {exc}. Convert that value to "
            "str, a number, a list or a dict first"
        ) from None


def decode_json(data: bytes, subject: str | None = None) -> Any:
    """Parse UTF-8 JSON bytes; raises MessageDecodeError naming the subject and the reason."""
    try:
        return pydantic_core.from_json(bytes(data) if isinstance(data, memoryview) else data)
    except ValueError as exc:
        raise MessageDecodeError(subject, _syntax_reason(data, str(exc)), _raw(data)) from None


def decode_model(data: bytes, model: type[M], subject: str | None = None) -> M:
    """Parse and validate bytes as ``model``; raises MessageDecodeError with a short reason."""
    if isinstance(data, memoryview):
        data = bytes(data)
    try:
        obj = model.model_validate_json(data)
    except ValidationError as exc:
        reason = _validation_reason(exc, data, model)
        raise MessageDecodeError(subject, reason, _raw(data)) from None
    missing = [f for f in getattr(model, "wire_required", ()) if f not in obj.model_fields_set]
    if missing:
        reason = "; ".join(f"field '{name}' is required" for name in missing)
        raise MessageDecodeError(subject, reason, _raw(data))
    return obj


def _raw(data: Any) -> bytes:
    return data.encode("utf-8", "replace") if isinstance(data, str) else bytes(data)


def _syntax_reason(data: Any, parser_error: str) -> str:
    # The JSON parser reports bad UTF-8 as a generic syntax error; name the real cause.
    raw = _raw(data)
    if not raw.strip():
        return "empty message: expected a JSON object"
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"invalid UTF-8 at byte {exc.start}"
    return f"invalid JSON: {parser_error}"


_JSON_TYPE_NAMES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
                    int: "a number", float: "a number", type(None): "null"}


def _validation_reason(exc: ValidationError, data: Any, model: type[BaseModel]) -> str:
    reasons = []
    for err in exc.errors(include_url=False):
        path = ".".join(str(part) for part in err["loc"])
        if err["type"] == "json_invalid":
            return _syntax_reason(data, err["ctx"]["error"])
        if not path:
            got = _JSON_TYPE_NAMES.get(type(err["input"]), "something else")
            reasons.append(f"expected a JSON object, got {got}")
        elif err["type"] == "missing":
            reasons.append(f"field '{path}' is required")
        elif err["type"] == "extra_forbidden" and len(err["loc"]) == 1:
            allowed = ", ".join(model.model_fields)
            reasons.append(f"unexpected field '{path}' (allowed: {allowed})")
        else:
            msg = err["msg"]
            reasons.append(f"field '{path}': {msg[:1].lower()}{msg[1:]}")
    more = f" (and {len(reasons) - 3} more)" if len(reasons) > 3 else ""
    return "; ".join(reasons[:3]) + more


def _snake(name: str) -> str:
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


def json_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema (draft 2020-12) of every registered wire model, keyed by class name.

    Models register themselves when their module is imported (``import agentlab.org``
    registers the organisation's); ``agentlab schemas`` exports the full set.
    """
    schemas = {}
    for model in sorted(WIRE_MODELS, key=lambda m: m.__name__):
        schema = model.model_json_schema()
        # Constructor defaults make these optional in Python, but decode_model requires them.
        wire = set(schema.get("required", ())) | set(getattr(model, "wire_required", ()))
        schema["required"] = [name for name in model.model_fields if name in wire]
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"{SCHEMA_BASE_URL}{_snake(model.__name__)}.schema.json"
        schema["title"] = model.__name__
        schemas[model.__name__] = schema
    return schemas


def render_schema(schema: dict[str, Any]) -> str:
    """The exact text of a schema file; sorted keys keep diffs down to real changes."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def export_schemas(directory: str | Path = SCHEMA_DIR) -> list[Path]:
    """Write ``<snake_name>.schema.json`` for every wire model into ``directory``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in json_schemas().items():
        path = out / f"{_snake(name)}.schema.json"
        path.write_text(render_schema(schema), encoding="utf-8")
        written.append(path)
    return written
