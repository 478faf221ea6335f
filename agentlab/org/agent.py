"""An agent: a role in an org with a durable task queue, an inbox and a heartbeat.

    cto = Agent(lab.connect("cto"), role="cto", org="acme", handler=my_handler).start()
    ceo.delegate("cto", "Design the API")      # waits in AGENT_TASKS until the CTO takes it
    cto.stop()                                 # scale to zero: tasks keep waiting, durably

The handler is any callable ``handler(task, ctx)``, sync (run in a worker thread: an LLM
call is fine) or async (run on the loop). What it returns is the task's result. Up to
``max_ack_pending`` tasks run at once. The result is recorded in the TASK_LEDGER bucket by
task id before the ack, so a task redelivered after a crash is acked, not run again.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Literal

import nats.errors

from ..client import Client
from ..errors import MessageDecodeError
from ..messages import decode_model, to_bytes, utc_now
from ..received import Message, nak_unless_settled
from ..specs import ConsumerSpec
from ..stores import KeyValueBucket
from ..subjects import Subjects, validate_token
from .context import TaskContext
from .deadletters import dead_letter_now, remember_failure
from .models import Heartbeat, Task, TaskCompleted
from .streams import TASK_DUPLICATE_WINDOW as DUPLICATE_WINDOW

log = logging.getLogger("agentlab")

TaskHandler = Callable[[Task, TaskContext], Any]
TASK_STREAM = "AGENT_TASKS"
LEDGER_BUCKET = "TASK_LEDGER"
# How far the server's clock may run ahead of this machine's when a task's stream timestamp
# is compared with the time this agent's connection was (re)made (see _stored_before_connect).
CLOCK_SKEW_ALLOWANCE = 2.0
_instances = itertools.count(1)


def retry_delay(deliveries: int) -> float:
    """Back off between attempts: 0.5 s, 1 s, 2 s ... capped at 30 s."""
    return min(30.0, 0.5 * 2 ** (deliveries - 1))


class Agent:
    """One instance of a role. Several instances of a role share its durable consumer.

    ``ack_wait`` is how long a task may go without an ack (or ``ctx.in_progress()``)
    before it is delivered again; ``max_deliver`` attempts in all, then it is a dead
    letter. ``ledger_precheck`` says when to look the task up in the ledger before
    running it: "auto" (default) only when a delivery could be a repeat, True always,
    False only on redeliveries (see ``_run_task``).
    """

    def __init__(self, client: Client, role: str, org: str = "acme",
                 handler: TaskHandler | None = None, *, subjects: Subjects | None = None,
                 ack_wait: float = 300.0, max_deliver: int = 3, max_ack_pending: int = 5,
                 heartbeat_interval: float = 5.0, instance: str | None = None,
                 on_request: Callable[[Message], Any] | None = None,
                 ledger_precheck: bool | Literal["auto"] = "auto"):
        self.client = client
        self.role = validate_token(role, "role")
        self.org = validate_token(org, "org")
        self.handler = handler
        self.subjects = subjects or Subjects()
        self.ack_wait = ack_wait
        self.max_deliver = max_deliver
        self.max_ack_pending = max_ack_pending
        self.heartbeat_interval = heartbeat_interval
        self.instance = instance or f"{role}-{next(_instances)}"
        self.on_request = on_request
        self.ledger_precheck = ledger_precheck
        self.stats: Counter[str] = Counter()
        self._bridge = client._bridge
        self._tasks: list[asyncio.Future] = []
        self._consumer: asyncio.Future | None = None
        self._heart: asyncio.Future | None = None
        self._running = False
        self._epoch = 0  # bumped by kill(): contexts of an older epoch are dead
        self._in_flight = 0
        self._ledger: KeyValueBucket | None = None
        self._inbox: Any = None
        self._psub: Any = None
        self._reconnects_seen = 0
        self._connected_since = 0.0

    # -- lifecycle -------------------------------------------------------------------
    @property
    def consumer_spec(self) -> ConsumerSpec:
        return ConsumerSpec(self.role, filter_subject=self.subjects.tasks(self.role),
                            ack_wait=self.ack_wait, max_deliver=self.max_deliver,
                            max_ack_pending=self.max_ack_pending, deliver="all",
                            description=f"Tasks for the {self.role} role")

    def start(self) -> Agent:
        """Attach to the role's durable consumer and start working. Returns self."""
        return self._bridge.run(self.astart(), operation="start")

    async def astart(self) -> Agent:
        return await self._bridge.arun(self._start())

    async def _start(self) -> Agent:
        if self._running:
            return self
        await self.client.js.adeclare_consumer(TASK_STREAM, self.consumer_spec)
        self._ledger = await KeyValueBucket.adeclare(self.client, LEDGER_BUCKET, history=1)
        self._reconnects_seen, self._connected_since = 0, self.client.connected_at
        self._psub = await self.client.nc.jetstream().pull_subscribe_bind(
            durable=self.role, stream=TASK_STREAM)
        # reply_with_result: the subscription answers requests with what _on_inbox returns,
        # and with an {"error": ...} reply if on_request raises (instead of a silent timeout).
        self._inbox = await self.client.asubscribe(self.subjects.inbox(self.role),
                                                   self._on_inbox, queue=self.role,
                                                   reply_with_result=True)
        self._running = True
        self._consumer = asyncio.ensure_future(self._consume(self._psub))
        self._heart = asyncio.ensure_future(self._beat())
        self._tasks = [self._consumer, self._heart]
        log.info("agent %s (%s) started", self.instance, self.org)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Finish the tasks in hand, then stop. Unstarted tasks wait in the stream.

        Takes at most one fetch poll (0.5 s) plus the time the tasks in hand need; after
        ``timeout`` seconds those are abandoned as by kill() (redelivered after ack wait).
        """
        self._bridge.run(self._stop(timeout), operation="stop")

    async def astop(self, timeout: float = 5.0) -> None:
        await self._bridge.arun(self._stop(timeout))

    async def _stop(self, timeout: float) -> None:
        self._running = False
        if self._heart is not None:
            self._heart.cancel()  # do not wait out a heartbeat_interval sleep
        if self._consumer is not None:
            # The work loop ends after its current fetch (<= 0.5 s) and the tasks in hand.
            _, pending = await asyncio.wait([self._consumer], timeout=timeout)
            if pending:  # out of time: abandon the tasks in hand, as kill() does
                self._epoch += 1
                for task in pending:
                    task.cancel()
        self._tasks, self._consumer, self._heart = [], None, None
        await self._unsubscribe(*self._take_subscriptions())

    def kill(self) -> None:
        """Stop at once, mid-task, as a crash would: the task in hand is redelivered later.

        Nothing of the task in hand is acked or recorded; a sync handler still running in
        its worker thread finishes there, but its ``ctx`` goes dead (``ctx.cancelled``) and
        its result is dropped. The inbox stops answering at once.
        """
        self._running = False
        self._epoch += 1
        tasks, self._tasks, self._consumer, self._heart = self._tasks, [], None, None
        subscriptions = self._take_subscriptions()

        def crash() -> None:
            for task in tasks:
                task.cancel()
            asyncio.ensure_future(self._unsubscribe(*subscriptions))

        self._bridge.call_soon(crash)

    def _take_subscriptions(self) -> tuple[Any, Any]:
        taken = self._inbox, self._psub
        self._inbox = self._psub = None
        return taken

    async def _unsubscribe(self, inbox: Any, psub: Any) -> None:
        if inbox is not None:
            await inbox.aunsubscribe()
        if psub is not None:
            try:
                await psub.unsubscribe()
            except Exception:  # its connection is closed already
                pass

    @property
    def running(self) -> bool:
        return self._running

    # -- delegating -------------------------------------------------------------------
    def delegate(self, role: str, title: str, details: dict[str, Any] | None = None, *,
                 task_id: str | None = None, caused_by: Task | None = None) -> Task:
        """Publish a task for ``role`` into AGENT_TASKS (deduplicated by its id)."""
        task = self._new_task(role, title, details, task_id, caused_by)
        self.client.js.publish(self.subjects.tasks(role), task, msg_id=task.id)
        # A resent task is announced again, but AGENT_EVENTS keeps one "created" per id.
        self.client.publish(self.subjects.tasks_created(self.org), task,
                            headers={"Nats-Msg-Id": f"{task.id}.created"})
        return task

    async def adelegate(self, role: str, title: str, details: dict[str, Any] | None = None, *,
                        task_id: str | None = None, caused_by: Task | None = None) -> Task:
        task = self._new_task(role, title, details, task_id, caused_by)
        await self.client.js.apublish(self.subjects.tasks(role), task, msg_id=task.id)
        await self.client.apublish(self.subjects.tasks_created(self.org), task,
                                   headers={"Nats-Msg-Id": f"{task.id}.created"})
        return task

    def _new_task(self, role: str, title: str, details: dict[str, Any] | None,
                  task_id: str | None, caused_by: Task | None) -> Task:
        extra: dict[str, Any] = {"id": task_id} if task_id else {}
        if caused_by is not None:
            extra["correlation_id"] = caused_by.correlation_id or caused_by.id
            extra["causation_id"] = caused_by.id
        return Task(org=self.org, role=validate_token(role, "role"), title=title,
                    details=details or {}, requested_by=self.role, **extra)

    # -- the work loop ------------------------------------------------------------------
    async def _consume(self, psub: Any) -> None:
        # Up to max_ack_pending tasks run at once, as the seed's consumer config intends.
        # A batch handled one by one would leave its last tasks waiting in this process
        # while their ack_wait ran out: redelivered (to a replica: run twice) meanwhile.
        # One message per pull: a pull for several returns only when all came or it
        # expired, so its first tasks would sit idle, holding ack-pending slots that
        # the replicas sharing the consumer need (3 replicas: 60 tasks took 4 s, not 0.2).
        # But when a delivery says more tasks are waiting (num_pending), ask for that many:
        # nats-py first takes what the server already has and returns at once, so a
        # backlog costs one round trip per batch instead of one per task.
        in_hand: set[asyncio.Future] = set()
        waiting = 0
        try:
            while self._running:
                free = self.max_ack_pending - len(in_hand)
                if free <= 0:
                    await asyncio.wait(in_hand, return_when=asyncio.FIRST_COMPLETED)
                    continue
                want = min(free, 1 + waiting)
                try:
                    batch = await psub.fetch(want, timeout=0.5 if want == 1 else 0.05)
                except asyncio.TimeoutError:
                    # nats.errors.TimeoutError, or the plain one nats-py raises at the
                    # deadline (on 3.11+ an OSError: it must be caught before OSError).
                    waiting = 0
                    continue
                except (nats.errors.Error, OSError) as error:
                    if not self._running:
                        break
                    if self.client.is_closed:
                        log.warning("agent %s: its connection was closed; the agent stops",
                                    self.instance)
                        self._running = False
                        break
                    log.warning("agent %s: fetch failed (%s); retrying", self.instance, error)
                    await asyncio.sleep(0.25)
                    continue
                waiting = 0
                for raw in batch:
                    msg = Message.from_nats(raw, self.client)
                    job = asyncio.ensure_future(self._process(msg))
                    in_hand.add(job)
                    job.add_done_callback(in_hand.discard)
                    waiting = _pending_after(msg)
            if in_hand:  # stop(): finish what was taken
                await asyncio.wait(in_hand)
        except asyncio.CancelledError:  # kill(), or stop() ran out of time
            for job in in_hand:
                job.cancel()
            raise

    async def _process(self, msg: Message) -> None:
        self._in_flight += 1
        try:
            try:
                task = decode_model(msg.data, Task, msg.subject)
            except MessageDecodeError as error:  # not JSON, or not a Task: no retry helps
                await self._poison(msg, f"not a valid Task: {error.reason}")
                return
            await self._run_task(task, msg)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            # Not the handler (its errors are handled in _run_task): the ledger, the DLQ or
            # the connection failed. Retry later rather than let the work loop die.
            self.stats["errors"] += 1
            text = f"{type(error).__name__}: {error}"
            log.warning("agent %s: could not process %s#%s: %s", self.instance, TASK_STREAM,
                        _seq(msg), text)
            nak_unless_settled(msg, retry_delay(_deliveries(msg)))
            try:  # for the dead letter, should it come to that
                await remember_failure(self.client, msg, text)
            except Exception:
                pass
        finally:
            self._in_flight -= 1

    async def _poison(self, msg: Message, reason: str) -> None:
        # Dead-letter first, term second: if the DLQ is unreachable the error propagates,
        # the message is nak'ed and stays in the work queue instead of being lost.
        await dead_letter_now(self.client, self.subjects, msg, reason)
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
        assert self._ledger is not None
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
            done = await self._ledger.aget(task.id)
        if done is not None:
            # The effect happened before (we crashed before the ack): acknowledge only.
            self.stats["duplicates_suppressed"] += 1
            self.stats["acked_from_ledger"] += 1
            await self._complete(task, msg, done.get("result", {}), 0.0, announce=True)
            return
        ctx = TaskContext(self, task, msg)
        started = time.perf_counter()
        try:
            result = await self._call_handler(task, ctx)
            result = result if isinstance(result, dict) else {"value": result}
            record = to_bytes({"result": result, "instance": self.instance})
        except Exception as error:
            self.stats["failed"] += 1
            log.warning("agent %s: task %s (%r) failed on delivery %d: %s", self.instance,
                        task.id, task.title, msg.info.num_delivered, error)
            await remember_failure(self.client, msg, f"{type(error).__name__}: {error}")
            msg.nak(delay=retry_delay(msg.info.num_delivered)
                    if msg.info.num_delivered < self.max_deliver else None)
            return
        if not await self._ledger.acreate(task.id, record):
            # Recorded already: by a replica that ran it at the same time, or by an earlier
            # run of the same task id (a resend after the duplicate window). Announce the
            # recorded result, not this one.
            self.stats["duplicates_suppressed"] += 1
            done = await self._ledger.aget(task.id) or {}
            result = done.get("result", result)
        else:
            self.stats["processed"] += 1
        await self._complete(task, msg, result, (time.perf_counter() - started) * 1e3)

    async def _call_handler(self, task: Task, ctx: TaskContext) -> Any:
        if self.handler is None:
            return {"ack": task.title}
        return await _call(self._bridge, self.handler, task, ctx)

    async def _complete(self, task: Task, msg: Message, result: dict[str, Any],
                        duration_ms: float, announce: bool = True) -> None:
        event = TaskCompleted(task_id=task.id, org=task.org, role=self.role,
                              instance=self.instance, title=task.title, result=result,
                              deliveries=msg.info.num_delivered, duration_ms=duration_ms,
                              correlation_id=task.correlation_id or task.id)
        msg.ack()
        if announce:
            # Same Nats-Msg-Id on a repeat: AGENT_EVENTS keeps one completion per task.
            self.client.publish(self.subjects.tasks_completed(task.org), event,
                                headers={"Nats-Msg-Id": f"{task.id}.completed"})

    # -- inbox and heartbeat -------------------------------------------------------------
    async def _on_inbox(self, msg: Message) -> Any:
        """Answer a request (the subscription replies with what this returns)."""
        if not msg.reply:
            return None  # progress notes and other one-way messages: not for the agent itself
        if self.on_request is None:
            return {"role": self.role, "instance": self.instance, "org": self.org,
                    "status": "ok", "processed": self.stats["processed"],
                    "in_flight": self._in_flight}
        return await _call(self._bridge, self.on_request, msg)

    async def _beat(self) -> None:
        while self._running:
            beat = Heartbeat(role=self.role, org=self.org, instance=self.instance,
                             processed=self.stats["processed"], failed=self.stats["failed"],
                             in_flight=self._in_flight)
            try:
                self.client.publish(self.subjects.heartbeat(self.role), beat)
            except Exception as error:  # closed connection: no beat, which is the signal
                log.info("agent %s: heartbeat not sent (%s)", self.instance, error)
            await asyncio.sleep(self.heartbeat_interval)

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        return (f"<Agent {self.instance} role={self.role} org={self.org} {state} "
                f"processed={self.stats['processed']}>")


async def _call(bridge: Any, handler: Callable[..., Any], *args: Any) -> Any:
    """Call any sync or async callable: coroutine functions on the loop, others in a thread."""
    outcome = bridge.run_handler(handler, *args)
    result = await outcome if inspect.isawaitable(outcome) else outcome
    if inspect.isawaitable(result):
        # A plain callable that returned a coroutine (a lambda or partial around an async
        # function): it ran in a worker thread, its coroutine runs here, on the loop.
        result = await result
    return result


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


def _pending_after(msg: Message) -> int:
    """How many more tasks the server said were waiting when it delivered ``msg``."""
    try:
        return msg.info.num_pending
    except ValueError:
        return 0
