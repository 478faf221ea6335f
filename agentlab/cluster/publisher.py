"""Publishing through a failover, and checking afterwards that nothing acknowledged is lost.

    publisher = AckedPublisher(client, "genbrain.agents.cto.tasks", stream="AGENT_TASKS").start()
    cluster.stop_node(cluster.stream_leader("AGENT_TASKS"), kill=True)
    publisher.stop()
    assert missing_acked(client, "AGENT_TASKS", publisher.acked) == []
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from ..core.jetstream import LIST_TIMEOUT
from ..core.lifecycle import Service
from ..errors import (
    ClientClosed,
    JetStreamTimeout,
    JetStreamUnavailable,
    MessageDecodeError,
    MessageNotFound,
    StreamNotFound,
)
from .local import ClusterTimeout

if TYPE_CHECKING:
    from ..core.client import Client
    from ..core.jetstream import PubAck
    from ..core.received import Message
    from ..core.subscription import Subscription

__all__ = ["LEADER_ELECTED", "AckedPublisher", "ResendNow", "missing_acked"]

T = TypeVar("T")

# JetStream announces each new stream leader here, followed by the stream's name.
LEADER_ELECTED = "$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED"
# How often an attempt in flight checks for a new leader or a reconnect: well under the
# time a failover takes, and cheap (a counter compared on the loop).
RESEND_CHECK = 0.02
# 409 "duplicate message id is in process": a resend reached the leader while the first copy
# was still being replicated (a resend after a new leader, under load). Its receipt is a
# commit away, so it is asked for again soon, not after a whole retry_wait.
IN_PROCESS = 10158


class ResendNow(Exception):
    """A publish waiting for its receipt is abandoned: a new stream leader was elected, or
    the connection was lost and made again, so the receipt may never come."""


class AckedPublisher(Service):
    """Publishes numbered messages from a thread of its own, each one until acknowledged.

        publisher = AckedPublisher(client, "genbrain.agents.cto.tasks",
                                   stream="AGENT_TASKS").start()
        ...                                   # stop a node: publishes fail, then resume
        publisher.stop()
        publisher.acked                       # {msg_id: stream sequence} of every receipt

    A publish that gets no receipt (the leader is gone, a new one is being elected) is sent
    again with the same ``Nats-Msg-Id``, so the stream stores it once however often it is
    retried. ``acked`` holds only what the stream confirmed: that is what must never be lost.

    A publish the old leader took but never answered, or whose receipt was on its way through
    a server that went down, would otherwise wait out its whole ``timeout``. The publisher
    listens for JetStream's leader-elected advisory of ``stream`` (any stream if not given)
    and watches its connection: when a new leader is announced or the connection is lost and
    made again (to another node, or to the same one restarted), the waiting message is sent
    again at once; a retry that waits after a refusal (503 while the stream has no leader)
    is cut short by the election too.

    ``subject`` and ``ids`` may be functions of the message number (1, 2, ...), ``count``
    stops after that many receipts (``finished`` is set), and ``rate`` publishes on a steady
    schedule (messages per second) instead of ``interval`` after each receipt. ``sent_at``
    and ``acked_at`` hold, per msg id, the wall-clock time of its first attempt and of its
    receipt, and ``elections`` the leader-elected advisories seen: the fault suite times its
    recoveries with them.
    """

    def __init__(self, client: Client, subject: str | Callable[[int], str], *,
                 stream: str | None = None, prefix: str | None = None,
                 payload: Callable[[int], Any] | None = None,
                 ids: Callable[[int], str] | None = None, count: int | None = None,
                 rate: float | None = None, interval: float = 0.01, timeout: float = 1.0,
                 retry_wait: float = 0.1):
        if count is not None and count < 0:
            raise ValueError(f"count={count}: how many messages to publish, 0 or more "
                             "(None: until stopped)")
        if rate is not None and not rate > 0:
            raise ValueError(f"rate={rate}: messages per second, above 0 (None: one every "
                             "interval after each receipt)")
        self.client, self.subject, self.stream = client, subject, stream
        self.prefix = prefix or f"msg-{os.getpid()}-{next(_publishers)}"
        self.payload = payload or (lambda n: {"n": n})
        self._ids = ids
        self.count, self.rate = count, rate
        self.interval, self.timeout, self.retry_wait = interval, timeout, retry_wait
        self.acked: dict[str, int] = {}
        self.sent_at: dict[str, float] = {}   # msg id -> first attempt (time.time())
        self.acked_at: dict[str, float] = {}  # msg id -> its receipt (time.time())
        self.elections: list[tuple[float, str]] = []  # (time.time(), the new leader)
        self.finished = threading.Event()  # count reached, or the publisher stopped
        self._retry_wake = threading.Event()  # an election (or stop()) ends a retry's wait
        self.duplicates = 0  # receipts for a resend the stream had already stored
        self.failures: list[tuple[float, str]] = []  # (seconds since start, what happened)
        self._ack_times: list[float] = []
        self._failure_times: list[float] = []
        self._started = 0.0
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._advisories: Subscription | None = None
        self._elections = 0  # leader-elected advisories seen; read and written on the loop
        self._new_leader = ""
        self._bridge = client._bridge

    async def _astart_service(self) -> None:
        self._started = time.monotonic()
        self._stop.clear()
        self._advisories = await self.client.asubscribe(
            f"{LEADER_ELECTED}.{self.stream or '*'}", self._on_leader_elected)
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"agentlab-publisher-{self.prefix}")
        self._thread.start()

    # Returns self, unlike Service.stop: `publisher.stop().acked` reads what was confirmed.
    # (mypy calls any return type over the base's None an incompatible override; a caller
    # of Service.stop loses nothing, and the base keeps None so a notebook cell stays quiet.)
    def stop(self, timeout: float = 5) -> AckedPublisher:  # type: ignore[override]
        """Stop publishing (an attempt in flight is not waited out). Returns self."""
        self._stop_blocking(timeout)
        return self

    async def astop(self, timeout: float = 5) -> AckedPublisher:  # type: ignore[override]
        await self._bridge.arun(self._stop_service(timeout))
        return self

    async def _astop_service(self, timeout: float = 5) -> None:
        self._stop.set()
        self._retry_wake.set()
        if self._thread is not None:
            # Off the loop: the thread waits on this loop for the publish it has in flight.
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, timeout)
        if self._advisories is not None and not self.client.is_closed:
            await self._advisories.aunsubscribe()
        self._advisories = None

    def msg_id(self, n: int) -> str:
        return self._ids(n) if self._ids else f"{self.prefix}-{n:06d}"

    def subject_for(self, n: int) -> str:
        return self.subject(n) if callable(self.subject) else self.subject

    async def _on_leader_elected(self, msg: Message) -> None:
        try:
            body = msg.json()
        except MessageDecodeError:
            body = None
        self._new_leader = str(body.get("leader") or "") if isinstance(body, dict) else ""
        self._elections += 1
        self.elections.append((time.time(), self._new_leader))
        self._retry_wake.set()

    async def _resend_due(self) -> str:
        """Returns, with the reason, once a receipt for what is in flight may never come."""
        nc, elections = self.client.nc, self._elections
        reconnects = nc.stats["reconnects"]
        while True:
            await asyncio.sleep(RESEND_CHECK)
            if self._stop.is_set():  # stop() need not wait out an attempt's timeout
                return "the publisher was stopped"
            if self._elections != elections:
                return f"{self._new_leader or 'a new node'} was elected leader"
            if nc.stats["reconnects"] != reconnects:
                # A reply routed through the server this connection lost is lost with it.
                return "the connection was lost and made again"

    async def _publish_once(self, n: int, msg_id: str) -> PubAck:
        publish = asyncio.ensure_future(self.client.js.apublish(
            self.subject_for(n), self.payload(n), msg_id=msg_id, timeout=self.timeout))
        watch = asyncio.ensure_future(self._resend_due())
        try:
            await asyncio.wait((publish, watch), return_when=asyncio.FIRST_COMPLETED)
            if publish.done():
                return publish.result()
            raise ResendNow(f"{watch.result()}: {msg_id} is sent again at once")
        finally:
            publish.cancel()
            watch.cancel()

    def _run(self) -> None:
        try:
            self._publish_all()
        finally:
            self.finished.set()

    def _publish_all(self) -> None:
        numbers = itertools.count(1) if self.count is None else range(1, self.count + 1)
        for n in numbers:
            if self.rate is not None:  # on schedule, whatever the last one cost
                delay = self._started + (n - 1) / self.rate - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return
            msg_id = self.msg_id(n)
            self.sent_at.setdefault(msg_id, time.time())
            while not self._stop.is_set():
                self._retry_wake.clear()
                try:
                    ack = self.client._bridge.run(self._publish_once(n, msg_id),
                                                  operation="publish")
                except ClientClosed:
                    return
                except Exception as error:  # no receipt: send the same message again
                    if self._stop.is_set():
                        return
                    now = time.monotonic()
                    with self._cond:
                        self._failure_times.append(now)
                        self.failures.append((now - self._started,
                                              f"{type(error).__name__}: {error}"[:200]))
                    if getattr(error, "err_code", None) == IN_PROCESS:
                        self._stop.wait(RESEND_CHECK)
                    elif not isinstance(error, ResendNow):
                        self._retry_wake.wait(self.retry_wait)
                    continue
                with self._cond:
                    self.acked[msg_id] = ack.seq
                    self.acked_at[msg_id] = time.time()
                    self.duplicates += ack.duplicate
                    self._ack_times.append(time.monotonic())
                    self._cond.notify_all()
                break
            if self._stop.is_set() or (self.rate is None and self._stop.wait(self.interval)):
                return

    def wait_for_acks(self, count: int, timeout: float = 10) -> int:
        """Block until at least ``count`` messages are acknowledged in all; returns how many."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.acked) >= count, timeout):
                raise ClusterTimeout(
                    f"Only {len(self.acked)} of {count} publishes acknowledged within "
                    f"{timeout:g} s; last failures: {self.failures[-3:]}")
            return len(self.acked)

    def acked_after(self, moment: float) -> int:
        """How many receipts arrived after ``moment`` (a time.monotonic() value)."""
        with self._cond:
            return sum(1 for t in self._ack_times if t > moment)

    def resumed_after(self, moment: float) -> float | None:
        """How long publishing was interrupted by what happened at ``moment`` (a
        time.monotonic() value, such as when a node was stopped): seconds from ``moment`` to
        the first receipt after the first failed attempt that followed it, or to the first
        receipt at all if nothing failed. None while publishing has not resumed."""
        with self._cond:
            failed = [t for t in self._failure_times if t >= moment]
            since = failed[0] if failed else moment
            later = [t for t in self._ack_times if t > since]
        return min(later) - moment if later else None

    def failures_since(self, moment: float) -> list[str]:
        """What the attempts after ``moment`` (a time.monotonic() value) ran into."""
        with self._cond:
            return [what for at, (_, what) in zip(self._failure_times, self.failures,
                                                   strict=True) if at >= moment]

    def longest_pause(self) -> float:
        """The longest time between two receipts: how long publishing stalled."""
        with self._cond:
            times = list(self._ack_times)
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)

    def __repr__(self) -> str:
        return (f"<AckedPublisher {self.subject!r} {self.service_state}: "
                f"{len(self.acked)} acknowledged, "
                f"{len(self.failures)} failed attempts, longest pause "
                f"{self.longest_pause():.2f} s>")


