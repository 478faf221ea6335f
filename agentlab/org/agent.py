"""An agent: a role in an org with a durable task queue, an inbox and a heartbeat.

    cto = Agent(lab.connect("cto"), role="cto", org="acme", handler=my_handler).start()
    ceo.delegate("cto", "Design the API")      # waits in AGENT_TASKS until the CTO takes it
    cto.stop()                                 # scale to zero: tasks keep waiting, durably

The handler is any callable ``handler(task, ctx)``, sync (run in a worker thread: an LLM
call is fine) or async (run on the loop). What it returns is the task's result. Up to
``max_ack_pending`` tasks run at once. The result is recorded in the TASK_LEDGER bucket by
org and task id before the ack, so a task redelivered after a crash is acked, not run again;
the server announces each record on ``{root}.org.{org}.tasks.completed`` (org/ledger.py).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any, Literal

from ..core.client import Client
from ..core.pull import ContinuousPull
from ..core.received import Message
from ..core.specs import ConsumerSpec
from ..core.subjects import Subjects, validate_token
from .context import TaskContext
from .ledger import LEDGER_BUCKET, TaskLedger  # noqa: F401  (LEDGER_BUCKET: re-exported)
from .models import Heartbeat, Task
from .workloop import (  # noqa: F401  (re-exported: the names users import from here)
    CLOCK_SKEW_ALLOWANCE,
    TASK_STREAM,
    TaskLoop,
    _call,
    retry_delay,
)

log = logging.getLogger("agentlab")

TaskHandler = Callable[[Task, TaskContext], Any]
_instances = itertools.count(1)


class Agent(TaskLoop):
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
        self._ledger: TaskLedger | None = None
        self._inbox: Any = None
        self._feed: ContinuousPull | None = None
        self._in_hand: set[asyncio.Future] = set()
        self._stop_requested = asyncio.Event()
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
        self._ledger = await TaskLedger.adeclare(self.client, self.subjects)
        self._reconnects_seen, self._connected_since = 0, self.client.connected_at
        self._feed = ContinuousPull(self.client, TASK_STREAM, self.role, self._take,
                                    self._room, name=f"agent {self.instance}")
        self._stop_requested = asyncio.Event()
        # reply_with_result: the subscription answers requests with what _on_inbox returns,
        # and with an {"error": ...} reply if on_request raises (instead of a silent timeout).
        self._inbox = await self.client.asubscribe(self.subjects.inbox(self.role),
                                                   self._on_inbox, queue=self.role,
                                                   reply_with_result=True)
        self._running = True
        try:
            await self._feed.start()
        except BaseException:  # denied, or the connection went: leave nothing half-started
            self._running = False
            await self._unsubscribe(*self._take_subscriptions())
            raise
        self._consumer = asyncio.ensure_future(self._consume(self._feed))
        self._heart = asyncio.ensure_future(self._beat())
        self._tasks = [self._consumer, self._heart]
        log.info("agent %s (%s) started", self.instance, self.org)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Finish the tasks in hand, then stop. Unstarted tasks wait in the stream.

        Takes as long as the tasks in hand need (with any task the server had already sent
        on its way); after ``timeout`` seconds those are abandoned as by kill() (redelivered
        after ack wait).
        """
        self._bridge.run(self._stop(timeout), operation="stop")

    async def astop(self, timeout: float = 5.0) -> None:
        await self._bridge.arun(self._stop(timeout))

    async def _stop(self, timeout: float) -> None:
        self._running = False
        self._stop_requested.set()
        if self._heart is not None:
            self._heart.cancel()  # do not wait out a heartbeat_interval sleep
        if self._consumer is not None:
            # The work loop ends once the server has dropped its pull requests and the
            # tasks in hand are done.
            _, pending = await asyncio.wait([self._consumer], timeout=timeout)
            if pending:  # out of time: abandon the tasks in hand, as kill() does
                self._epoch += 1
                for task in pending:
                    task.cancel()
        self._tasks, self._consumer, self._heart = [], None, None
        await self._unsubscribe(*self._take_subscriptions())
        try:  # the last beat says "leaving": the health monitor marks it down at once
            self.client.publish(self.subjects.heartbeat(self.role), Heartbeat(
                role=self.role, org=self.org, instance=self.instance, leaving=True,
                processed=self.stats["processed"], failed=self.stats["failed"],
                in_flight=self._in_flight))
        except Exception as error:  # closed connection: the silence says it instead
            log.info("agent %s: last heartbeat not sent (%s)", self.instance, error)

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
        taken = self._inbox, self._feed
        self._inbox = self._feed = None
        return taken

    async def _unsubscribe(self, inbox: Any, feed: ContinuousPull | None) -> None:
        if feed is not None:
            feed.abandon()  # after stop() a no-op; after kill() it drops what is on its way
        if inbox is not None:
            await inbox.aunsubscribe()

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
