"""An agent's task runner: pull tasks, lease, run the handler, record (which announces), ack.

The Agent (agent.py) keeps its lifecycle, delegation, inbox and heartbeat, and makes a
TaskRunner at each start with what it needs. What makes a task run once in effect (the
ledger, and when to read it first) and run once at a time (the lease, org/leases.py)
lives here. (Past 400 lines because both are one decision per delivery: lease, ledger,
handler, record, ack. Split apart, each half would need the other's state.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from ..core.pull import ContinuousPull
from ..core.received import Message, nak_unless_settled
from ..errors import JetStreamUnavailable, MessageDecodeError
from ..telemetry import tracing
from ..wire.messages import decode_model, new_id, to_bytes, utc_now
from .context import TaskContext
from .deadletters import adead_letter_now, aremember_failure
from .leases import Lease, LeaseHolder, TaskLeases, keep_renewed
from .ledger import TaskLedger, completion_msg_id, ledger_key_problem
from .models import Task, TaskCompleted
from .streams import TASK_DUPLICATE_WINDOW as DUPLICATE_WINDOW

if TYPE_CHECKING:
    from ..core.client import Client
    from ..core.subjects import Subjects

log = logging.getLogger("agentlab")

T = TypeVar("T")

# What a server restarting, or a cluster electing a leader, raises for a while: worth asking
# again (a timeout's request may have been done; every retry here is safe to repeat).
_UNANSWERED = (TimeoutError, JetStreamUnavailable)

# How far the server's clock may run ahead of this machine's when a task's stream timestamp
# is compared with the time this agent's connection was (re)made (see _stored_before_connect).
CLOCK_SKEW_ALLOWANCE = 2.0


class TaskDelivery(Message):
    """A delivered task that remembers when its run last said it is working (its start,
    or ``in_progress()``): its lease tells a waiting delivery how long the run is quiet."""

    __slots__ = ("active_at",)

    def __init__(self, *args: Any):
        super().__init__(*args)
        self.active_at = time.monotonic()

    def in_progress(self) -> None:
        super().in_progress()
        self.active_at = time.monotonic()


def retry_delay(deliveries: int) -> float:
    """Back off between attempts: 0.5 s, 1 s, 2 s ... capped at 30 s."""
    return min(30.0, 0.5 * 2 ** (deliveries - 1))


class TaskRunner:
    """Runs the tasks of ``consumer`` on ``stream`` with ``handler``, once in effect.

    Made by the Agent at each start (on the bridge loop) with everything it uses:
    ``ledger`` records each effect, ``stats`` is the agent's counters (counted here),
    ``new_context(task, msg)`` makes the handler's TaskContext. Up to ``max_ack_pending``
    tasks run at once; ``ledger_precheck`` as in :class:`agentlab.org.agent.Agent`.
    ``leases`` (None: no leases) holds each run's lease for ``lease_ttl`` seconds at a time;
    ``ack_wait`` is the consumer's, which a delivery waiting for a lease must not outlast.
    """

    def __init__(self, client: Client, subjects: Subjects, *, stream: str, consumer: str,
                 role: str, instance: str, handler: Callable[..., Any] | None,
                 ledger: TaskLedger, stats: Counter[str],
                 new_context: Callable[[Task, Message], TaskContext], max_deliver: int,
                 max_ack_pending: int, ledger_precheck: bool | Literal["auto"],
                 leases: TaskLeases | None = None, lease_ttl: int = 300,
                 ack_wait: float = 300.0,
                 redeclare: Callable[[], Awaitable[Any]] | None = None):
        self.client, self.subjects = client, subjects
        self.stream, self.role, self.instance = stream, role, instance
        self.handler, self.ledger, self.stats = handler, ledger, stats
        self.max_deliver, self.max_ack_pending = max_deliver, max_ack_pending
        self.ledger_precheck = ledger_precheck
        self.leases, self.lease_ttl, self.ack_wait = leases, lease_ttl, ack_wait
        # Makes the consumer again after each reconnect: one whose state is in memory is
        # gone after its server restarted.
        self._redeclare = redeclare
        # Names this runner in its leases: an instance name may be reused by another process.
        self.runner_id = new_id()
        self._leased: dict[tuple[str, str], str] = {}  # (org, task id) -> its live run
        self._keepers: dict[str, asyncio.Future] = {}  # a live run -> its lease's renewals
        self._new_context = new_context
        self._bridge = client._bridge
        self.working = False  # pulling and running tasks (False once stopping, or closed)
        self.in_flight = 0    # tasks being processed now: the heartbeats report it
        self._in_hand: set[asyncio.Future] = set()
        self._stop_requested = asyncio.Event()
        self._loop: asyncio.Future | None = None
        self._reconnects_seen, self._connected_since = 0, client.connected_at
        self.feed = ContinuousPull(client, stream, consumer, self._take, self._room,
                                   name=f"agent {instance}")

    async def astart(self) -> None:
        """Send the first pull request (a subject this identity may not use raises here)
        and start the work loop."""
        self.working = True
        try:
            await self.feed.astart()
        except BaseException:
            self.working = False
            await self.feed.astop()  # its inbox subscription was made before the refusal
            raise
        self._loop = asyncio.ensure_future(self._consume())

    async def astop(self, timeout: float) -> bool:
        """Stop pulling, finish the tasks in hand. False if ``timeout`` ran out first: those
        still run, for ``abandon()`` to cancel."""
        self.working = False
        self._stop_requested.set()
        if self._loop is None:
            return True
        _, pending = await asyncio.wait([self._loop], timeout=timeout)
        return not pending

    def abandon(self) -> None:
        """Stop at once, mid-task, as a crash would (on the loop): a task in hand is
        neither acked nor recorded, and is redelivered after ack_wait."""
        self.working = False
        if self._loop is not None:
            self._loop.cancel()
        self.feed.abandon()
        for job in list(self._in_hand):
            job.cancel()

    async def _consume(self) -> None:
        # Up to max_ack_pending tasks run at once, as the seed's consumer config intends,
        # each started the moment it arrives: the feed keeps pull requests for as many tasks
        # as there is room for outstanding, and _take starts each one. (A batch handled one
        # by one would leave its last tasks waiting here while their ack_wait ran out.)
        # Cancelled only by abandon() (kill(), or stop() out of time), which cleans up.
        while self.working:
            # Woken by stop() or by the connection's next reconnect or close, never by a
            # timer: an idle agent costs no wakeups (DESIGN decision 13).
            if not self.client.is_closed:
                await _first(self._stop_requested.wait(), self.client.anext_reconnect())
                if self.working and self._redeclare is not None and \
                        not self.client.is_closed:
                    await self._declare_again()
            if self.working and self.client.is_closed:
                log.warning("agent %s: its connection was closed; the agent stops",
                            self.instance)
                self.working = False
        await self.feed.astop()  # no new requests; a task already on its way is taken
        if self._in_hand:  # stop(): finish what was taken
            await asyncio.wait(self._in_hand)

    async def _declare_again(self) -> None:
        """The consumer made again after a reconnect; asked again while the server does
        not answer yet (a cluster electing), for up to ack_wait. Meanwhile the feed's
        requests are refused ("consumer not found") and asked again on the watchdog's tick."""
        assert self._redeclare is not None
        deadline = time.monotonic() + self.ack_wait
        while self.working and not self.client.is_closed:
            try:
                await self._redeclare()
                return
            except Exception as error:  # refused, or not answered yet
                if time.monotonic() > deadline:
                    log.warning("agent %s: could not make its consumer again after a "
                                "reconnect (%s); its tasks wait until it starts again",
                                self.instance, f"{type(error).__name__}: {error}")
                    return
                await asyncio.sleep(0.5)

    def _room(self) -> int:
        return self.max_ack_pending - len(self._in_hand)

    def _take(self, raw: Any) -> None:
        """A task arrived from the feed: start it now."""
        job = asyncio.ensure_future(self._process(TaskDelivery.from_nats(raw, self.client)))
        self._in_hand.add(job)
        job.add_done_callback(self._finished)

    def _finished(self, job: asyncio.Future) -> None:
        self._in_hand.discard(job)
        self.feed.wake()

    async def _process(self, msg: Message) -> None:
        tracer = tracing.tracer()
        if tracer is None:
            await self._process_task(msg)
            return
        # The delivery's span: a child of the publish that delegated the task (its
        # traceparent header), in whichever process that was.
        with tracing.processing(tracer, msg.subject, msg.headers, consumer=self.feed.consumer,
                                stream=self.stream, deliveries=_deliveries(msg),
                                attributes={"agentlab.role": self.role,
                                            "agentlab.instance": self.instance}):
            await self._process_task(msg)

    async def _process_task(self, msg: Message) -> None:
        self.in_flight += 1
        try:
            try:
                task = decode_model(msg.data, Task, msg.subject)
            except MessageDecodeError as error:  # not JSON, or not a Task: no retry helps
                tracing.record_error(error)
                await self._poison(msg, f"not a valid Task: {error.reason}")
                return
            problem = ledger_key_problem(task.org, task.id)
            if problem is not None:  # its effect could not be recorded, nor announced
                await self._poison(msg, f"not a valid Task: {problem}")
                return
            await self._run_task(task, msg)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            # Not the handler (its errors are handled in _run_task): the ledger, the DLQ or
            # the connection failed. Retry later rather than let the work loop die.
            self.stats["errors"] += 1
            tracing.record_error(error)
            text = f"{type(error).__name__}: {error}"
            log.warning("agent %s: could not process %s#%s: %s", self.instance, self.stream,
                        _seq(msg), text)
            nak_unless_settled(msg, retry_delay(_deliveries(msg)))
            try:  # for the dead letter, should it come to that
                await aremember_failure(self.client, msg, text)
            except Exception:
                pass
        finally:
            self.in_flight -= 1

    async def _poison(self, msg: Message, reason: str) -> None:
        # Dead-letter first, term second: if the DLQ is unreachable the error propagates,
        # the message is nak'ed and stays in the work queue instead of being lost.
        await adead_letter_now(self.client, self.subjects, msg, reason)
        msg.term(reason[:200])
        self.stats["poison"] += 1

    def _should_check_ledger(self, task: Task, msg: Message) -> bool:
        if msg.info.redelivered or self.ledger_precheck is True:
            return True
        if self.ledger_precheck is False:
            return False
        if "Agentlab-Redriven-From" in msg.headers or self._stored_before_connect(msg):
            return True
        return (utc_now() - task.created_at).total_seconds() > DUPLICATE_WINDOW

    def _stored_before_connect(self, msg: Message) -> bool:
        """Was this task stored before the connection's latest (re)connect, or before the
        feed's requests were last interrupted?

        A server that is SIGKILLed can come back without the consumer's record that it
        handed a task out and that the ack came: the task is delivered again as a *first*
        delivery (num_delivered 1). On one server only a restart loses that record, and a
        restart breaks every connection, so a task stored after this connection was
        (re)made cannot have been handed out by a server that has since forgotten it. (In
        a cluster the record is replicated; a node's loss moves this connection only if it
        was connected there.)
        """
        reconnects = self.client.nc.stats["reconnects"]
        if reconnects != self._reconnects_seen:
            # nats-py counts a reconnect before it resubscribes, so no delivery on the new
            # connection gets here first; noticing it late only widens what is checked.
            self._reconnects_seen, self._connected_since = reconnects, time.time()
        # The same after the feed's requests were interrupted (a consumer leader change, a
        # silence): a cluster's new consumer leader may hand out again what the old one did.
        since = max(self._connected_since, self.feed.interrupted_at)
        return msg.info.timestamp.timestamp() < since + CLOCK_SKEW_ALLOWANCE

    async def _run_task(self, task: Task, msg: Message) -> None:
        if msg.info.redelivered:
            self.stats["redeliveries"] += 1
        check = self._should_check_ledger(task, msg)
        if self.leases is None:
            await self._run_claimed(task, msg, check, None)
            return
        # The lease first, the ledger second: a run that records and ends between a ledger
        # read and a claim would otherwise go unseen.
        lease = await self._claim(task, msg)
        if lease is None:
            return  # settled meanwhile: acked from the ledger, or handed back on stop
        key = (task.org, task.id)
        self._leased[key] = lease.run
        if isinstance(msg, TaskDelivery):  # the run begins now, whatever it waited for
            msg.active_at = lease.active_at
        keeper = asyncio.ensure_future(keep_renewed(
            self.leases, lease, self._lost,
            (lambda: msg.active_at) if isinstance(msg, TaskDelivery) else None))
        self._keepers[lease.run] = keeper
        try:
            # A lease that another run held before says that run may have recorded it.
            await self._run_claimed(task, msg, check or not lease.fresh, lease)
        except asyncio.CancelledError:
            raise  # killed: as after a crash, the lease expires on its own
        except Exception:
            await self._release(lease)  # the retry after the nak need not wait for expiry
            raise
        finally:
            keeper.cancel()
            self._keepers.pop(lease.run, None)
            if self._leased.get(key) == lease.run:
                del self._leased[key]

    async def _run_claimed(self, task: Task, msg: Message, check: bool,
                           lease: Lease | None) -> None:
        # A first delivery can still be a task whose effect is recorded: one handed out
        # again by a restarted server that lost its consumer state, a redriven dead letter
        # whose last, slow attempt did finish, or a task resent after the stream's 60 s
        # duplicate window. "auto" reads the ledger exactly then (a redelivery, a task
        # stored before the latest (re)connect, a redrive, a task older than the window)
        # and saves the KV round trip (~0.3 ms of a ~1 ms delegation) for fresh tasks.
        # Its one blind spot: the same task id resent with a fresh created_at after the
        # window runs the handler again; the ledger create below still keeps one record
        # and one completion announcement.
        done = None
        if check:
            self.stats["ledger_prechecks"] += 1
            done = await self._until_answered(lambda: self.ledger.aget(task.org, task.id),
                                              msg, lease)
        if done is not None:
            # The effect happened before (we crashed before the ack): acknowledge only.
            self.stats["duplicates_suppressed"] += 1
            self.stats["acked_from_ledger"] += 1
            await self._ack_and_announce_again(task, msg, done.get("result", {}), 0.0)
            return
        ctx = self._new_context(task, msg)
        started = time.perf_counter()
        try:
            result = await self._call_handler(task, ctx)
            result = result if isinstance(result, dict) else {"value": result}
            record = self._completion(task, msg, result, (time.perf_counter() - started) * 1e3)
            data = to_bytes(record)  # a result that is not JSON fails here, as a handler error
        except Exception as error:
            if ctx.cancelled:
                return  # killed meanwhile: as after a real crash, nothing is reported
            self.stats["failed"] += 1
            tracing.record_error(error)  # on the delivery's span, the handler's
            log.warning("agent %s: task %s (%r) failed on delivery %d: %s", self.instance,
                        task.id, task.title, msg.info.num_delivered,
                        f"{type(error).__name__}: {error}")
            await aremember_failure(self.client, msg, f"{type(error).__name__}: {error}")
            if lease is not None:
                await self._release(lease)  # the retry may run as soon as it comes
            msg.nak(delay=retry_delay(msg.info.num_delivered)
                    if msg.info.num_delivered < self.max_deliver else None)
            return
        if ctx.cancelled:
            # kill() landed while the handler ran: its result must not count, as it would
            # not have if the process had really crashed (the task is redelivered).
            return
        # The record is the announcement: the server republishes it on tasks.completed the
        # moment it is stored (org/ledger.py), so the effect is announced if and only if it
        # is recorded, and the CEO hears of it one round trip before the ack.
        # Counted first: whoever sees the announcement may read the stats before the
        # record's receipt is back here.
        self.stats["processed"] += 1
        try:
            # Asked again while the server does not answer: giving up would nak the task
            # and run its handler once more. A record whose receipt was lost is found by
            # its Nats-Msg-Id.
            recorded = await self._until_answered(
                lambda: self.ledger.arecord(record, data), msg, lease)
        except BaseException:
            self.stats["processed"] -= 1
            raise
        if recorded:
            msg.ack()
            # The handler time of the tasks processed: the micro service's STATS reports it.
            self.stats["processing_ns"] += int(record.duration_ms * 1e6)
            return
        # Recorded already: by a replica that ran it at the same time, or by an earlier
        # run of the same task id (a resend after the duplicate window). Announce the
        # recorded result again, not this one.
        self.stats["processed"] -= 1
        self.stats["duplicates_suppressed"] += 1
        done = await self.ledger.aget(task.org, task.id) or {}
        await self._ack_and_announce_again(task, msg, done.get("result", result),
                                           record.duration_ms)

    async def _until_answered(self, ask: Callable[[], Awaitable[T]], msg: Message,
                              lease: Lease | None) -> T:
        """``ask()``, a ledger read or write of this delivery, again while the server does
        not answer (a restart, an election, the ledger's node down) for up to the lease's
        TTL, or without a lease the ack wait, keeping the delivery alive meanwhile (with a
        lease, a redelivery waits for the lease instead). A nak instead would spend one of
        the task's ``max_deliver`` attempts on the outage: three go in seconds, and the task
        then waits undelivered for a dead-letter office, its effect unrecorded."""
        deadline = time.monotonic() + (lease.ttl if lease is not None else self.ack_wait)
        kept_alive = 0.0  # at the first failure: it may have taken a timeout already
        while True:
            try:
                return await ask()
            except _UNANSWERED:
                now = time.monotonic()
                if now > deadline or self.client.is_closed:
                    raise
                if lease is None and now - kept_alive >= min(1.0, self.ack_wait / 3):
                    msg.in_progress()  # buffered while the server is away
                    kept_alive = now
                await asyncio.sleep(0.1)

    # -- leases ------------------------------------------------------------------------
    async def _claim(self, task: Task, msg: Message) -> Lease | None:
        """This delivery's lease on its task, once it may run it; None if the task was
        settled meanwhile.

        A task whose lease another live run holds waits here: the run may finish (its
        ledger record then answers this delivery) or its instance die (its lease expires,
        and this delivery runs the task). The delivery is kept alive meanwhile (``+WPI``
        within the ack wait), not nak'ed: a nak counts as a delivery, and a long first run
        would use up ``max_deliver`` and dead-letter a task that is being done. Waiting
        holds one of the role's ``max_ack_pending`` slots, as a delayed nak would too.

        Only while that run shows it is working: quiet (no return, no ``in_progress()``)
        for longer than the ack wait, it is hung by the ack wait's contract, and this
        delivery is nak'ed instead, an attempt like a failure's: a hung handler ends as a
        dead letter after ``max_deliver`` attempts, as it did without leases, but it is
        never started next to itself.
        """
        waited_since: float | None = None
        run, unanswered_since = new_id(), None
        while True:
            try:
                got, done = await self._claim_once(task, run)
            except _UNANSWERED:
                # Asked again with the same run token: a claim that was stored but not
                # acknowledged is then found to be this run's own, not in the way.
                unanswered_since = unanswered_since or time.monotonic()
                if time.monotonic() - unanswered_since > self.lease_ttl or \
                        self.client.is_closed or not self.working:
                    raise
                msg.in_progress()  # buffered while the server is away
                await asyncio.sleep(0.1)
                continue
            unanswered_since = None
            if isinstance(got, Lease):
                if waited_since is not None:
                    waited = time.monotonic() - waited_since
                    tracing.annotate({"agentlab.lease.waited_s": round(waited, 3)})
                    log.info("agent %s: task %s is free again after %.1f s; running it",
                             self.instance, task.id, waited)
                return got
            if done is not None:  # that run is done: its record answers this delivery
                self.stats["duplicates_suppressed"] += 1
                self.stats["acked_from_ledger"] += 1
                await self._ack_and_announce_again(task, msg, done.get("result", {}), 0.0)
                return None
            if waited_since is None:
                waited_since = time.monotonic()
                self.stats["lease_waits"] += 1
                tracing.annotate({"agentlab.lease.holder": got.instance})
                log.info("agent %s: task %s is being run by %s (delivery %d waits; its lease "
                         "expires in %.1f s unless renewed)", self.instance, task.id,
                         got.instance, _deliveries(msg), got.remaining())
            if got.quiet_s > self.ack_wait:
                self.stats["lease_naks"] += 1
                deliveries = _deliveries(msg)
                log.info("agent %s: task %s: its run on %s has been quiet for %.1f s, longer "
                         "than ack_wait (hung?); delivery %d is nak'ed, not run", self.instance,
                         task.id, got.instance, got.quiet_s, deliveries)
                msg.nak(delay=retry_delay(deliveries) if deliveries < self.max_deliver
                        else None)
                return None
            if not self.working:  # stopping: hand it back rather than wait for another run
                msg.nak(delay=max(1.0, got.remaining()))
                return None
            msg.in_progress()
            try:
                await asyncio.wait_for(self._stop_requested.wait(), self._wait_step(got))
            except asyncio.TimeoutError:
                pass

    async def _claim_once(self, task: Task,
                          run: str) -> tuple[Lease | LeaseHolder, dict[str, Any] | None]:
        """The lease, or its holder and (if that run is done) the task's ledger record."""
        assert self.leases is not None
        got = await self.leases.aclaim(task.org, task.id, instance=self.instance,
                                       runner=self.runner_id, ttl=self.lease_ttl,
                                       stale_run=self._stale, run=run)
        if isinstance(got, Lease):
            return got, None
        self.stats["ledger_prechecks"] += 1
        return got, await self.ledger.aget(task.org, task.id)

    def _wait_step(self, holder: LeaseHolder) -> float:
        # Look again when the lease would expire, and often enough to keep this delivery
        # alive and to notice the first run's record within a third of the lease's TTL.
        return max(0.1, min(holder.remaining() + 0.05, self.ack_wait / 3,
                            self.lease_ttl / 3))

    def _stale(self, holder: LeaseHolder) -> bool:
        """A lease of this runner's whose run ended (its claim's receipt was lost)."""
        return holder.runner == self.runner_id and \
            self._leased.get((holder.org, holder.task_id)) != holder.run

    def _lost(self, lease: Lease) -> None:
        self.stats["leases_lost"] += 1
        log.warning("agent %s: lost the lease of task %s: renewals did not reach the server "
                    "for %d s (lease_ttl), so another delivery may run it next to this run; "
                    "a longer lease_ttl covers longer outages", self.instance, lease.task_id,
                    lease.ttl)

    async def _release(self, lease: Lease) -> None:
        assert self.leases is not None
        # Renewals stop first: one landing after the release would bring the lease back
        # (or, refused, be mistaken for a lost lease).
        keeper = self._keepers.pop(lease.run, None)
        if keeper is not None:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
        try:
            await self.leases.arelease(lease)
        except Exception as error:  # it expires on its own
            log.info("agent %s: lease of %s not released (%s)", self.instance,
                     lease.task_id, error)

    async def _call_handler(self, task: Task, ctx: TaskContext) -> Any:
        if self.handler is None:
            return {"ack": task.title}
        if tracing.tracer() is not None:
            # The delivery's span is the handler's too (no span of its own: an SDK span
            # costs ~15-30 µs, a delegation ~1 ms): what the task is goes on it.
            tracing.annotate({"agentlab.org": task.org, "agentlab.task.title": task.title,
                              "messaging.message.conversation_id":
                                  task.correlation_id or task.id})
        return await self._bridge.arun_handler(self.handler, task, ctx)

    def _completion(self, task: Task, msg: Message, result: dict[str, Any],
                    duration_ms: float) -> TaskCompleted:
        return TaskCompleted(task_id=task.id, org=task.org, role=self.role,
                             instance=self.instance, title=task.title, result=result,
                             deliveries=msg.info.num_delivered, duration_ms=duration_ms,
                             correlation_id=task.correlation_id or task.id)

    async def _ack_and_announce_again(self, task: Task, msg: Message,
                                      result: dict[str, Any], duration_ms: float) -> None:
        """Ack a task whose effect was recorded before, and announce it again: the CEO
        may have resent it because it missed the first announcement."""
        msg.ack()
        # Same Nats-Msg-Id as the record's: AGENT_EVENTS keeps one completion per task.
        self.client.publish(self.subjects.tasks_completed(task.org),
                            self._completion(task, msg, result, duration_ms),
                            headers={"Nats-Msg-Id": completion_msg_id(task.org, task.id)})


async def _first(*waits: Any) -> None:
    """Return when the first of ``waits`` (coroutines) is done; the others are cancelled."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


def _seq(msg: Message) -> Any:
    try:
        return msg.info.stream_seq
    except ValueError:
        return "?"


def _deliveries(msg: Message) -> int:
    try:
        return msg.info.num_delivered
    except ValueError:
        return 1
