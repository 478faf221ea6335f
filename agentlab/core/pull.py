"""Continuous pull: keep pull requests outstanding on a durable consumer and hand over each
message the moment it arrives (what nats.go's ``Consume()`` does; nats-py has only fetch).

    feed = ContinuousPull(client, "AGENT_TASKS", "cto", on_message, room=lambda: 5 - busy)
    await feed.astart()
    ...
    feed.wake()          # room was freed: ask for more if it is worth a request
    await feed.astop()   # at once, or once every request was served or expired (see below)

Why not ``fetch()``: a fetch for n returns only when all n came or it expired, so an agent
that starts each task as it comes has to fetch(1) per task, and that request (a publish, a
waiter, a task) sits on the path of every task: about 80 µs of a 1 ms delegation. Here one
request asks for as many messages as there is room for; the server sends them one by one as
tasks arrive, each straight to ``on_message``; a new request goes out once half the room is
free again.

Idle cost stays flat with the number of feeds (DESIGN decision 13):

* **Long-lived requests.** While nobody else listens on this connection's inboxes, a
  request lives ``IDLE_LIFETIME`` (10 s) and asks the server for an idle heartbeat (a
  status 100, no API request) that says it is still held: an idle feed costs one JetStream
  API request per 10 s, not two per second. How often the heartbeat comes depends on who
  could lose the request silently. Connected to a server of its own (its INFO says
  JetStream and no cluster, and the API is the local ``$JS.API``), the server holding the
  request is the connection's other end: it cannot drop the request without the connection
  noticing (a restart is a reconnect), so the heartbeat is only a safety net and comes
  every ``IDLE_HEARTBEAT`` (5 s, the most the server allows for a 10 s request). In a
  cluster a consumer leader on another node can die without a word, and the heartbeat is
  what notices: every ``CLUSTER_IDLE_HEARTBEAT`` (2 s). Decided at every request, so a
  reconnect to another kind of server changes it. At a hundred idle feeds: 10 API requests
  and 20 status messages a second on one server, 50 in a cluster. (Longer requests, as
  nats.go's 30 s, would cost less still, but a tap that appears meanwhile makes a stopped
  feed linger, and hand a task back with a nak delayed, for as long as its request lives.)
* **One timer per event loop, not one per feed.** A shared watchdog ticks every
  ``LOST_AFTER / 2`` over every feed of the loop: it asks again after a reconnect, when a
  request went silent (no message, heartbeat or status for two heartbeats, or for a short
  request's lifetime, plus ``LOST_AFTER``), and after a refusal.
* **Failover.** A consumer's new leader (R>1) answers each request it inherited with
  ``409 Leadership Change``; a deleted consumer with ``409 Consumer Deleted``: the request
  is over and the watchdog's next tick (<= 0.25 s) asks again. A server restart is a
  reconnect. A request lost without a word (a leader that could not hand it over) misses
  its heartbeats: asked again within ``2 * idle_heartbeat + LOST_AFTER`` (4.5 s in a
  cluster).

What stopping relies on, checked in tests/test_continuous_pull.py:

* A pull request cannot be withdrawn. The server drops one when nobody at all listens on its
  reply subject (it looks before each delivery), so a feed whose inbox nobody else covers
  stops at once: it unsubscribes and the server forgets its requests. A wildcard tap on
  every inbox (the Observer's ``_INBOX.>``) counts as listening, though: a task sent to such
  a request would go to the tap and wait out ack_wait. So a feed **probes** for such a tap
  (a request to a fresh inbox-shaped subject: "503 no responders" means nobody covers the
  inboxes), shared per server and login and refreshed every ``TAP_CHECK`` seconds. While a
  tap listens (or a login may not publish to its own inboxes, so cannot probe), requests
  live ``request_lifetime`` (0.5 s) only, and astop() waits until each one has been served
  or has expired before it unsubscribes, taking what arrives meanwhile.
* A long request sent before a tap appeared cannot be waited out at stop (up to 10 s). The
  stopped feed **lingers** instead: it keeps its subscription until the request ends and
  hands what arrives to a running feed of the same consumer in this process (a replica, the
  next start), or, with none, back to the server with a nak delayed until the request has
  expired (one delivery attempt spent, not ack_wait in a tap). ``lingering_on(client)``
  says when its connection may close (the Organisation waits for it).
* Requests from several instances on one consumer are served in turn (replicas share).
* An expired request is answered by a 408 status with ``Nats-Pending-Messages``, the count it
  still owed.

Why this module is past 400 lines: the feed, the tap probe (``_Taps``) and the shared
watchdog are one mechanism; they share a request's lifetime, its silence limit and what a
stop may leave behind, and apart each would reach into the others' state.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import NoResponders, PermissionDenied
from ..telemetry import untraced
from ._natspy import drain_subscription, pub_command, server_info
from .subjects import check_name

if TYPE_CHECKING:
    from .client import Client

log = logging.getLogger("agentlab")

# A short request's lifetime: while an inbox tap listens (and before the first probe has
# answered), an idle consumer is asked again this often and astop() waits at most this long.
REQUEST_LIFETIME = 0.5
# A request the server lost goes unnoticed for at most its silence limit plus this.
LOST_AFTER = 0.5
# While nobody else listens on the inboxes: a request's lifetime and its idle heartbeat, on
# a server of its own and in a cluster (see the module notes). IDLE_LIFETIME is the longest a
# request lives: what a stopped feed may have to linger for.
IDLE_LIFETIME = 10.0
IDLE_HEARTBEAT = 5.0
CLUSTER_IDLE_HEARTBEAT = 2.0
# How old a probe's answer ("is anyone tapping the inboxes?") may be before it is asked again.
TAP_CHECK = 2.0
PROBE_TIMEOUT = 1.0
PROBE_GRACE = 0.2  # after the flush: time for the mux to hand the 503 over
PULL_API = "{prefix}.CONSUMER.MSG.NEXT.{stream}.{consumer}"

# The feeds pulling now, by (url, login, stream, consumer): where a stopped feed's lingering
# requests hand their messages over (see ContinuousPull._linger).
_running: dict[tuple[str, str | None, str, str], weakref.WeakSet[ContinuousPull]] = {}
_lingering: weakref.WeakSet[ContinuousPull] = weakref.WeakSet()


def lingering_on(client: Client) -> list[asyncio.Future]:
    """The stopped feeds of ``client`` still handing over what their long requests get (see
    ContinuousPull.astop): done once they have unsubscribed. Close ``client`` after them."""
    return [f.lingering for f in list(_lingering)
            if f.client is client and f.lingering is not None and not f.lingering.done()]


class ContinuousPull:
    """Pull requests kept outstanding on ``stream``/``consumer``; messages go to ``on_message``.

    ``room()`` says how many more messages the caller can take now (for an agent: its
    max_ack_pending minus the tasks in hand). ``on_message(msg)`` gets the nats-py message on
    the event loop and must not block; call ``wake()`` when room frees up.
    ``idle_lifetime`` and ``idle_heartbeat`` (both or neither; default: by the server, see
    the module notes) fix a long request's lifetime and heartbeat; ``idle_lifetime=0`` keeps
    every request short (``request_lifetime``), as with a tap.
    """

    def __init__(self, client: Client, stream: str, consumer: str,
                 on_message: Callable[[Any], None], room: Callable[[], int], *,
                 name: str = "", request_lifetime: float = REQUEST_LIFETIME,
                 idle_lifetime: float | None = None, idle_heartbeat: float | None = None):
        self.client, self.stream, self.consumer = client, stream, consumer
        self.name = name or f"{stream}/{consumer}"
        self._on_message, self._room = on_message, room
        # Both names become tokens of the request's subject, written straight to the socket.
        check_name(stream, "stream"), check_name(consumer, "consumer")
        if (idle_lifetime is None) != (idle_heartbeat is None) and idle_lifetime != 0:
            raise ValueError(f"idle_lifetime={idle_lifetime!r}, idle_heartbeat={idle_heartbeat!r}"
                             ": give both, or neither (then they follow the server: see "
                             "agentlab.core.pull)")
        if idle_lifetime and not 0 < 2 * (idle_heartbeat or 0) <= idle_lifetime:
            raise ValueError(f"idle_heartbeat={idle_heartbeat!r}: the server wants a heartbeat "
                             f"of at most half the request's lifetime ({idle_lifetime!r} s)")
        self._api = PULL_API.format(prefix=client.js.api_prefix, stream=stream, consumer=consumer)
        self.request_lifetime = request_lifetime
        # None: by the server, at each request (_long_request).
        self.idle_lifetime, self.idle_heartbeat = idle_lifetime, idle_heartbeat
        self._owed = 0  # messages our outstanding requests may still deliver
        self._settled = asyncio.Event()  # set while nothing is asked for (see astop())
        self._capacity = max(1, room())
        self._sub: Any = None
        self._inbox = ""
        self._pulling = False
        self._heard = time.monotonic()
        self._silence = request_lifetime + LOST_AFTER  # of the latest request
        self._expires = 0.0  # monotonic time the latest request expires
        self._reconnects = 0
        self._taps: _Taps | None = None
        self._key = (client.url, client.identity, stream, consumer)
        self.lingering: asyncio.Future | None = None  # see astop()
        self.requests = 0  # pull requests sent (for tests and curiosity)
        # When (wall clock, time.time()) a request of this feed last ended without its
        # messages: a leader change, a refusal, silence, a reconnect. A consumer's new
        # leader may hand out again, as first deliveries, tasks stored before then.
        self.interrupted_at = 0.0
        self._refusal = ""  # the last refusal logged, so a lasting one is logged once

    async def astart(self) -> ContinuousPull:
        nc = self.client.nc
        self._inbox = nc.new_inbox()
        self._taps = _Taps.of(self.client, self._inbox)
        self._sub = await nc.subscribe(self._inbox, cb=self._deliver)
        self._pulling, self._reconnects = True, nc.stats["reconnects"]
        if self.idle_lifetime != 0:  # the first request's lifetime depends on a fresh answer
            await self._taps.afresh(self.client)
        # The first request through publish(): a subject this identity may not use is a
        # clear PermissionDenied here, not silence later.
        want = self._room()
        self._heard = time.monotonic()
        with untraced():  # a pull request is plumbing, not a step of anyone's goal
            await self.client.apublish(self._api, self._asked_for(want), reply=self._inbox)
        _Watchdog.of_loop().add(self)
        _running.setdefault(self._key, weakref.WeakSet()).add(self)
        return self

    def wake(self) -> None:
        """Room was freed: send a request when half the room is unasked for (or none is)."""
        if not self._pulling:
            return
        want = self._room() - self._owed
        if want > 0 and (self._owed == 0 or want * 2 >= self._capacity):
            self._ask(want)

    async def astop(self) -> None:
        """Stop asking; return once the server can send nothing more here. What arrives
        meanwhile still goes to ``on_message``: no message is lost or left to wait out
        ack_wait. At once unless a tap listens on the inboxes; then within
        ``request_lifetime + LOST_AFTER``, a long request still outstanding being left to
        linger (see the module notes)."""
        self._stop_asking()
        if self._sub is None:
            return
        nc = self.client.nc
        remaining = self._expires - time.monotonic()
        # A long request is dropped by unsubscribing, unless a tap listens; a short one is
        # waited out, as is any request while a tap listens.
        if self._owed and nc.is_connected and (remaining <= self.request_lifetime
                                               or await _Taps.probe(self.client) is not False):
            wait = min(max(0.0, remaining), self.request_lifetime) + LOST_AFTER
            try:
                await asyncio.wait_for(self._settled.wait(), wait)
            except asyncio.TimeoutError:
                if remaining > self.request_lifetime:  # long, from before the tap was seen
                    self._linger()
                    return
                log.info("%s: %d message(s) still asked for at stop", self.name, self._owed)
        await self._unsubscribe()

    async def _unsubscribe(self) -> None:
        sub, self._sub = self._sub, None
        if sub is None:
            return
        try:
            # UNSUB, then PING/PONG: whatever the server sent before it reaches on_message
            # before the subscription goes; after it, nobody listens and the server drops
            # our requests.
            await drain_subscription(self.client.nc, self.client._outbound, sub)
        except Exception as error:  # closed connection: the server forgot us anyway
            log.info("%s: pull subscription not drained (%s)", self.name, error)

    def _linger(self) -> None:
        """Keep listening until the long requests end, handing what arrives over: to a
        running feed of the same consumer in this process (a replica, the next start), else
        back to the server with a nak delayed until the requests have expired, so that it is
        not delivered to them again. The caller has stopped; ``lingering`` is done when the
        subscription goes (close the connection only then: see Organisation)."""
        loop = asyncio.get_running_loop()
        self.lingering = loop.create_future()
        _lingering.add(self)
        self._on_message = self._hand_over
        loop.call_later(max(0.0, self._expires - time.monotonic()) + LOST_AFTER,
                        self._end_linger)
        log.info("%s: a tap on the inboxes holds %d message(s) of a long request; handing "
                 "them over for %.1f s", self.name, self._owed, self._expires - time.monotonic())

    def _hand_over(self, msg: Any) -> None:
        heir = next((f for f in _running.get(self._key, ()) if f._pulling), None)
        if heir is not None:
            heir._on_message(msg)
            return
        delay = max(0.0, self._expires - time.monotonic()) + LOST_AFTER
        try:  # the nak spends a delivery attempt: rather that than ack_wait in a tap
            self.client._ack_reply(msg.reply, b'-NAK {"delay": %d}' % int(delay * 1e9))
        except Exception as error:  # closed connection: it waits out ack_wait after all
            log.info("%s: a message could not be handed back (%s)", self.name, error)

    def _end_linger(self) -> None:
        if self.lingering is not None and not self.lingering.done():
            self.lingering.set_result(None)
            asyncio.ensure_future(self._unsubscribe())

    def abandon(self) -> None:
        """Stop at once, as a crash would: a message sent to a request still outstanding
        waits out ack_wait if anyone else listens on its inbox."""
        self._stop_asking()
        sub, self._sub = self._sub, None
        if sub is not None:
            asyncio.ensure_future(_quietly(sub.unsubscribe()))

    # -- internals ---------------------------------------------------------------------
    def _stop_asking(self) -> None:
        self._pulling = False
        _Watchdog.of_loop().discard(self)
        running = _running.get(self._key)
        if running is not None:
            running.discard(self)
            if not running:
                del _running[self._key]

    def _asked_for(self, want: int) -> bytes:
        """Count a request for ``want`` more messages; returns its body."""
        self._owed += want
        self._settled.clear()
        self.requests += 1
        now = time.monotonic()
        if self.idle_lifetime != 0 and self._taps is not None and self._taps.untapped(now):
            lifetime, beat = self._long_request()
            silence = 2 * beat + LOST_AFTER
        else:
            lifetime, beat = self.request_lifetime, 0.0
            silence = lifetime + LOST_AFTER
        # The longest silence any outstanding request may keep (one alone: its own).
        self._silence = silence if self._owed == want else max(self._silence, silence)
        self._expires = max(self._expires, now + lifetime)
        body: dict[str, int] = {"batch": want, "expires": int(lifetime * 1e9)}
        if beat:
            body["idle_heartbeat"] = int(beat * 1e9)
        return json.dumps(body).encode()

    def _long_request(self) -> tuple[float, float]:
        """A long request's lifetime and idle heartbeat: as given, else by the server the
        connection is on now (see the module notes)."""
        if self.idle_lifetime is not None:
            return self.idle_lifetime, self.idle_heartbeat or 0.0
        return IDLE_LIFETIME, IDLE_HEARTBEAT if alone(self.client) else CLUSTER_IDLE_HEARTBEAT

    def _ask(self, want: int) -> None:
        # Straight to the outbound queue: this runs once per refill, on the loop.
        self.client._outbound.send(pub_command(self._api, self._asked_for(want), self._inbox))

    def _set_owed(self, owed: int) -> None:
        self._owed = max(0, owed)
        if not self._owed:
            self._settled.set()
            self._end_linger()

    async def _deliver(self, msg: Any) -> None:
        self._heard = time.monotonic()
        if not msg.reply:  # a status: 100 heartbeat, 408 expired, 409 over or refused
            headers = msg.headers or {}
            status = headers.get("Status")
            if status == "100":  # the request is still held: nothing else to do
                return
            owed = headers.get("Nats-Pending-Messages")
            self._set_owed(self._owed - int(owed) if owed is not None else 0)
            if status in (None, "408"):
                self.wake()
                return
            self.interrupted_at = time.time()
            # Over (leader changed, consumer deleted) or refused (too many waiting, no
            # consumer): ask again on the watchdog's next tick, not at once, and say so once,
            # not on every refusal.
            if status == "503":  # no responders on the pull API
                refusal = ("503: nobody answers for this consumer: it does not exist, or it "
                           "has no leader right now (an election after a node was lost)")
            else:
                refusal = f"{status} {headers.get('Description', '')}".strip()
            if refusal != self._refusal:
                self._refusal = refusal
                level = logging.INFO if "Leadership Change" in refusal else logging.WARNING
                log.log(level, "%s: the server ended or refused a pull request (%s); asking "
                        "again within %g s", self.name, refusal, LOST_AFTER / 2)
            return
        self._set_owed(self._owed - 1)
        self._refusal = ""
        # Also while astop() waits for its requests to end: the message is ours now, and a
        # nak would spend one of its max_deliver attempts.
        self._on_message(msg)

    def _check(self, now: float) -> None:
        """The watchdog's tick: ask again after a reconnect, or when the requests went
        silent (the server that held them may have lost them), or after a refusal."""
        nc = self.client.nc
        if not self._pulling or not nc.is_connected:
            return  # nats-py buffers a request meanwhile; ask once the socket is back
        reconnects = nc.stats["reconnects"]
        if reconnects != self._reconnects or (self._owed and now - self._heard > self._silence):
            self._reconnects = reconnects
            self._heard = now
            self.interrupted_at = time.time()
            self._set_owed(0)
        self.wake()


def alone(client: Client) -> bool:
    """True if ``client``'s JetStream is the server it is connected to, on its own: its INFO
    says JetStream and no cluster, and the API is the local ``$JS.API`` (not a domain's or
    another account's prefix, which leads elsewhere). Then a lost server is a lost
    connection, which nats-py notices; nothing else can drop a pull request silently."""
    info = server_info(client.nc)
    return bool(info.get("jetstream")) and not info.get("cluster") and \
        client.js.api_prefix == "$JS.API"


@dataclass
class _Taps:
    """Whether anyone else listens on the inboxes of one server and login (a wildcard tap
    such as the Observer's ``_INBOX.>``), as a probe last found."""

    prefix: str
    tapped: bool | None = None  # None: not asked yet
    at: float = 0.0
    probing: asyncio.Future | None = None
    denied: bool = False  # this login may not publish to its inboxes: never asked again

    _known: ClassVar[Any] = weakref.WeakValueDictionary()  # (url, identity, prefix) -> it

    @classmethod
    def of(cls, client: Client, inbox: str) -> _Taps:
        prefix = inbox.rsplit(".", 1)[0]
        key = (client.url, client.identity, prefix)
        taps = cls._known.get(key)
        if taps is None:
            taps = cls._known[key] = cls(prefix)
        return taps

    def untapped(self, now: float) -> bool:
        return self.tapped is False and now - self.at <= TAP_CHECK + PROBE_TIMEOUT

    def stale(self, now: float) -> bool:
        return self.probing is None and not self.denied and now - self.at > TAP_CHECK

    async def afresh(self, client: Client) -> None:
        """A new answer (a probe already under way is shared)."""
        if self.denied:
            return
        if self.probing is None:
            self.refresh(client)
        assert self.probing is not None
        await asyncio.shield(self.probing)

    def refresh(self, client: Client) -> None:
        async def ask() -> None:
            try:
                found = await self.probe(client)
                self.tapped, self.denied = found is not False, found is None
            finally:
                self.at, self.probing = time.monotonic(), None
        self.probing = asyncio.ensure_future(ask())

    @staticmethod
    async def probe(client: Client) -> bool | None:
        """True if anyone else would hear a message sent to one of this connection's
        inboxes: a request to a fresh one gets "no responders" only when nobody does. The
        server answers that while it reads the request, before the PONG of the flush after
        it, so a tap costs a round trip and PROBE_GRACE, not a timeout. None: this login may
        not publish to its inboxes (a tenant's user, say), so it cannot tell."""
        try:
            with untraced():
                token, pending = client._send_request(client.nc.new_inbox(), b"", None,
                                                      asyncio.get_running_loop())
                await client._aflush(PROBE_TIMEOUT)
                arrived = await pending.await_result(PROBE_GRACE)
        except PermissionDenied:
            return None
        except Exception:  # closed, timed out: assume the worst, short requests
            return True
        if not arrived:
            client._requests.forget(token)
            return True  # someone heard it and kept quiet: a tap
        if isinstance(pending.result, PermissionDenied):
            return None
        return not isinstance(pending.result, NoResponders)


class _Watchdog:
    """Every feed of one event loop, checked on one timer (see the module notes)."""

    _loops: ClassVar[Any] = weakref.WeakKeyDictionary()  # loop -> _Watchdog

    def __init__(self) -> None:
        self.feeds: set[ContinuousPull] = set()
        self._task: asyncio.Future | None = None

    @classmethod
    def of_loop(cls) -> _Watchdog:
        loop = asyncio.get_running_loop()
        watchdog = cls._loops.get(loop)
        if watchdog is None:
            watchdog = cls._loops[loop] = cls()
        return watchdog

    def add(self, feed: ContinuousPull) -> None:
        self.feeds.add(feed)
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    def discard(self, feed: ContinuousPull) -> None:
        self.feeds.discard(feed)

    async def _run(self) -> None:
        with untraced():
            while self.feeds:
                await asyncio.sleep(LOST_AFTER / 2)
                now = time.monotonic()
                for feed in list(self.feeds):
                    taps = feed._taps
                    if feed.idle_lifetime != 0 and taps is not None and taps.stale(now) \
                            and feed.client.nc.is_connected:
                        taps.refresh(feed.client)  # one probe per server and login
                    try:
                        feed._check(now)
                    except Exception as error:  # one feed's closed connection, say
                        log.info("%s: watchdog check failed (%s)", feed.name, error)


async def _quietly(coro: Any) -> None:
    try:
        await coro
    except Exception:  # a closed connection: nothing left to unsubscribe
        pass
