"""What travels for an asynchronous tool call (seed 002): the call, the result, big payloads.

    call = ToolCall(tool="search", conversation_id="conv-7", arguments={"query": "nats"})
    store = PayloadStore(client)                       # offloads anything over 64 KiB
    call.arguments = await store.aoffload(call.arguments, f"{call.id}/arguments")
    # -> {"$ref": "obj://TOOL_PAYLOADS/<call id>/arguments"} when it was too big to send

Both models are plain JSON (see ``agentlab schemas``), so a worker or a
caller written in another language can take part. A payload over the threshold goes to the
JetStream object store; the message carries ``{"$ref": "obj://<bucket>/<name>"}`` instead,
and the other side resolves it. A dict whose only key is ``"$ref"`` (with an ``obj://``
value) is therefore reserved: do not pass one as arguments or return one as a result.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Literal

import nats.js.errors
import pydantic_core
from pydantic import Field

from ..core.specs import MINUTE, KiB
from ..core.stores import ObjectBucket
from ..errors import AgentlabError
from ..wire.messages import UtcDatetime, WireModel, new_id, register_wire_model, utc_now
from .models import SubjectToken
from .streams import PAYLOAD_BUCKET

if TYPE_CHECKING:
    from ..core.client import Client

PAYLOAD_THRESHOLD = 64 * KiB
REF_KEY = "$ref"
REF_SCHEME = "obj://"


@register_wire_model
class ToolCall(WireModel):
    """A request to run ``tool``, published on ``{root}.tools.execute.{tool}``.

    Stored in the TOOL_REQUESTS work queue with ``Nats-Msg-Id`` = ``id``; the worker answers
    with a :class:`ToolResult` on ``{root}.tools.result.{conversation_id}``.
    """

    id: str = Field(default_factory=new_id, min_length=1,
                    description="The call id; also the Nats-Msg-Id, so a resend is a no-op.")
    tool: SubjectToken = Field(min_length=1)
    conversation_id: SubjectToken = Field(
        min_length=1, description="Where the result goes: tools.result.<this>.")
    arguments: dict[str, Any] = Field(
        default_factory=dict,
        description='Keyword arguments, or {"$ref": "obj://TOOL_PAYLOADS/<id>/arguments"}.')
    requested_by: str = Field(default="", description="The caller's connection name.")
    requested_at: UtcDatetime = Field(default_factory=utc_now)


class ToolFailure(WireModel):
    """Why a call failed: the remote exception, and whether trying again could help."""

    type: str = Field(description="Exception class name, or ToolTimeout / InvalidArguments.")
    message: str = ""
    retryable: bool = False
    timeout: bool = Field(default=False, description="The tool ran longer than its timeout.")


@register_wire_model
class ToolResult(WireModel):
    """The outcome of one call, published once, after the last attempt."""

    call_id: str = Field(min_length=1)
    tool: SubjectToken = Field(min_length=1)
    conversation_id: SubjectToken = Field(min_length=1)
    status: Literal["ok", "error"]
    value: Any = Field(default=None,
                       description='The return value, or {"$ref": "obj://..."} if it was big.')
    error: ToolFailure | None = None
    attempts: int = Field(default=1, ge=1, description="Deliveries it took, the last included.")
    worker: str = ""
    duration_ms: float = 0.0
    finished_at: UtcDatetime = Field(default_factory=utc_now)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def timed_out(self) -> bool:
        return self.error is not None and self.error.timeout


# -- errors ----------------------------------------------------------------------------------
class RetryableToolError(AgentlabError, RuntimeError):
    """Raise this from a tool function for a transient failure: the call is tried again."""


class ToolError(AgentlabError, RuntimeError):
    """A tool call ended with an error result (raised by ``ToolClient.call``)."""

    def __init__(self, result: ToolResult):
        self.result = result
        self.tool, self.call_id = result.tool, result.call_id
        failure = result.error or ToolFailure(type="UnknownError")
        self.error_type, self.remote_message = failure.type, failure.message
        self.retryable, self.timed_out = failure.retryable, failure.timeout
        tries = f"{result.attempts} attempt{'s' if result.attempts != 1 else ''}"
        worker = f" on worker {result.worker}" if result.worker else ""
        super().__init__(
            f"Tool '{result.tool}' call {result.call_id} (conversation "
            f"'{result.conversation_id}') failed after {tries}{worker}: "
            f"{failure.type}: {failure.message}")


class ToolTimeout(AgentlabError, TimeoutError):
    """No result arrived in time. The call may still be waiting or running (see the hint)."""

    def __init__(self, tool: str, call_id: str, conversation_id: str, timeout: float,
                 hint: str = "", consumer_exists: bool | None = None):
        self.tool, self.call_id, self.conversation_id = tool, call_id, conversation_id
        self.timeout, self.consumer_exists = timeout, consumer_exists
        super().__init__(
            f"Tool '{tool}' call {call_id} (conversation '{conversation_id}') got no result "
            f"within {timeout:g} s. {hint}".rstrip())


class PayloadMissing(AgentlabError, LookupError):
    """A ``$ref`` points at an object the store no longer has (expired or deleted)."""

    def __init__(self, ref: str, reason: str = ""):
        self.ref = ref
        detail = f" ({reason})" if reason else ""
        super().__init__(
            f"The payload {ref} is not in the object store{detail}. Payloads expire with the "
            f"bucket's ttl; the call or result that referenced it is too old.")


# -- references --------------------------------------------------------------------------
def is_ref(value: Any) -> bool:
    return (isinstance(value, dict) and len(value) == 1 and isinstance(value.get(REF_KEY), str)
            and value[REF_KEY].startswith(REF_SCHEME))


def parse_ref(ref: str) -> tuple[str, str]:
    """``obj://BUCKET/a/b`` -> ``("BUCKET", "a/b")``."""
    bucket, _, name = ref[len(REF_SCHEME):].partition("/")
    if not ref.startswith(REF_SCHEME) or not bucket or not name:
        raise ValueError(f"{ref!r} is not an object reference (obj://<bucket>/<name>)")
    return bucket, name


