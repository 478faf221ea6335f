"""The messages a stream holds: read a snapshot, get or delete one, follow in order, pull.

    js = client.js
    for msg in js.read("MEETINGS", "genbrain.meetings.q3.>"):
        print(msg.subject, msg.json())
    letter = js.get_message("DEAD_LETTERS", 7)        # a StoredMessage, or MessageNotFound
    js.delete_message("DEAD_LETTERS", 7)
    feed = js.subscribe_ordered("MEETINGS", "genbrain.meetings.q3.>", on_message)
    feed.close()
    for msg in js.pull("AGENT_TASKS", "cto").fetch(batch=10, timeout=1):
        msg.ack()

JetStream (jetstream.py) mixes these verbs in: they are reached as ``client.js.<verb>``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import nats.errors
import nats.js.errors
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy

from ..errors import NO_MESSAGE_FOUND, AgentlabError, MessageNotFound, jetstream_api_error
from ..telemetry import tracing
from ..wire.messages import decode_json
from .received import Message
from .subjects import check_name, check_subscribe_subject

if TYPE_CHECKING:
    from .bridge import Bridge
    from .client import Client

T = TypeVar("T")

API_TIMEOUT = 5.0  # seconds a JetStream API request may take (nats-py's default)
# The headers a direct get adds to say where the message is stored: they are not the message's.
_DIRECT_GET_HEADERS = frozenset({"Nats-Stream", "Nats-Sequence", "Nats-Time-Stamp",
                                 "Nats-Subject", "Nats-Num-Pending", "Nats-Last-Sequence"})
# A delete of a message that is not there says "sequence not found" (10043) on a memory
# stream, and on a file stream "delete failed" (10057) with these reasons of its store.
_SEQUENCE_NOT_FOUND, _DELETE_FAILED = 10043, 10057
_NOT_THERE = frozenset({"no message found", "stream store EOF"})


@dataclass(frozen=True)
class StoredMessage:
    """One message as its stream stores it: sequence, subject, payload, headers, time."""

    stream: str
    seq: int
    subject: str
    data: bytes
    headers: dict[str, str]
    time: datetime | None

    def json(self) -> Any:
        return decode_json(self.data, self.subject)


class StreamData:
    """The message verbs of :class:`~agentlab.core.jetstream.JetStream`, which mixes them in
    and provides what is declared here."""

    _client: Client
    _bridge: Bridge
    _ctx: Any
    if TYPE_CHECKING:
        def _run(self, coro: Coroutine[Any, Any, T], operation: str) -> T: ...
        async def _api(self, call: Awaitable[T], action: str, stream: str,
                       consumer: str | None = None, hint: str = "",
                       timeout: float = API_TIMEOUT) -> T: ...
        def _ctx_for(self, timeout: float) -> Any: ...
        async def _consumer_info(self, stream: str, consumer: str) -> ConsumerInfo: ...
        async def _delete_consumer(self, stream: str, consumer: str) -> None: ...

    def read(self, stream: str, filter_subject: str = ">", *,
             since: datetime | None = None, timeout: float = 2.0) -> list[Message]:
        """Everything stored in ``stream`` now that matches, oldest first (or from ``since``).

        A snapshot through a throwaway consumer: it reads exactly what was stored when the
        read began, acknowledges nothing, and leaves no consumer behind. ``timeout`` bounds
        each batch; a batch that does not come (expired or purged meanwhile) ends the read.

            entries = client.js.read("MEETINGS", "genbrain.meetings.q3.>")
        """
        return self._run(self._read(stream, filter_subject, since, timeout), "read")

    async def aread(self, stream: str, filter_subject: str = ">", *,
                    since: datetime | None = None, timeout: float = 2.0) -> list[Message]:
        return await self._bridge.arun(self._read(stream, filter_subject, since, timeout))

    async def _read(self, stream: str, filter_subject: str,
                    since: datetime | None, timeout: float) -> list[Message]:
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
            left = info.num_pending or 0  # the snapshot: stop at what was stored at the start
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

    def get_message(self, stream: str, seq: int, *, subject: str | None = None,
                    direct: bool = False, timeout: float = API_TIMEOUT) -> StoredMessage:
        """The message stored at ``seq``; with ``subject``, the first one at or after ``seq``
        whose subject matches it. MessageNotFound if there is none.

        ``direct=True`` asks any replica (the stream must allow direct gets), not the leader.

            first = client.js.get_message("DEAD_LETTERS", 1, subject="genbrain.dlq.>")
        """
        return self._run(self._get_message(stream, seq, subject, direct, timeout),
                         "get_message")

    async def aget_message(self, stream: str, seq: int, *,
                           subject: str | None = None, direct: bool = False,
                           timeout: float = API_TIMEOUT) -> StoredMessage:
        return await self._bridge.arun(self._get_message(stream, seq, subject, direct, timeout))

    async def _get_message(self, stream: str, seq: int, subject: str | None,
                           direct: bool, timeout: float) -> StoredMessage:
        check_name(stream, "stream")
        if subject is not None:
            check_subscribe_subject(subject)
        if seq < 1:
            raise ValueError(f"seq={seq!r}: stream sequences start at 1")
        ctx = self._ctx_for(timeout)

        async def get() -> Any:
            try:
                return await ctx.get_msg(stream, seq, subject=subject,
                                         next=subject is not None, direct=direct)
            except nats.js.errors.NotFoundError as error:
                # A direct get says "404" with no code; the API says 10037. Another code
                # (the stream is missing) is for api_call to explain.
                if error.err_code in (None, NO_MESSAGE_FOUND):
                    raise MessageNotFound(stream, seq, subject) from None
                raise
            except nats.errors.NoRespondersError:
                # A direct get is a plain request: no stream (or JetStream) answers it.
                raise nats.js.errors.ServiceUnavailableError from None

        which = f"message {seq}" if subject is None else f"the first message on '{subject}' " \
                                                          f"from {seq}"
        raw = await self._api(get(), f"read {which} of stream '{stream}'", stream,
                              timeout=timeout)
        headers = dict(raw.headers or {})
        if direct:
            headers = {k: v for k, v in headers.items() if k not in _DIRECT_GET_HEADERS}
        return StoredMessage(stream, raw.seq or seq, raw.subject or "", raw.data or b"",
                             headers, raw.time)

    def delete_message(self, stream: str, seq: int, *, timeout: float = API_TIMEOUT) -> None:
        """Remove the message at ``seq`` from ``stream``; MessageNotFound if it is not there.

            client.js.delete_message("DEAD_LETTERS", 7)
        """
        self._run(self._delete_message(stream, seq, timeout), "delete_message")

    async def adelete_message(self, stream: str, seq: int, *,
                              timeout: float = API_TIMEOUT) -> None:
        await self._bridge.arun(self._delete_message(stream, seq, timeout))

    async def _delete_message(self, stream: str, seq: int, timeout: float) -> None:
        check_name(stream, "stream")
        ctx = self._ctx_for(timeout)

        async def delete() -> None:
            try:
                await ctx.delete_msg(stream, seq)
            except nats.js.errors.APIError as error:
                if error.err_code == _SEQUENCE_NOT_FOUND or (
                        error.err_code == _DELETE_FAILED and error.description in _NOT_THERE):
                    raise MessageNotFound(stream, seq) from None
                raise
        await self._api(delete(), f"delete message {seq} of stream '{stream}'", stream,
                        timeout=timeout)

    def subscribe_ordered(self, stream: str, filter_subject: str,
                          callback: Callable[[Message], Any], *,
                          replay: bool = True) -> OrderedSubscription:
        """Call ``callback(msg)`` for each message of ``stream`` matching ``filter_subject``,
        one at a time in stream order: the stored ones first if ``replay``, else new ones.

        An ordered consumer: ephemeral, unacknowledged, gap-free (nats-py recreates it if it
        falls behind). A coroutine ``callback`` runs on the client's loop, a plain one in
        the handler pool.

            feed = client.js.subscribe_ordered("MEETINGS", "genbrain.meetings.q3.>", print)
        """
        return self._run(self._subscribe_ordered(stream, filter_subject, callback, replay),
                         "subscribe_ordered")

    async def asubscribe_ordered(self, stream: str, filter_subject: str,
                                 callback: Callable[[Message], Any], *,
                                 replay: bool = True) -> OrderedSubscription:
        return await self._bridge.arun(
            self._subscribe_ordered(stream, filter_subject, callback, replay))

    async def _subscribe_ordered(self, stream: str, filter_subject: str,
                                 callback: Callable[[Message], Any],
                                 replay: bool) -> OrderedSubscription:
        check_name(stream, "stream"), check_subscribe_subject(filter_subject)

        async def on_raw(raw: Any) -> None:
            # nats-py awaits this once per message: the next waits, so order is kept.
            msg = Message.from_nats(raw, self._client)
            tracer = tracing.tracer()
            if tracer is None:
                await self._bridge.arun_handler(callback, msg)
                return
            with tracing.processing(tracer, msg.subject, msg.headers, stream=stream):
                await self._bridge.arun_handler(callback, msg)

        sub = await self._api(self._ctx.subscribe(
            filter_subject, stream=stream, cb=on_raw, ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL if replay else DeliverPolicy.NEW),
            f"follow stream '{stream}'", stream)
        return OrderedSubscription(self, stream, sub)

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
            raise jetstream_api_error(error.code, error.err_code, error.description,
                                      f"fetch from consumer '{self.name}'", self.stream,
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


class OrderedSubscription:
    """A live feed started by ``client.js.subscribe_ordered``; ``close()`` ends it."""

    def __init__(self, js: StreamData, stream: str, sub: Any):
        self._js = js
        self.stream = stream
        self._sub = sub

    def close(self) -> None:
        """Stop the feed and delete its consumer."""
        self._js._run(self._close(), "close")

    async def aclose(self) -> None:
        await self._js._bridge.arun(self._close())

    async def _close(self) -> None:
        sub, self._sub = self._sub, None
        if sub is None:
            return
        # The feed stops first, whatever happens next: a consumer already gone (its inactivity
        # threshold, a restarted server) must not leave the handler running.
        try:
            name = (await sub.consumer_info()).name  # nats-py renames it when it recreates it
        except Exception:
            name = None
        await sub.unsubscribe()
        if name is None:
            return
        # Now rather than after its inactivity timeout, so stream reports stop listing it.
        try:
            await self._js._delete_consumer(self.stream, name)
        except AgentlabError:
            pass  # gone already: what was wanted

    def __repr__(self) -> str:
        state = "closed" if self._sub is None else "open"
        return f"<OrderedSubscription {self.stream} {state}>"


__all__ = ["API_TIMEOUT", "OrderedSubscription", "PullConsumer", "StoredMessage", "StreamData"]
