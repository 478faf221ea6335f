"""JetStream from specs: declare streams and consumers, publish with an ack, pull and ack.

    js = client.js
    js.declare_stream(StreamSpec("AGENT_TASKS", ["genbrain.agents.*.tasks"], retention="workqueue"))
    js.publish("genbrain.agents.cto.tasks", {"title": "ship it"}, msg_id="task-1")
    consumer = js.pull("AGENT_TASKS", js.declare_consumer("AGENT_TASKS", ConsumerSpec("cto")))
    for msg in consumer.fetch(batch=10, timeout=1):
        msg.ack()
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import nats.js.errors
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy, StreamInfo

from ..errors import (
    JETSTREAM_HINTS,
    JetStreamError,
    JetStreamTimeout,
    JetStreamUnavailable,
    LeaderElection,
    NoResponders,
    NotAStream,
    PayloadTooLarge,
    PermissionDenied,
    PublishTimeout,
    RequestTimeout,
    jetstream_api_error,
    jetstream_unavailable,
)
from ..wire.messages import to_bytes
from .received import Message
from .specs import ConsumerSpec, StreamSpec
from .subjects import check_name, check_subscribe_subject

if TYPE_CHECKING:
    from .client import Client

T = TypeVar("T")

# JetStream API error codes (nats-server's errors.json) handled here; errors.py explains
# the rest (jetstream_api_error).
_STREAM_NAME_IN_USE = 10058
_MESSAGE_TOO_BIG = 10054
API_TIMEOUT = 5.0  # seconds a JetStream API request may take (nats-py's default)
# A list request makes the meta leader gather every stream's (or consumer's) info from its
# leader, and just after a node is lost it waits out the ones that do not answer: the
# request needs longer than one stream's info.
LIST_TIMEOUT = 15.0


async def api_call(call: Awaitable[T], action: str, stream: str, consumer: str | None = None,
                   hint: str = "", timeout: float = API_TIMEOUT) -> T:
    """Await a JetStream API call; its failures become agentlab errors naming ``action``.
    ``timeout`` is the one the call was made with, for the message."""
    try:
        return await call
    except nats.js.errors.APIError as error:
        raise _explain(error, action, stream, consumer, hint) from None
    except asyncio.TimeoutError:  # nats-py's TimeoutError is one
        raise JetStreamTimeout(action, timeout) from None


@dataclass(frozen=True)
class PubAck:
    """The stream's receipt: where the message is stored, and whether it was a duplicate."""

    stream: str
    seq: int
    duplicate: bool = False


