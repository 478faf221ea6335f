"""Requests on one connection: one wildcard reply subscription, and a waiter per request
that a thread or a coroutine can wait on. Public nats-py API only."""

from __future__ import annotations

import asyncio
import itertools
import threading
from typing import TYPE_CHECKING, Any

from ...errors import NoResponders
from .internals import check
from .protocol import pub_command

if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient
    from nats.aio.msg import Msg

    from ..bridge import Bridge
    from .outbound import Outbound


class PendingReply:
    """One request in flight; completed by the loop, awaited by a thread or a coroutine."""

    __slots__ = ("subject", "result", "_lock", "_loop", "_future")

    def __init__(self, subject: str, loop: asyncio.AbstractEventLoop | None):
        self.subject = subject
        self.result: Any = None
        # A thread waits on a lock; a coroutine on a future of its loop. Exactly one is set.
        self._loop = loop
        self._lock: threading.Lock | None
        self._future: asyncio.Future[Any] | None
        if loop is None:
            self._lock = threading.Lock()
            self._lock.acquire()
            self._future = None
        else:
            self._lock = None
            self._future = loop.create_future()

    def complete(self, result: Any, on_loop: asyncio.AbstractEventLoop) -> None:
        if self._lock is not None:
            self.result = result
            self._lock.release()
            return
        loop, future = self._loop, self._future
        assert loop is not None and future is not None  # no lock: made for a coroutine
        if loop is on_loop:
            _settle(future, result)
        else:
            loop.call_soon_threadsafe(_settle, future, result)

    def wait(self, timeout: float) -> bool:
        assert self._lock is not None, "wait() is for a reply made without a loop"
        return self._lock.acquire(timeout=timeout)

    async def await_result(self, timeout: float) -> bool:
        assert self._future is not None, "await_result() is for a reply made on a loop"
        try:
            self.result = await asyncio.wait_for(asyncio.shield(self._future), timeout)
        except asyncio.TimeoutError:
            return False
        return True


def _settle(future: asyncio.Future, result: Any) -> None:
    if not future.done():
        future.set_result(result)


class RequestMux:
    """Every request on a connection shares one wildcard reply subscription, as nats-py does."""

    def __init__(self, bridge: Bridge, nc: NatsClient, outbound: Outbound):
        self._bridge = bridge
        self._outbound = outbound
        self._waiters: dict[str, PendingReply] = {}
        self._tokens = itertools.count(1)
        # "<inbox prefix>.<unique>.": the subject nats-py's own mux builds, by public means.
        self.prefix = nc.new_inbox() + "."

    async def start(self, nc: NatsClient) -> None:
        sub = await nc.subscribe(self.prefix + "*", cb=self._on_reply)
        # The connection's first subscription: where Subscription's internals are checked.
        self._outbound.fall_back(check(sub, "Subscription"))

    def send(self, subject: str, payload: bytes, header_block: bytes = b"",
             loop: asyncio.AbstractEventLoop | None = None) -> tuple[str, PendingReply]:
        token = str(next(self._tokens))
        pending = PendingReply(subject, loop)
        self._waiters[token] = pending
        self._outbound.send_now(pub_command(subject, payload, self.prefix + token, header_block))
        return token, pending

    def forget(self, token: str) -> None:
        self._waiters.pop(token, None)

    async def _on_reply(self, msg: Msg) -> None:
        pending = self._waiters.pop(msg.subject[len(self.prefix):], None)
        if pending is None:
            return
        result: Any = msg
        if not msg.data and msg.headers and msg.headers.get("Status") == "503":
            result = NoResponders(pending.subject)
        pending.complete(result, self._bridge.loop)

    def fail_subject(self, subject: str, error: BaseException) -> None:
        """The server refused a publish to ``subject``: fail its waiting requests now."""
        for token, pending in list(self._waiters.items()):
            if pending.subject.lower() == subject:
                self._waiters.pop(token, None)
                pending.complete(error, self._bridge.loop)
