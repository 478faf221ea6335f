"""An agent's task runner: pull tasks, run the handler, record (which announces), ack.

The Agent (agent.py) keeps its lifecycle, delegation, inbox and heartbeat, and makes a
TaskRunner at each start with what it needs. What makes a task run once in effect (the
ledger, and when to read it first) lives here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from ..core.pull import ContinuousPull
from ..core.received import Message, nak_unless_settled
from ..errors import MessageDecodeError
from ..telemetry import tracing
from ..wire.messages import decode_model, to_bytes, utc_now
from .context import TaskContext
from .deadletters import adead_letter_now, aremember_failure
from .ledger import TaskLedger, completion_msg_id, ledger_key_problem
from .models import Task, TaskCompleted
from .streams import TASK_DUPLICATE_WINDOW as DUPLICATE_WINDOW

if TYPE_CHECKING:
    from ..core.client import Client
    from ..core.subjects import Subjects

log = logging.getLogger("agentlab")

# How far the server's clock may run ahead of this machine's when a task's stream timestamp
# is compared with the time this agent's connection was (re)made (see _stored_before_connect).
CLOCK_SKEW_ALLOWANCE = 2.0


def retry_delay(deliveries: int) -> float:
    """Back off between attempts: 0.5 s, 1 s, 2 s ... capped at 30 s."""
    return min(30.0, 0.5 * 2 ** (deliveries - 1))


class TaskRunner:
    """Runs the tasks of ``consumer`` on ``stream`` with ``handler``, once in effect.

    Made by the Agent at each start (on the bridge loop) with everything it uses:
    ``ledger`` records each effect, ``stats`` is the agent's counters (counted here),
    ``new_context(task, msg)`` makes the handler's TaskContext. Up to ``max_ack_pending``
    tasks run at once; ``ledger_precheck`` as in :class:`agentlab.org.agent.Agent`.
    """

    def __init__(self, client: Client, subjects: Subjects, *, stream: str, consumer: str,
                 role: str, instance: str, handler: Callable[..., Any] | None,
                 ledger: TaskLedger, stats: Counter[str],
                 new_context: Callable[[Task, Message], TaskContext], max_deliver: int,
                 max_ack_pending: int, ledger_precheck: bool | Literal["auto"]):
        self.client, self.subjects = client, subjects
        self.stream, self.role, self.instance = stream, role, instance
        self.handler, self.ledger, self.stats = handler, ledger, stats
        self.max_deliver, self.max_ack_pending = max_deliver, max_ack_pending
        self.ledger_precheck = ledger_precheck
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
            try:
                await asyncio.wait_for(self._stop_requested.wait(), 0.5)
            except asyncio.TimeoutError:
                pass
            if self.working and self.client.is_closed:
                log.warning("agent %s: its connection was closed; the agent stops",
                            self.instance)
                self.working = False
        await self.feed.astop()  # no new requests; a task already on its way is taken
        if self._in_hand:  # stop(): finish what was taken
            await asyncio.wait(self._in_hand)

    def _room(self) -> int:
        return self.max_ack_pending - len(self._in_hand)

    def _take(self, raw: Any) -> None:
        """A task arrived from the feed: start it now."""
        job = asyncio.ensure_future(self._process(Message.from_nats(raw, self.client)))
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
        """Was this task stored before the connection's latest (re)connect?

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
        return msg.info.timestamp.timestamp() < self._connected_since + CLOCK_SKEW_ALLOWANCE

    async def _run_task(self, task: Task, msg: Message) -> None:
        if msg.info.redelivered:
            self.stats["redeliveries"] += 1
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
        if self._should_check_ledger(task, msg):
            self.stats["ledger_prechecks"] += 1
            done = await self.ledger.aget(task.org, task.id)
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
            recorded = await self.ledger.arecord(record, data)
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