class JetStream:
    """JetStream operations on one connection (``client.js``)."""

    def __init__(self, client: Client):
        self._client = client
        self._bridge = client._bridge
        self._ctx = client.nc.jetstream(timeout=API_TIMEOUT)

    def _run(self, coro: Coroutine[Any, Any, T], operation: str) -> T:
        return self._bridge.run(coro, operation=operation)

    async def _api(self, call: Awaitable[T], action: str, stream: str,
                   consumer: str | None = None, hint: str = "") -> T:
        return await api_call(call, action, stream, consumer, hint)

    # -- streams ---------------------------------------------------------------------
    def declare_stream(self, spec: StreamSpec) -> StreamInfo:
        """Create the stream, or bring an existing one to this spec. Safe to call again."""
        return self._run(self._declare_stream(spec), "declare_stream")

    async def adeclare_stream(self, spec: StreamSpec) -> StreamInfo:
        return await self._bridge.arun(self._declare_stream(spec))

    async def _declare_stream(self, spec: StreamSpec) -> StreamInfo:
        check_name(spec.name, "stream")
        config, action = spec.to_config(), f"declare stream '{spec.name}'"
        try:
            return await self._ctx.add_stream(config)
        except nats.js.errors.APIError as error:
            if error.err_code != _STREAM_NAME_IN_USE:
                raise _explain(error, action, spec.name) from None
        except asyncio.TimeoutError:
            raise JetStreamTimeout(action, API_TIMEOUT) from None
        return await self._api(self._ctx.update_stream(config),
                               f"update stream '{spec.name}' to the new spec", spec.name,
                               hint="Some settings (retention, storage) cannot change on an "
                                    "existing stream: delete it first or use a new name.")

    def stream_info(self, name: str) -> StreamInfo:
        return self._run(self._stream_info(name), "stream_info")

    async def astream_info(self, name: str) -> StreamInfo:
        return await self._bridge.arun(self._stream_info(name))

    async def _stream_info(self, name: str) -> StreamInfo:
        check_name(name, "stream")
        return await self._api(self._ctx.stream_info(name), f"read stream '{name}'", name)

    def streams(self) -> list[StreamInfo]:
        return self._run(self._streams(), "streams")

    async def astreams(self) -> list[StreamInfo]:
        return await self._bridge.arun(self._streams())

    async def _streams(self) -> list[StreamInfo]:
        return await self._api(self._ctx.streams_info(), "list the streams", "(all)")

    def delete_stream(self, name: str) -> None:
        self._run(self._delete_stream(name), "delete_stream")

    async def adelete_stream(self, name: str) -> None:
        await self._bridge.arun(self._delete_stream(name))

    async def _delete_stream(self, name: str) -> None:
        check_name(name, "stream")
        await self._api(self._ctx.delete_stream(name), f"delete stream '{name}'", name)

    # -- consumers ---------------------------------------------------------------------
    def declare_consumer(self, stream: str, spec: ConsumerSpec) -> ConsumerInfo:
        """Create or update a durable consumer on ``stream``."""
        return self._run(self._declare_consumer(stream, spec), "declare_consumer")

    async def adeclare_consumer(self, stream: str, spec: ConsumerSpec) -> ConsumerInfo:
        return await self._bridge.arun(self._declare_consumer(stream, spec))

    async def _declare_consumer(self, stream: str, spec: ConsumerSpec) -> ConsumerInfo:
        check_name(stream, "stream"), check_name(spec.durable, "consumer")
        return await self._api(self._ctx.add_consumer(stream, spec.to_config()),
                               f"declare consumer '{spec.durable}' on stream '{stream}'",
                               stream, spec.durable)

    def consumer_info(self, stream: str, consumer: str) -> ConsumerInfo:
        return self._run(self._consumer_info(stream, consumer), "consumer_info")

    async def aconsumer_info(self, stream: str, consumer: str) -> ConsumerInfo:
        return await self._bridge.arun(self._consumer_info(stream, consumer))

    async def _consumer_info(self, stream: str, consumer: str) -> ConsumerInfo:
        check_name(stream, "stream"), check_name(consumer, "consumer")
        return await self._api(self._ctx.consumer_info(stream, consumer),
                               f"read consumer '{consumer}'", stream, consumer)

    def consumers(self, stream: str) -> list[ConsumerInfo]:
        return self._run(self._consumers(stream), "consumers")

    async def _consumers(self, stream: str) -> list[ConsumerInfo]:
        check_name(stream, "stream")
        return await self._api(self._ctx.consumers_info(stream),
                               f"list the consumers of stream '{stream}'", stream)

    async def aconsumers(self, stream: str) -> list[ConsumerInfo]:
        return await self._bridge.arun(self._consumers(stream))

    def delete_consumer(self, stream: str, consumer: str) -> None:
        self._run(self._delete_consumer(stream, consumer), "delete_consumer")

    async def adelete_consumer(self, stream: str, consumer: str) -> None:
        await self._bridge.arun(self._delete_consumer(stream, consumer))

    async def _delete_consumer(self, stream: str, consumer: str) -> None:
        check_name(stream, "stream"), check_name(consumer, "consumer")
        await self._api(self._ctx.delete_consumer(stream, consumer),
                        f"delete consumer '{consumer}'", stream, consumer)

    def read(self, stream: str, filter_subject: str = ">", *, since: datetime | None = None,
             timeout: float = 2.0) -> list[Message]:
        """Everything stored in ``stream`` now that matches, oldest first (or from ``since``).

        A snapshot through a throwaway consumer: it reads exactly what was stored when the
        read began, acknowledges nothing, and leaves no consumer behind.
        """
        return self._run(self._read(stream, filter_subject, since, timeout), "read")

    async def aread(self, stream: str, filter_subject: str = ">", *,
                    since: datetime | None = None, timeout: float = 2.0) -> list[Message]:
        return await self._bridge.arun(self._read(stream, filter_subject, since, timeout))

    async def _read(self, stream: str, filter_subject: str, since: datetime | None,
                    timeout: float) -> list[Message]:
        check_name(stream, "stream"), check_subscribe_subject(filter_subject)
        config = ConsumerConfig(
            filter_subject=filter_subject, ack_policy=AckPolicy.NONE, mem_storage=True,
            deliver_policy=DeliverPolicy.BY_START_TIME if since else DeliverPolicy.ALL,
            opt_start_time=since, inactive_threshold=30.0)  # gone even if we are killed
        info = await self._api(self._ctx.add_consumer(stream, config),
                               f"read stream '{stream}'", stream)
        psub = await self._ctx.pull_subscribe_bind(consumer=info.name, stream=stream)
        out: list[Message] = []
        try:
            left = info.num_pending  # the snapshot size: stop at what was stored at the start
            while left > 0:
                try:
                    batch = await psub.fetch(min(left, 256), timeout=timeout)
                except asyncio.TimeoutError:
                    break  # expired or purged meanwhile: return what was there
                left -= len(batch)
                out.extend(Message.from_nats(raw, self._client) for raw in batch)
        finally:
            await psub.unsubscribe()
            try:
                await self._ctx.delete_consumer(stream, info.name)
            except nats.js.errors.Error:
                pass  # inactive_threshold removes it anyway
        return out

    def pull(self, stream: str, consumer: str | ConsumerInfo) -> PullConsumer:
        """A handle to fetch from an existing durable consumer."""
        return self._run(self.apull(stream, consumer), "pull")

    async def apull(self, stream: str, consumer: str | ConsumerInfo) -> PullConsumer:
        name = consumer if isinstance(consumer, str) else consumer.name
        return await self._bridge.arun(self._pull(stream, name))

    async def _pull(self, stream: str, name: str) -> PullConsumer:
        await self._consumer_info(stream, name)  # fail now, by name, if it does not exist
        psub = await self._ctx.pull_subscribe_bind(durable=name, stream=stream)
        return PullConsumer(self._client, stream, name, psub)

    # -- publishing --------------------------------------------------------------------
    def publish(self, subject: str, data: Any = b"", *, msg_id: str | None = None,
                ttl: int | None = None, headers: dict[str, str] | None = None,
                timeout: float = 2.0) -> PubAck:
        """Store a message in the stream that captures ``subject`` and wait for its receipt.

        ``msg_id`` makes a resend within the stream's duplicate window a no-op (the receipt
        says ``duplicate=True``). ``ttl`` (whole seconds) expires this one message.
        """
        payload, headers = to_bytes(data), _js_headers(headers, msg_id, ttl)
        try:
            reply = self._client.request(subject, payload, headers=headers, timeout=timeout)
        except NoResponders:
            raise self._run(self._nothing_stored(subject), "publish") from None
        except RequestTimeout:
            raise PublishTimeout(subject, timeout) from None
        receipt = _receipt(subject, reply)
        if receipt is None:
            raise self._run(self._too_big(subject, len(payload)), "publish")
        return receipt

    async def apublish(self, subject: str, data: Any = b"", *, msg_id: str | None = None,
                       ttl: int | None = None, headers: dict[str, str] | None = None,
                       timeout: float = 2.0) -> PubAck:
        payload, headers = to_bytes(data), _js_headers(headers, msg_id, ttl)
        try:
            reply = await self._client.arequest(subject, payload, headers=headers,
                                                timeout=timeout)
        except NoResponders:
            raise await self._bridge.arun(self._nothing_stored(subject)) from None
        except RequestTimeout:
            raise PublishTimeout(subject, timeout) from None
        receipt = _receipt(subject, reply)
        if receipt is None:
            raise await self._bridge.arun(self._too_big(subject, len(payload)))
        return receipt

    async def _nothing_stored(self, subject: str) -> JetStreamError:
        """Why no stream answered a publish: none captures ``subject`` (NotAStream), or
        the one that does has no leader right now (LeaderElection), or JetStream itself is
        away (JetStreamUnavailable). A stream only listens on its subjects while it has a
        leader, so the JetStream API, not the silence, tells these apart."""
        action = f"store the message published on '{subject}'"
        try:
            reply = await self._client.arequest(f"{self._ctx._prefix}.STREAM.NAMES",
                                                json.dumps({"subject": subject}), timeout=1.0)
        except NoResponders:
            return JetStreamUnavailable(action, "no responders, for the publish nor the API")
        except RequestTimeout:
            return JetStreamUnavailable(action, "no responders, and the JetStream API did not "
                                                "say within 1 s which stream captures it")
        except PermissionDenied:
            return NotAStream(subject)  # may not ask: the likeliest reason, as before
        body = reply.json() if reply.data else {}
        error = body.get("error") if isinstance(body, dict) else None
        if error:
            return _explain(nats.js.errors.APIError(**error), action, "(by subject)")
        streams = body.get("streams") or []
        if not streams:
            return NotAStream(subject)
        return LeaderElection(action, f"stream '{streams[0]}' captures the subject, but no "
                                      "leader of it took the publish", stream=streams[0])

    async def _too_big(self, subject: str, size: int) -> PayloadTooLarge:
        action = f"size up the message published on '{subject}'"
        name = await self._api(self._ctx.find_stream_name_by_subject(subject), action, "?")
        info = await self._api(self._ctx.stream_info(name), action, name)
        return PayloadTooLarge(subject, size, info.config.max_msg_size or -1,
                               limit_name=f"max_msg_size of stream '{name}'")


