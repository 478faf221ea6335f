"""An agent: a role in an org with a durable task queue, an inbox and a heartbeat.

    cto = Agent(lab.connect("cto"), role="cto", org="acme", handler=my_handler).start()
    ceo.delegate("cto", "Design the API")      # waits in AGENT_TASKS until the CTO takes it
    cto.stop()                                 # scale to zero: tasks keep waiting, durably

The handler is any callable ``handler(task, ctx)``, sync (run in a worker thread: an LLM
call is fine) or async (run on the loop). What it returns is the task's result. Up to
``max_ack_pending`` tasks run at once. The result is recorded in the TASK_LEDGER bucket by
org and task id before the ack, so a task redelivered after a crash is acked, not run again;
the server announces each record on ``{root}.org.{org}.tasks.completed`` (org/ledger.py).
A running task's instance holds the task's lease in TASK_LEASES (org/leases.py; unless
``lease=False``), so a task handed out again meanwhile waits for that run instead of
running next to it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any, ClassVar, Literal

from ..core.client import Client
from ..core.jetstream import STORAGE_NOT_UPDATABLE
from ..core.lifecycle import Service
from ..core.received import Message
from ..core.specs import ConsumerSpec
from ..core.subjects import Subjects, validate_token
from ..errors import JetStreamError
from ..telemetry import untraced
from .context import TaskContext
from .delegation import apublish_task, publish_task
from .leases import TaskLeases, check_lease_ttl, default_lease_ttl
from .ledger import LEDGER_BUCKET, TaskLedger  # noqa: F401  (LEDGER_BUCKET: re-exported)
from .models import BEATS_PER_MESSAGE, AgentStatus, Heartbeat, Heartbeats, Task
from .services import MicroService, aderegister, aregister_agent
from .streams import TASK_STREAM
from .toolclient import ToolClient
from .workloop import (  # noqa: F401  (re-exported: the names users import from here)
    CLOCK_SKEW_ALLOWANCE,
    TaskRunner,
    retry_delay,
)

log = logging.getLogger("agentlab")

TaskHandler = Callable[[Task, TaskContext], Any]
_instances = itertools.count(1)


def task_consumer_spec(role: str, subjects: Subjects, *, ack_wait: float = 300.0,
                       max_deliver: int = 3, max_ack_pending: int = 5,
                       memory_state: bool = True) -> ConsumerSpec:
    """The durable consumer that every worker of ``role`` shares: its instances, and anyone
    working its queue by hand (:class:`agentlab.org.desk.TaskDesk`)."""
    return ConsumerSpec(role, filter_subject=subjects.tasks(role), ack_wait=ack_wait,
                        max_deliver=max_deliver, max_ack_pending=max_ack_pending,
                        deliver="all", description=f"Tasks for the {role} role",
                        memory_state=memory_state)


class Agent(Service):
    """One instance of a role. Several instances of a role share its durable consumer.

    ``ack_wait`` is how long a task may go without an ack (or ``ctx.in_progress()``)
    before it is delivered again; ``max_deliver`` attempts in all, then it is a dead
    letter. ``ledger_precheck`` says when to look the task up in the ledger before
    running it: "auto" (default) only when a delivery could be a repeat, True always,
    False only on redeliveries (see ``TaskRunner._run_task``).

    ``lease`` (on by default): no handler runs twice while its first run lives. Before a
    delivery runs, its instance claims the task's lease (``TASK_LEASES``, same replicas as
    the ledger) and renews it every third of ``lease_ttl`` while the run lasts. The claim is
    one replicated write before each run, a JetStream round trip on every delegation's path
    (measured: delegation p50 1.64x raw nats-py with it, 1.11x without): ``lease=False``
    where a second run next to the first would do no harm and that trip counts. A delivery of a
    task whose lease another live run holds waits (kept alive: waiting adds no attempt
    toward ``max_deliver``) until that run's record answers it or the lease expires. A run
    quiet for longer than ``ack_wait`` (no return, no ``ctx.in_progress()``) counts as hung:
    its redeliveries are nak'ed, not run, and end as a dead letter. ``lease_ttl`` (whole seconds;
    default: ``ack_wait`` rounded up) is how long an instance may go silent before its task
    counts as abandoned, as ``ack_wait`` is for a silent delivery: make it longer than any
    outage a live instance should ride out (a server restart, an election), knowing that a
    task of an instance that really died waits up to that long.

    ``consumer_state`` says where the server keeps the role consumer's delivery state:
    "memory" or "file" (JetStream's usual). By default (None) a consumer the agent makes
    keeps it in memory, and one that exists stays as it is. On file, each delivery costs
    the server more the more consumers it serves in turn: delegating round-robin over 100
    roles, p50 measured 1.57x that of one role (benchmarks/scaling.py; nats-server alone:
    benchmarks/consumers.py); in memory, 1.09x. The tasks themselves stay on file in the
    stream either way. In memory, a restart of a lone server forgets the consumer (each
    agent makes it again when its connection comes back) and what was out, which is handed
    out again as first deliveries: the ledger and the leases keep that to one effect, and
    one run at a time, but each restart gives a failing task ``max_deliver`` attempts
    anew. On a cluster the consumer's replicas keep its state through the loss of a node.

    ``start()`` attaches to the role's durable consumer and starts working (the tasks run
    in a :class:`~agentlab.org.workloop.TaskRunner` made at each start). A running agent is
    the NATS micro service ``agentlab-agent-<role>`` (``$SRV.PING/INFO/STATS``, ``status``
    and ``delegate`` endpoints; see :mod:`agentlab.org.services`) unless
    ``discoverable=False``.
    """

    def __init__(self, client: Client, role: str, org: str = "acme",
                 handler: TaskHandler | None = None, *, subjects: Subjects | None = None,
                 ack_wait: float = 300.0, max_deliver: int = 3, max_ack_pending: int = 5,
                 heartbeat_interval: float = 5.0, instance: str | None = None,
                 on_request: Callable[[Message], Any] | None = None,
                 ledger_precheck: bool | Literal["auto"] = "auto", discoverable: bool = True,
                 lease: bool = True, lease_ttl: float | None = None,
                 consumer_state: Literal["file", "memory"] | None = None):
        self.client = client
        self.role = validate_token(role, "role")
        self.org = validate_token(org, "org")
        self._runner: TaskRunner | None = None
        self.handler = handler
        self.subjects = subjects or Subjects()
        self.subjects.org_events(self.org)  # 'system' is reserved: refused now, not mid-task
        self.ack_wait = ack_wait
        self.max_deliver = max_deliver
        self.max_ack_pending = max_ack_pending
        self.heartbeat_interval = heartbeat_interval
        self.instance = instance or f"{role}-{next(_instances)}"
        self.on_request = on_request
        self.ledger_precheck = ledger_precheck
        self.discoverable = discoverable
        self.lease = lease
        if consumer_state not in (None, "file", "memory"):
            raise ValueError(f"consumer_state={consumer_state!r}: pass 'memory', 'file', or "
                             "None (the default: memory for a consumer this agent makes, an "
                             "existing one as it is).")
        self._state_asked = consumer_state is not None
        # Where the role consumer keeps its state: an existing consumer's, once started.
        self.consumer_state: Literal["file", "memory"] = consumer_state or "memory"
        # Refused now, not at the first task.
        self.lease_ttl = (default_lease_ttl(ack_wait) if lease_ttl is None
                          else check_lease_ttl(lease_ttl))
        self.stats: Counter[str] = Counter()
        self._bridge = client._bridge
        self._epoch = 0  # bumped by kill(): contexts of an older epoch are dead
        self._heart: _Heartbeats | None = None
        self._inbox: Any = None
        self._micro: MicroService | None = None
        self._tools: ToolClient | None = None
        self._tools_lock = threading.Lock()  # sync handlers ask for it from their threads

    @property
    def handler(self) -> TaskHandler | None:
        return self._handler

    @handler.setter
    def handler(self, handler: TaskHandler | None) -> None:
        # A running agent's next task is run by the new handler.
        self._handler = handler
        if self._runner is not None:
            self._runner.handler = handler

    # -- lifecycle -------------------------------------------------------------------
    @property
    def consumer_spec(self) -> ConsumerSpec:
        return task_consumer_spec(self.role, self.subjects, ack_wait=self.ack_wait,
                                  max_deliver=self.max_deliver,
                                  max_ack_pending=self.max_ack_pending,
                                  memory_state=self.consumer_state == "memory")

    async def _declare_consumer(self) -> None:
        try:
            await self.client.js.adeclare_consumer(TASK_STREAM, self.consumer_spec)
        except JetStreamError as error:
            if error.err_code != STORAGE_NOT_UPDATABLE:
                raise
            if not self._state_asked:  # the default follows the consumer that is there
                info = await self.client.js.adeclare_consumer(
                    TASK_STREAM, replace(self.consumer_spec, memory_state=None))
                self.consumer_state = "memory" if info.config.mem_storage else "file"
                log.info("agent %s: the '%s' consumer keeps its state %s; so does this agent",
                         self.instance, self.role,
                         "in memory" if self.consumer_state == "memory" else "on file")
                return
            raise JetStreamError(
                f"The '{self.role}' role's consumer on {TASK_STREAM} keeps its state "
                f"{'on file' if self.consumer_state == 'memory' else 'in memory'}, and agent "
                f"{self.instance} asks for consumer_state={self.consumer_state!r}: the "
                "server cannot change it. Start every instance of a role (and its TaskDesk, "
                "autoscaler) with one consumer_state, or delete the consumer first "
                f"(`nats consumer rm {TASK_STREAM} {self.role}`: its tasks stay in the "
                "stream).", err_code=error.err_code) from None

    async def _astart_service(self) -> None:
        await self._declare_consumer()
        ledger = await TaskLedger.adeclare(self.client, self.subjects)
        leases = await TaskLeases.adeclare(self.client) if self.lease else None
        # reply_with_result: the subscription answers requests with what _on_inbox returns,
        # and with an {"error": ...} reply if on_request raises (instead of a silent timeout).
        self._inbox = await self.client.asubscribe(self.subjects.inbox(self.role),
                                                   self._on_inbox, queue=self.role,
                                                   reply_with_result=True)
        self._runner = TaskRunner(
            self.client, self.subjects, stream=TASK_STREAM, consumer=self.role,
            role=self.role, instance=self.instance, handler=self.handler, ledger=ledger,
            stats=self.stats, new_context=lambda task, msg: TaskContext(self, task, msg),
            max_deliver=self.max_deliver, max_ack_pending=self.max_ack_pending,
            ledger_precheck=self.ledger_precheck, leases=leases, lease_ttl=self.lease_ttl,
            ack_wait=self.ack_wait, redeclare=self._declare_consumer
            if self.consumer_state == "memory" else None)
        # Denied, or the connection went: this raises, and the failed start's stop
        # unsubscribes the inbox.
        await self._runner.astart()
        if self.discoverable:  # best effort: a refused $SRV leaves it working, unlisted
            self._micro = await aregister_agent(self)
        self._heart = _Heartbeats.join(self, self._runner)  # the first beat goes out now
        log.info("agent %s (%s) started", self.instance, self.org)

    def stop(self, timeout: float = 5.0) -> None:
        """Finish the tasks in hand, then stop. Unstarted tasks wait in the stream.

        Takes as long as the tasks in hand need (with any task the server had already sent
        on its way); after ``timeout`` seconds those are abandoned as by kill() (redelivered
        after ack wait).
        """
        self._stop_blocking(timeout)

    async def astop(self, timeout: float = 5.0) -> None:
        await self._bridge.arun(self._stop_service(timeout))

    async def _astop_service(self, timeout: float = 5.0) -> None:
        runner, heart, self._heart = self._runner, self._heart, None
        micro, self._micro = self._micro, None
        # Unlisted first: nobody should find, or delegate through, an agent that is leaving
        # (a task delegated meanwhile would still wait durably for the role).
        await aderegister(micro, f"agent {self.instance}")
        if heart is not None:
            heart.leave(self)
        # The runner ends once the server has dropped its pull requests and the tasks in
        # hand are done.
        if runner is not None and not await runner.astop(timeout):
            self._epoch += 1  # out of time: abandon the tasks in hand, as kill() does
            runner.abandon()
        self._runner = None
        tools, self._tools = self._tools, None
        if tools is not None:  # after the tasks in hand: they may still be waiting on a tool
            await tools.aclose()
        inbox, self._inbox = self._inbox, None
        if inbox is not None:
            await inbox.aunsubscribe()
        if heart is None or runner is None:
            return  # a start that failed: it never beat, so it does not say "leaving"
        # The last beat says "leaving": the health monitor marks it down at once. (Closed
        # connection: the silence says it instead.)
        _publish_beats(self, [self._heartbeat(runner.in_flight, leaving=True)], heart.interval)

    def kill(self) -> None:
        """Stop at once, mid-task, as a crash would: the task in hand is redelivered later.

        Nothing of the task in hand is acked or recorded; a sync handler still running in
        its worker thread finishes there, but its ``ctx`` goes dead (``ctx.cancelled``) and
        its result is dropped. The inbox stops answering at once.
        """
        self._epoch += 1
        self._mark_stopped()
        runner, heart, inbox, micro = self._runner, self._heart, self._inbox, self._micro
        tools, self._tools = self._tools, None
        self._runner = self._heart = self._inbox = self._micro = None

        def crash() -> None:
            if heart is not None:
                heart.leave(self)
            if runner is not None:
                runner.abandon()  # drops what the server has on its way, too
            if inbox is not None:
                asyncio.ensure_future(inbox.aunsubscribe())
            if micro is not None:  # a crashed process's connection would take it along
                asyncio.ensure_future(aderegister(micro, f"agent {self.instance}"))
            if tools is not None:
                asyncio.ensure_future(tools.aclose())

        self._bridge.call_soon(crash)

    @property
    def is_running(self) -> bool:
        # False too once the runner saw the connection closed: the agent stopped working.
        return super().is_running and self._runner is not None and self._runner.working

    @property
    def in_flight(self) -> int:
        """Tasks being processed right now."""
        return self._runner.in_flight if self._runner is not None else 0

    # -- delegating -------------------------------------------------------------------
    def delegate(self, role: str, title: str, details: dict[str, Any] | None = None, *,
                 task_id: str | None = None, caused_by: Task | None = None) -> Task:
        """Publish a task for ``role`` into AGENT_TASKS (deduplicated by its id)."""
        task = self._new_task(role, title, details, task_id, caused_by)
        publish_task(self.client, self.subjects, task)
        return task

    async def adelegate(self, role: str, title: str, details: dict[str, Any] | None = None, *,
                        task_id: str | None = None, caused_by: Task | None = None) -> Task:
        task = self._new_task(role, title, details, task_id, caused_by)
        await apublish_task(self.client, self.subjects, task)
        return task

    def _new_task(self, role: str, title: str, details: dict[str, Any] | None,
                  task_id: str | None, caused_by: Task | None) -> Task:
        extra: dict[str, Any] = {"id": task_id} if task_id else {}
        if caused_by is not None:
            extra["correlation_id"] = caused_by.correlation_id or caused_by.id
            extra["causation_id"] = caused_by.id
        return Task(org=self.org, role=validate_token(role, "role"), title=title,
                    details=details or {}, requested_by=self.role, **extra)

    def tool_client(self) -> ToolClient:
        """The ToolClient behind ``ctx.acall_tool``, made on first use and closed by stop().

        Its conversation is ``<org>-<instance>``: two organisations' "cto-1" on one server
        must not see each other's tool results.
        """
        with self._tools_lock:
            if self._tools is None:
                self._tools = ToolClient(self.client, f"{self.org}-{self.instance}",
                                         subjects=self.subjects)
            return self._tools

    # -- inbox and heartbeat -------------------------------------------------------------
    async def _on_inbox(self, msg: Message) -> Any:
        """Answer a request (the subscription replies with what this returns)."""
        if not msg.reply:
            return None  # progress notes and other one-way messages: not for the agent itself
        if self.on_request is None:
            return self.status()
        return await self._bridge.arun_handler(self.on_request, msg)

    def status(self) -> AgentStatus:
        """What the inbox answers a request with (unless ``on_request`` is set), and what
        the micro service's ``status`` endpoint always answers (org/services.py)."""
        return AgentStatus(role=self.role, instance=self.instance, org=self.org,
                           processed=self.stats["processed"], in_flight=self.in_flight)

    def _heartbeat(self, in_flight: int, leaving: bool = False) -> Heartbeat:
        return Heartbeat(role=self.role, org=self.org, instance=self.instance, leaving=leaving,
                         processed=self.stats["processed"], failed=self.stats["failed"],
                         in_flight=in_flight)

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return (f"<Agent {self.instance} role={self.role} org={self.org} {state} "
                f"processed={self.stats['processed']}>")


