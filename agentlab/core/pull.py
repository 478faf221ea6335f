"""Continuous pull: keep pull requests outstanding on a durable consumer and hand over each
message the moment it arrives (what nats.go's ``Consume()`` does; nats-py has only fetch).

    feed = ContinuousPull(client, "AGENT_TASKS", "cto", on_message, room=lambda: 5 - busy)
    await feed.astart()
    ...
    feed.wake()          # room was freed: ask for more if it is worth a request
    await feed.astop()   # once every request was served or expired (<= 0.5 s)

Why not ``fetch()``: a fetch for n returns only when all n came or it expired, so an agent
that starts each task as it comes has to fetch(1) per task, and that request (a publish, a
waiter, a task) sits on the path of every task: about 80 µs of a 1 ms delegation. Here one
request asks for as many messages as there is room for; the server sends them one by one as
tasks arrive, each straight to ``on_message``; a new request goes out once half the room is
free again.

What it relies on, checked in tests/test_continuous_pull.py:
* A pull request cannot be withdrawn. The server drops one only when nobody at all listens on
  its reply subject, and a wildcard tap (the Observer's ``_INBOX.>``) counts as listening; a
  task sent to such a request would wait out ack_wait. So requests live briefly, and astop()
  waits until each one has been served or has expired before it unsubscribes.
* Requests from several instances on one consumer are served in turn (replicas share).
* An expired request is answered by a 408 status with ``Nats-Pending-Messages``, the count it
  still owed. A request the server lost (restart, consumer leader change) is answered by
  nothing; so requests are sent again after a reconnect, and whenever nothing at all was
  heard for longer than a request lives.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..telemetry import untraced
from ._natspy import drain_subscription, pub_command
from .subjects import check_name

if TYPE_CHECKING:
    from .client import Client

log = logging.getLogger("agentlab")

# How long one pull request lives: an idle consumer is asked again this often, astop() waits
# at most this long, and a request the server lost goes unnoticed for at most this plus
# LOST_AFTER (a failover must recover within ~2 s).
REQUEST_LIFETIME = 0.5
LOST_AFTER = 0.5
PULL_API = "{prefix}.CONSUMER.MSG.NEXT.{stream}.{consumer}"


class ContinuousPull:
    """Pull requests kept outstanding on ``stream``/``consumer``; messages go to ``on_message``.

    ``room()`` says how many more messages the caller can take now (for an agent: its
    max_ack_pending minus the tasks in hand). ``on_message(msg)`` gets the nats-py message on
    the event loop and must not block; call ``wake()`` when room frees up.
    """

    def __init__(self, client: Client, stream: str, consumer: str,
                 on_message: Callable[[Any], None], room: Callable[[], int], *,
                 name: str = "", request_lifetime: float = REQUEST_LIFETIME):
        self.client, self.stream, self.consumer = client, stream, consumer
        self.name = name or f"{stream}/{consumer}"
        self._on_message, self._room = on_message, room
        # Both names become tokens of the request's subject, written straight to the socket.
        check_name(stream, "stream"), check_name(consumer, "consumer")
        self._api = PULL_API.format(prefix=client.js.api_prefix, stream=stream, consumer=consumer)
        self.request_lifetime = request_lifetime
        self._owed = 0  # messages our outstanding requests may still deliver
        self._settled = asyncio.Event()  # set while nothing is asked for (see astop())
        self._capacity = max(1, room())
        self._sub: Any = None
        self._inbox = ""
        self._pulling = False
        self._heard = time.monotonic()
        self._reconnects = 0
        self._watchdog: asyncio.Future | None = None
        self.requests = 0  # pull requests sent (for tests and curiosity)
        self._refusal = ""  # the last refusal logged, so a lasting one is logged once

    async def astart(self) -> ContinuousPull:
        nc = self.client.nc
        self._inbox = nc.new_inbox()
        self._sub = await nc.subscribe(self._inbox, cb=self._deliver)
        self._pulling, self._reconnects = True, nc.stats["reconnects"]
        # The first request through publish(): a subject this identity may not use is a
        # clear PermissionDenied here, not silence later.
        want = self._room()
        self._heard = time.monotonic()
        with untraced():  # a pull request is plumbing, not a step of anyone's goal
            await self.client.apublish(self._api, self._asked_for(want), reply=self._inbox)
        self._watchdog = asyncio.ensure_future(self._watch())
        return self

    def wake(self) -> None:
        """Room was freed: send a request when half the room is unasked for (or none is)."""
        if not self._pulling:
            return
        want = self._room() - self._owed
        if want > 0 and (self._owed == 0 or want * 2 >= self._capacity):
            self._ask(want)

    async def astop(self) -> None:
        """Stop asking; return once every request has been served or has expired (at most
        ``request_lifetime``). What arrives meanwhile still goes to ``on_message``: no message is
        lost or left to wait out ack_wait."""
        self._stop_asking()
        if self._sub is None:
            return
        if self._owed and self.client.nc.is_connected:
            try:
                await asyncio.wait_for(self._settled.wait(),
                                       self.request_lifetime + LOST_AFTER)
            except asyncio.TimeoutError:
                log.info("%s: %d message(s) still asked for at stop", self.name, self._owed)
        sub, self._sub = self._sub, None
        try:
            # UNSUB, then PING/PONG: whatever the server sent before it reaches on_message
            # before the subscription goes.
            await drain_subscription(self.client.nc, self.client._outbound, sub)
        except Exception as error:  # closed connection: the server forgot us anyway
            log.info("%s: pull subscription not drained (%s)", self.name, error)

    def abandon(self) -> None:
        """Stop at once, as a crash would: a message sent to a request still outstanding
        waits out ack_wait."""
        self._stop_asking()
        sub, self._sub = self._sub, None
        if sub is not None:
            asyncio.ensure_future(_quietly(sub.unsubscribe()))

    # -- internals ---------------------------------------------------------------------
    def _stop_asking(self) -> None:
        self._pulling = False
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def _asked_for(self, want: int) -> bytes:
        """Count a request for ``want`` more messages; returns its body."""
        self._owed += want
        self._settled.clear()
        self.requests += 1
        return json.dumps({"batch": want, "expires": int(self.request_lifetime * 1e9)}).encode()

    def _ask(self, want: int) -> None:
        # Straight to the outbound queue: this runs once per refill, on the loop.
        self.client._outbound.send(pub_command(self._api, self._asked_for(want), self._inbox))

    def _set_owed(self, owed: int) -> None:
        self._owed = max(0, owed)
        if not self._owed:
            self._settled.set()

    async def _deliver(self, msg: Any) -> None:
        self._heard = time.monotonic()
        if not msg.reply:  # a status: 408 when a request expired, 409 when it was refused
            headers = msg.headers or {}
            owed = headers.get("Nats-Pending-Messages")
            self._set_owed(self._owed - int(owed) if owed is not None else 0)
            status = headers.get("Status")
            if status in (None, "408", "100"):
                self.wake()
                return
            # Refused (consumer deleted, leader changed, too many waiting): ask again on the
            # watchdog's next round, not at once, and say so once, not on every refusal.
            if status == "503":  # no responders on the pull API
                refusal = ("503: nobody answers for this consumer: it does not exist, or it "
                           "has no leader right now (an election after a node was lost)")
            else:
                refusal = f"{status} {headers.get('Description', '')}".strip()
            if refusal != self._refusal:
                self._refusal = refusal
                log.warning("%s: the server refused a pull request (%s); asking again every "
                            "%g s", self.name, refusal, LOST_AFTER / 2)
            return
        self._set_owed(self._owed - 1)
        self._refusal = ""
        # Also while astop() waits for its requests to end: the message is ours now, and a
        # nak would spend one of its max_deliver attempts.
        self._on_message(msg)

    async def _watch(self) -> None:
        """Ask again after a reconnect, or when nothing was heard for a request's lifetime:
        the server that held our requests may have lost them."""
        nc = self.client.nc
        while self._pulling:
            await asyncio.sleep(LOST_AFTER / 2)
            if not nc.is_connected:
                continue  # nats-py buffers a request meanwhile; ask once the socket is back
            reconnects = nc.stats["reconnects"]
            silent = time.monotonic() - self._heard > self.request_lifetime + LOST_AFTER
            if reconnects != self._reconnects or (silent and self._owed):
                self._reconnects = reconnects
                self._heard = time.monotonic()
                self._set_owed(0)
            self.wake()  # also the backstop for a refused request


async def _quietly(coro: Any) -> None:
    try:
        await coro
    except Exception:  # a closed connection: nothing left to unsubscribe
        pass