def _receipt(subject: str, reply: Message) -> PubAck | None:
    """The PubAck, or None when the stream refused the message for its size."""
    try:
        body = json.loads(reply.data)
    except ValueError:
        body = None
    if not isinstance(body, dict) or not ("error" in body or "stream" in body):
        # A core subscriber answered the request instead of a stream.
        raise JetStreamError(
            f"The reply to the JetStream publish on '{subject}' is not a stream's receipt "
            f"(got {reply.data[:60]!r}): a plain subscriber answered, so no stream stored the "
            "message. Declare a stream that captures this subject, or use client.request() "
            "to talk to that service.")
    error = body.get("error")
    if error is None:
        return PubAck(body["stream"], body["seq"], bool(body.get("duplicate", False)))
    code = error.get("err_code")
    if code == _MESSAGE_TOO_BIG:
        return None
    unavailable = jetstream_unavailable(error.get("code"), code, error.get("description"),
                                        f"store the message published on '{subject}'")
    if unavailable is not None:
        raise unavailable
    hint = JETSTREAM_HINTS.get(code, "")
    raise JetStreamError(f"The stream refused the message on '{subject}': "
                         f"{error.get('description')} (err_code {code}). {hint}".rstrip(),
                         error.get("code"), code)


class PullConsumer:
    """Fetch batches from a durable pull consumer; each message is acked by you."""

    def __init__(self, client: Client, stream: str, name: str, psub: Any):
        self._client = client
        self.stream = stream
        self.name = name
        self._psub = psub

    def fetch(self, batch: int = 1, timeout: float = 1.0) -> list[Message]:
        """Up to ``batch`` messages; ``[]`` if none arrive within ``timeout`` seconds."""
        return self._client._bridge.run(self._fetch(batch, timeout), operation="fetch")

    async def afetch(self, batch: int = 1, timeout: float = 1.0) -> list[Message]:
        return await self._client._bridge.arun(self._fetch(batch, timeout))

    async def _fetch(self, batch: int, timeout: float) -> list[Message]:
        self._client._outbound.drain()  # acks sent so far go out before the next pull
        try:
            raw = await self._psub.fetch(batch, timeout=timeout)
        except asyncio.TimeoutError:
            # nats-py raises when nothing arrived (an empty batch reads better). It raises
            # nats.errors.TimeoutError or, when the server's 408 lands at the deadline, a plain
            # asyncio.TimeoutError; catching the base class covers both.
            return []
        except nats.js.errors.APIError as error:
            raise _explain(error, f"fetch from consumer '{self.name}'", self.stream,
                           self.name) from None
        return [Message.from_nats(m, self._client) for m in raw]

    def info(self) -> ConsumerInfo:
        return self._client.js.consumer_info(self.stream, self.name)

    def close(self) -> None:
        """Stop pulling (the durable consumer and its position stay on the server)."""
        self._client._bridge.run(self._psub.unsubscribe(), operation="close")

    async def aclose(self) -> None:
        await self._client._bridge.arun(self._psub.unsubscribe())

    def __repr__(self) -> str:
        return f"<PullConsumer {self.stream}/{self.name}>"


def _js_headers(headers: dict[str, str] | None, msg_id: str | None,
                ttl: int | None) -> dict[str, str] | None:
    if msg_id is None and ttl is None:
        return headers
    out = dict(headers or {})
    if msg_id is not None:
        out["Nats-Msg-Id"] = str(msg_id)
    if ttl is not None:
        if int(ttl) != ttl or ttl < 1:
            raise ValueError(f"ttl={ttl!r}: a message TTL is a whole number of seconds, at least 1.")
        out["Nats-TTL"] = str(int(ttl))
    return out


def _explain(error: nats.js.errors.APIError, action: str, stream: str,
             consumer: str | None = None, hint: str = "") -> JetStreamError:
    return jetstream_api_error(error.code, error.err_code, error.description, action, stream,
                               consumer, hint)