_publishers = itertools.count(1)


def missing_acked(client: Client, stream: str, acked: dict[str, int]) -> list[str]:
    """The msg ids of ``acked`` ({msg_id: seq}) that are not at their sequence in ``stream``.

    Empty means every acknowledged message is stored where its receipt said.
    """
    async def check() -> list[str]:
        async def one(msg_id: str, seq: int) -> str | None:
            # Only the stream's "no message at this sequence" counts as missing: a request
            # that timed out (a node just lost, a loaded machine) proves nothing, so it is
            # asked again, and an answer that never comes is an error, not a lost message.
            for attempt in range(1, _READ_ATTEMPTS + 1):
                try:
                    msg = await client.js.aget_message(stream, seq, timeout=LIST_TIMEOUT)
                    break
                except (JetStreamTimeout, JetStreamUnavailable):
                    if attempt == _READ_ATTEMPTS:
                        raise
                    await asyncio.sleep(0.5)
                except (MessageNotFound, StreamNotFound):
                    return msg_id
            return None if msg.headers.get("Nats-Msg-Id") == msg_id else msg_id

        items, missing = list(acked.items()), list[str]()
        for chunk in _chunks(items, 64):
            found = await asyncio.gather(*(one(m, s) for m, s in chunk))
            missing.extend(m for m in found if m)
        return missing

    return client._bridge.run(check(), operation="missing_acked")


_READ_ATTEMPTS = 3


def _chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