class _Heartbeats:
    """The running agents of one event loop that beat at one interval: one timer, and one
    message per interval for all of them (DESIGN decision 13).

    Every interval the beats go out together, as one ``Heartbeats`` on
    ``{root}.agents.heartbeats`` for each server, login and subject root (agents of one login
    have the same permissions, so any of them may publish the others' beats), on the
    connection of the first of them that is connected. An agent whose own connection is down
    is left out: its silence is the signal, as it would be alone. A hundred agents in a
    process are one sleeping task and one message per interval, not a hundred, and the health
    monitor still sees every instance. An agent's first beat goes out when it joins, its last
    (``leaving``) when it stops, each in a message of its own.
    """

    _loops: ClassVar[Any] = weakref.WeakKeyDictionary()  # loop -> {interval: _Heartbeats}

    def __init__(self, interval: float):
        self.interval = interval
        self.agents: dict[Agent, TaskRunner] = {}
        self._task: asyncio.Future | None = None
        self.messages = 0  # Heartbeats messages sent by the timer (for tests and curiosity)

    @classmethod
    def join(cls, agent: Agent, runner: TaskRunner) -> _Heartbeats:
        timers = cls._loops.setdefault(asyncio.get_running_loop(), {})
        timer = timers.get(agent.heartbeat_interval)
        if timer is None:
            timer = timers[agent.heartbeat_interval] = cls(agent.heartbeat_interval)
        timer.agents[agent] = runner
        _publish_beats(agent, [agent._heartbeat(runner.in_flight)], timer.interval)
        if timer._task is None or timer._task.done():
            with untraced():
                timer._task = asyncio.ensure_future(timer._run())
        return timer

    def leave(self, agent: Agent) -> None:
        self.agents.pop(agent, None)

    async def _run(self) -> None:
        while self.agents:
            await asyncio.sleep(self.interval)
            self.beat()

    def beat(self) -> None:
        """Send every agent's beat now, one message per login (see the class notes)."""
        logins: dict[tuple[str, str | None, str], tuple[Agent, list[Heartbeat]]] = {}
        for agent, runner in list(self.agents.items()):
            if not runner.working:  # its connection closed under it: no beat, the signal
                self.agents.pop(agent, None)
                continue
            client = agent.client
            if not client.nc.is_connected:  # reconnecting: silent until it is back
                continue
            key = (client.url, client.identity, agent.subjects.root)
            _, beats = logins.setdefault(key, (agent, []))
            beats.append(agent._heartbeat(runner.in_flight))
        for sender, beats in logins.values():
            for first in range(0, len(beats), BEATS_PER_MESSAGE):
                self.messages += _publish_beats(
                    sender, beats[first:first + BEATS_PER_MESSAGE], self.interval)


def _publish_beats(sender: Agent, beats: list[Heartbeat], interval: float) -> int:
    """One Heartbeats message with ``beats`` on ``sender``'s connection; 1 if it went out."""
    try:
        with untraced():  # a trace per beat would bury the goals' traces
            sender.client.publish(sender.subjects.heartbeats(),
                                  Heartbeats(beats=beats, interval=interval))
        return 1
    except Exception as error:  # closed connection: no beat, which is the signal
        log.info("agent %s: heartbeat of %d agent(s) not sent (%s)", sender.instance,
                 len(beats), error)
        return 0
