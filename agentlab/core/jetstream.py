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
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

import nats.js.errors
from nats.js.api import DEFAULT_PREFIX, ConsumerInfo, StreamConfig, StreamInfo
from opentelemetry.trace import Span

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
from ..telemetry import tracing
from ..wire.messages import to_bytes
from .received import Message
from .specs import ConsumerSpec, StreamSpec
from .streamdata import API_TIMEOUT, PullConsumer, StreamData  # noqa: F401  (re-exported)
from .subjects import check_name, check_publish_subject

if TYPE_CHECKING:
    from .client import Client

T = TypeVar("T")
log = logging.getLogger("agentlab")

# JetStream API error codes (nats-server's errors.json) handled here; errors.py explains
# the rest (jetstream_api_error).
_STREAM_NAME_IN_USE = 10058
_MESSAGE_TOO_BIG = 10054
STORAGE_NOT_UPDATABLE = 10012  # a consumer's storage (file or memory) cannot change
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


class JetStream(StreamData):
    """JetStream operations on one connection (``client.js``); the message verbs (read,
    get_message, delete_message, subscribe_ordered, pull) are in streamdata.py."""

    def __init__(self, client: Client, *, prefix: str = DEFAULT_PREFIX):
        self._client = client
        self._bridge = client._bridge
        self.api_prefix = prefix  # where its API requests go; pull.py's requests too
        self._ctx = client.nc.jetstream(timeout=API_TIMEOUT, prefix=prefix)

    def with_prefix(self, prefix: str) -> JetStream:
        """The same connection's JetStream behind another API prefix, such as another
        account's API imported under ``$JS.<account>.API``.

            acme = client.js.with_prefix("$JS.acme.API")
        """
        return JetStream(self._client, prefix=check_publish_subject(prefix))

    def _ctx_for(self, timeout: float) -> Any:
        """The nats-py context whose API requests wait ``timeout`` seconds."""
        if timeout == API_TIMEOUT:
            return self._ctx
        return self._client.nc.jetstream(timeout=timeout, prefix=self.api_prefix)

    def _run(self, coro: Coroutine[Any, Any, T], operation: str) -> T:
        return self._bridge.run(coro, operation=operation)

    async def _api(self, call: Awaitable[T], action: str, stream: str,
                   consumer: str | None = None, hint: str = "",
                   timeout: float = API_TIMEOUT) -> T:
        return await api_call(call, action, stream, consumer, hint, timeout)

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

    def update_stream(self, config: StreamConfig) -> StreamInfo:
        """Give an existing stream ``config`` whole: for settings a StreamSpec does not have.

            config = js.stream_info("KV_TASK_LEDGER").config; config.deny_delete = True
            js.update_stream(config)
        """
        return self._run(self._update_stream(config), "update_stream")

    async def aupdate_stream(self, config: StreamConfig) -> StreamInfo:
        return await self._bridge.arun(self._update_stream(config))

    async def _update_stream(self, config: StreamConfig) -> StreamInfo:
        name = check_name(config.name or "", "stream")
        return await self._api(self._ctx.update_stream(config), f"update stream '{name}'", name)

    def stream_info(self, name: str, *, timeout: float = API_TIMEOUT) -> StreamInfo:
        return self._run(self._stream_info(name, timeout), "stream_info")

    async def astream_info(self, name: str, *, timeout: float = API_TIMEOUT) -> StreamInfo:
        return await self._bridge.arun(self._stream_info(name, timeout))

    async def _stream_info(self, name: str, timeout: float = API_TIMEOUT) -> StreamInfo:
        check_name(name, "stream")
        return await self._api(self._ctx_for(timeout).stream_info(name),
                               f"read stream '{name}'", name, timeout=timeout)

    def streams(self, *, timeout: float = API_TIMEOUT) -> list[StreamInfo]:
        """Every stream's info (all pages). A cluster that just lost a node answers a list
        slowly: give it ``timeout=LIST_TIMEOUT``.

            names = [info.config.name for info in client.js.streams()]
        """
        return self._run(self._streams(timeout), "streams")

    async def astreams(self, *, timeout: float = API_TIMEOUT) -> list[StreamInfo]:
        return await self._bridge.arun(self._streams(timeout))

    async def _streams(self, timeout: float) -> list[StreamInfo]:
        ctx = self._ctx_for(timeout)
        return await self._list(lambda: _all_pages(ctx.streams_info), "list the streams",
                                "(all)", timeout)

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
        action = f"declare consumer '{spec.durable}' on stream '{stream}'"
        try:
            return await self._api(self._ctx.add_consumer(stream, spec.to_config()), action,
                                   stream, spec.durable)
        except JetStreamError as error:
            if error.err_code != STORAGE_NOT_UPDATABLE or spec.memory_state is not None:
                raise
        # memory_state=None: the consumer that exists keeps its kind of storage.
        info = await self._consumer_info(stream, spec.durable)
        kept = replace(spec, memory_state=bool(info.config.mem_storage))
        return await self._api(self._ctx.add_consumer(stream, kept.to_config()), action,
                               stream, spec.durable)

    def consumer_info(self, stream: str, consumer: str) -> ConsumerInfo:
        return self._run(self._consumer_info(stream, consumer), "consumer_info")

    async def aconsumer_info(self, stream: str, consumer: str) -> ConsumerInfo:
        return await self._bridge.arun(self._consumer_info(stream, consumer))

    async def _consumer_info(self, stream: str, consumer: str) -> ConsumerInfo:
        check_name(stream, "stream"), check_name(consumer, "consumer")
        return await self._api(self._ctx.consumer_info(stream, consumer),
                               f"read consumer '{consumer}'", stream, consumer)

    def consumers(self, stream: str, *, timeout: float = API_TIMEOUT) -> list[ConsumerInfo]:
        """Every consumer's info on ``stream`` (all pages); ``timeout`` as for streams().

            names = [info.name for info in client.js.consumers("AGENT_TASKS")]
        """
        return self._run(self._consumers(stream, timeout), "consumers")

    async def aconsumers(self, stream: str, *,
                         timeout: float = API_TIMEOUT) -> list[ConsumerInfo]:
        return await self._bridge.arun(self._consumers(stream, timeout))

    async def _consumers(self, stream: str, timeout: float) -> list[ConsumerInfo]:
        check_name(stream, "stream")
        ctx = self._ctx_for(timeout)
        return await self._list(
            lambda: _all_pages(lambda offset: ctx.consumers_info(stream, offset)),
            f"list the consumers of stream '{stream}'", stream, timeout)

    async def _list(self, pages: Callable[[], Awaitable[list[T]]], action: str, stream: str,
                    timeout: float) -> list[T]:
        """A listing, asked once more if it times out. It is a read, so asking again is safe,
        and just after a cluster loses a node the meta leader can wait out the streams whose
        leader went with it, then answer the next request at once."""
        try:
            return await self._api(pages(), action, stream, timeout=timeout)
        except JetStreamTimeout:
            log.info("JetStream did not %s within %g s; asking once more", action, timeout)
            return await self._api(pages(), action, stream, timeout=timeout)

    def delete_consumer(self, stream: str, consumer: str) -> None:
        self._run(self._delete_consumer(stream, consumer), "delete_consumer")

    async def adelete_consumer(self, stream: str, consumer: str) -> None:
        await self._bridge.arun(self._delete_consumer(stream, consumer))

    async def _delete_consumer(self, stream: str, consumer: str) -> None:
        check_name(stream, "stream"), check_name(consumer, "consumer")
        await self._api(self._ctx.delete_consumer(stream, consumer),
                        f"delete consumer '{consumer}'", stream, consumer)

    # -- publishing --------------------------------------------------------------------
    def publish(self, subject: str, data: Any = b"", *, msg_id: str | None = None,
                ttl: int | None = None, headers: dict[str, str] | None = None,
                timeout: float = 2.0) -> PubAck:
        """Store a message in the stream that captures ``subject`` and wait for its receipt.

        ``msg_id`` makes a resend within the stream's duplicate window a no-op (the receipt
        says ``duplicate=True``). ``ttl`` (whole seconds) expires this one message.
        """
        payload, headers = to_bytes(data), _js_headers(headers, msg_id, ttl)
        tracer = tracing.tracer()
        if tracer is None:
            return self._publish(subject, payload, headers, timeout)
        span, headers = tracing.start_send(tracer, "publish", subject, headers)
        with tracing.ending(span, current=True):
            return _stored(span, self._publish(subject, payload, headers, timeout))

    def _publish(self, subject: str, payload: bytes, headers: dict[str, str] | None,
                 timeout: float) -> PubAck:
        """publish() with the headers made and no span of its own (the caller's is current)."""
        try:
            reply = self._client._request(subject, payload, timeout, headers)
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
        tracer = tracing.tracer()
        if tracer is None:
            return await self._apublish(subject, payload, headers, timeout)
        span, headers = tracing.start_send(tracer, "publish", subject, headers)
        with tracing.ending(span, current=True):
            return _stored(span, await self._apublish(subject, payload, headers, timeout))

    async def _apublish(self, subject: str, payload: bytes, headers: dict[str, str] | None,
                        timeout: float) -> PubAck:
        try:
            reply = await self._client._arequest(subject, payload, timeout, headers)
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
            reply = await self._client.arequest(f"{self.api_prefix}.STREAM.NAMES",
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


def _stored(span: Span, receipt: PubAck) -> PubAck:
    """Say on the publish's span where the stream stored the message."""
    span.set_attribute("messaging.nats.stream", receipt.stream)
    span.set_attribute("messaging.nats.stream_sequence", receipt.seq)
    if receipt.duplicate:
        span.set_attribute("messaging.nats.duplicate", True)
    return receipt


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


_API_LIST_LIMIT = 256  # nats-server's JSApiListLimit: list replies come in pages of this size


async def _all_pages(fetch: Callable[[int], Awaitable[list[T]]]) -> list[T]:
    items: list[T] = []
    while True:
        page = await fetch(len(items))
        items.extend(page)
        if len(page) < _API_LIST_LIMIT:
            return items


def _js_headers(headers: dict[str, str] | None, msg_id: str | None,
                ttl: int | None) -> dict[str, str] | None:
    if msg_id is None and ttl is None:
        return headers
    out = dict(headers or {})
    if msg_id is not None:
        out["Nats-Msg-Id"] = str(msg_id)
    if ttl is not None:
        if int(ttl) != ttl or ttl < 1:
            raise ValueError(f"ttl={ttl!r}: a message TTL is a whole number of seconds, "
                             "at least 1.")
        out["Nats-TTL"] = str(int(ttl))
    return out


def _explain(error: nats.js.errors.APIError, action: str, stream: str,
             consumer: str | None = None, hint: str = "") -> JetStreamError:
    return jetstream_api_error(error.code, error.err_code, error.description, action, stream,
                               consumer, hint)