def encode_json(value: Any, what: str) -> bytes:
    try:
        return pydantic_core.to_json(value, inf_nan_mode="null")
    except pydantic_core.PydanticSerializationError as exc:
        raise TypeError(f"{what} cannot be sent as JSON: {exc}. Pass str, numbers, lists, "
                        "dicts, or pydantic models.") from None


class PayloadStore:
    """Moves payloads over ``threshold`` bytes (as JSON) to an object bucket and back.

    Lives on the bridge loop (async only). Objects expire with the bucket's ``ttl``
    (TOOL_REQUESTS' max_age, 5 minutes, by default): nothing has to delete them.
    """

    def __init__(self, client: Client, *, bucket: str = PAYLOAD_BUCKET,
                 threshold: int = PAYLOAD_THRESHOLD, ttl: float = 5 * MINUTE,
                 storage: str = "memory"):
        self.client = client
        self.bucket = bucket
        self.threshold = threshold
        self.ttl = ttl
        self.storage = storage
        self.offloaded = 0
        self.resolved = 0
        self._buckets: dict[str, ObjectBucket] = {}
        self._lock: asyncio.Lock | None = None

    async def _open(self, name: str) -> ObjectBucket:
        if name not in self._buckets:
            self._lock = self._lock or asyncio.Lock()
            async with self._lock:
                if name not in self._buckets:
                    self._buckets[name] = await ObjectBucket.adeclare(
                        self.client, name, ttl=self.ttl, storage=self.storage)
        return self._buckets[name]

    async def aoffload(self, value: Any, name: str, what: str = "the payload") -> Any:
        """``value`` itself if small, else ``{"$ref": "obj://<bucket>/<name>"}`` after storing
        it."""
        data = encode_json(value, what)
        if len(data) <= self.threshold:
            return value
        ref = await (await self._open(self.bucket)).aput(name, data)
        self.offloaded += 1
        return {REF_KEY: ref}

    async def aresolve(self, value: Any) -> Any:
        """The referenced payload if ``value`` is a ``$ref``, else ``value`` unchanged."""
        if not is_ref(value):
            return value
        ref = value[REF_KEY]
        bucket, name = parse_ref(ref)
        try:
            data = await (await self._open(bucket)).aget(name)
        except nats.js.errors.NotFoundError as error:
            raise PayloadMissing(ref, type(error).__name__) from None
        self.resolved += 1
        return pydantic_core.from_json(data)


__all__ = ["ToolCall", "ToolResult", "ToolFailure", "RetryableToolError", "ToolError",
           "ToolTimeout", "PayloadMissing", "PayloadStore", "is_ref", "parse_ref",
           "PAYLOAD_BUCKET", "PAYLOAD_THRESHOLD"]
