"""A subscription: a handler called per message, or a mailbox you iterate.

    sub = client.subscribe("genbrain.agents.*.inbox")
    for msg in sub.messages(count=3, timeout=1):
        print(msg.subject, msg.text)
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

from ..errors import NoMessage, SubscriptionClosed
from ..telemetry import tracing
from ._natspy import drain_subscription
from .received import Message
from .subjects import check_subscribe_subject, validate_token

if TYPE_CHECKING:
    from .client import Client

log = logging.getLogger("agentlab")

MAILBOX_LIMIT = 100_000
_TIMEOUT = object()
_CLOSED = object()


class Mailbox:
    """Messages handed from the loop to whichever thread or event loop is waiting for them."""

    def __init__(self, subject: str, limit: int = MAILBOX_LIMIT):
        self._subject = subject
        self._limit = limit
        self._items: deque[Message] = deque()
        self._cond = threading.Condition()
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []
        self.closed = False
        self.dropped = 0

    def put(self, item: Message) -> None:
        with self._cond:
            if len(self._items) >= self._limit:
                # Core NATS is at-most-once: like nats-py's slow-consumer rule, drop rather
                # than let an unread subscription eat all memory.
                self.dropped += 1
                if self.dropped == 1:
                    log.warning("subscription on '%s' holds %d unread messages; dropping new "
                                "ones. Read faster, use a handler, or a JetStream consumer.",
                                self._subject, self._limit)
                return
            self._items.append(item)
            self._cond.notify()
            waiters, self._async_waiters = self._async_waiters, []
        _wake(waiters)

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()
            waiters, self._async_waiters = self._async_waiters, []
        _wake(waiters)

    def get(self, timeout: float | None) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items:
                if self.closed:
                    return _CLOSED
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return _TIMEOUT
                self._cond.wait(remaining)
            return self._items.popleft()

    async def aget(self, timeout: float | None) -> Any:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            with self._cond:
                if self._items:
                    return self._items.popleft()
                if self.closed:
                    return _CLOSED
                future = loop.create_future()
                self._async_waiters.append((loop, future))
            remaining = None if deadline is None else deadline - loop.time()
            try:
                await asyncio.wait_for(future, remaining)
            except asyncio.TimeoutError:
                return _TIMEOUT

    def __len__(self) -> int:
        return len(self._items)


def _wake(waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]]) -> None:
    for loop, future in waiters:
        loop.call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


class Subscription:
    """Interest in a subject pattern. Counts what it received, handled and failed on."""

    def __init__(self, client: Client, subject: str, handler: Callable[[Message], Any] | None,
                 *, queue: str = "", reply_with_result: bool = False):
        check_subscribe_subject(subject)
        if queue:
            validate_token(queue, "queue group")
        self.subject = subject
        self.queue = queue
        self.handler = handler
        self.client = client
        self.received = 0
        self.handled = 0
        self.errors = 0
        self.last_error: BaseException | None = None
        self._reply_with_result = reply_with_result
        self._mailbox = Mailbox(subject) if handler is None else None
        self._nats_sub: Any = None
        self._closed = False

    async def _start(self) -> None:
        self._nats_sub = await self.client.nc.subscribe(self.subject, queue=self.queue,
                                                        cb=self._on_message)

    async def _stop(self) -> None:
        self._closed = True
        if self in self.client._subscriptions:
            self.client._subscriptions.remove(self)
        if self._nats_sub is not None and not self.client.is_closed:
            try:
                # Deliver what the server already routed here, then stop: a queue-group
                # member that leaves must not take messages down with it.
                await drain_subscription(self.client.nc, self.client._outbound, self._nats_sub)
            except Exception:  # the connection went away meanwhile: nothing left to deliver
                pass
        if self._mailbox is not None:
            self._mailbox.close()  # after the drain, so iteration sees those messages too

    async def _on_message(self, raw: Any) -> None:
        # nats-py awaits this per subscription, one message at a time: order is kept.
        self.received += 1
        msg = Message.from_nats(raw, self.client)
        if self._mailbox is not None:
            self._mailbox.put(msg)
            return
        tracer = tracing.tracer()
        if tracer is None:
            await self._handle(msg)
            return
        # A child of the publish that sent it (its traceparent), in whichever process.
        with tracing.processing(tracer, msg.subject, msg.headers, consumer=self.queue or None,
                                attributes={"messaging.destination.subscription.name":
                                            self.subject}):
            await self._handle(msg)

    async def _handle(self, msg: Message) -> None:
        handler = self.handler
        assert handler is not None  # no mailbox: the subscription was made with a handler
        try:
            result = await self.client._bridge.arun_handler(handler, msg)
            self.handled += 1
            if self._reply_with_result and msg.reply:
                self.client.reply(msg.reply, b"" if result is None else result)
        except Exception as error:
            self.errors += 1
            self.last_error = error
            tracing.record_error(error)
            name = getattr(self.handler, "__qualname__", repr(self.handler))
            if self._reply_with_result and msg.reply:
                # The requester gets the error as the reply; one line here is enough.
                log.warning("handler %s failed on subject '%s': %s: %s (sent to the "
                            "requester)", name, msg.subject, type(error).__name__, error)
            else:
                log.exception("handler %s failed on subject '%s' (subscription '%s'); "
                              "the subscription carries on", name, msg.subject, self.subject)
            if self._reply_with_result and msg.reply:
                self.client.reply(msg.reply, {"error": f"{type(error).__name__}: {error}"},
                                  headers={"Agentlab-Error": type(error).__name__})

    # -- reading without a handler ------------------------------------------------------
    def next(self, timeout: float | None = 5.0) -> Message:
        """The next message; NoMessage if none arrives within ``timeout`` seconds."""
        item = self._require_mailbox().get(timeout)
        return self._unwrap(item, timeout)

    async def anext(self, timeout: float | None = 5.0) -> Message:
        item = await self._require_mailbox().aget(timeout)
        return self._unwrap(item, timeout)

    def messages(self, count: int | None = None, timeout: float = 1.0) -> list[Message]:
        """Whatever arrives within ``timeout`` seconds, stopping early at ``count`` messages."""
        mailbox = self._require_mailbox()
        deadline = time.monotonic() + timeout
        out: list[Message] = []
        while count is None or len(out) < count:
            item = mailbox.get(max(0.0, deadline - time.monotonic()))
            if item is _TIMEOUT or item is _CLOSED:
                break
            out.append(item)
        return out

    def __iter__(self) -> Iterator[Message]:
        mailbox = self._require_mailbox()
        while (item := mailbox.get(None)) is not _CLOSED:
            yield item

    async def __aiter__(self) -> AsyncIterator[Message]:
        mailbox = self._require_mailbox()
        while (item := await mailbox.aget(None)) is not _CLOSED:
            yield item

    def _require_mailbox(self) -> Mailbox:
        if self._mailbox is None:
            raise ValueError(
                f"The subscription on '{self.subject}' has a handler, which receives every "
                "message; subscribe without a handler to read messages yourself."
            )
        return self._mailbox

    def _unwrap(self, item: Any, timeout: float | None) -> Message:
        if item is _TIMEOUT:
            raise NoMessage(self.subject, timeout or 0.0)
        if item is _CLOSED:
            raise SubscriptionClosed(self.subject)
        return item

    @property
    def pending(self) -> int:
        """Messages received but not read yet (mailbox subscriptions)."""
        return len(self._mailbox) if self._mailbox is not None else 0

    # -- ending -----------------------------------------------------------------------
    def unsubscribe(self) -> None:
        self.client._bridge.run(self._stop(), operation="unsubscribe")

    async def aunsubscribe(self) -> None:
        await self.client._bridge.arun(self._stop())

    def __repr__(self) -> str:
        group = f" queue={self.queue!r}" if self.queue else ""
        return (f"<Subscription {self.subject!r}{group} received={self.received} "
                f"handled={self.handled} errors={self.errors}>")
