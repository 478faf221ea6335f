"""Working a role's queue by hand: take a task, hold it while you think, complete or fail it.

    desk = TaskDesk(lab.connect("desk"), org="acme", worker="claude").start()
    held = desk.take("cto", wait=10)          # the next task of the CTO's durable queue
    desk.complete(held.task.id, {"decision": "prototype first"})   # recorded, announced, acked
    desk.fail(other.task.id, "no budget", retry=False)             # a dead letter, at once

What an :class:`~agentlab.org.agent.Agent` does for a handler, a desk does for a person or an
LLM (the MCP hub's ``next_task`` / ``complete_task`` / ``fail_task``), on the same durable
consumer as the role's agents, so the queue, the ledger and the dead letters apply alike:

* a held task is kept alive (``+WPI``) every third of the consumer's ack wait, for up to
  ``hold`` seconds; after that, or once the desk's connection is gone, the task is delivered
  again after its ack wait, to whoever works the role next, and shows as a redelivery;
* ``complete`` records the result in TASK_LEDGER before the ack (the server announces it on
  ``tasks.completed``), once: a second completion of the same task changes nothing;
* ``fail(retry=True)`` naks with the agents' back-off; on the last attempt the DLQ office
  makes it a dead letter (``max_deliveries``); ``fail(retry=False)`` dead-letters it now
  (``given_up``) with the error.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from ..core.client import Client
from ..core.jetstream import PullConsumer
from ..core.lifecycle import Service
from ..core.received import Message
from ..core.subjects import Subjects, validate_token
from ..errors import AgentlabError, ConsumerNotFound, MessageDecodeError
from ..wire.messages import decode_model
from .agent import task_consumer_spec
from .deadletters import adead_letter_now, aremember_failure
from .ledger import TaskLedger, ledger_key_problem
from .models import Task, TaskCompleted
from .streams import TASK_STREAM
from .workloop import retry_delay

__all__ = ["HeldTask", "NotHeld", "TaskDesk"]

MAX_HOLD = 3600.0  # an hour: past that a forgotten task blocks its role's queue too long


class NotHeld(AgentlabError, LookupError):
    """The task is not held at this desk (never taken here, finished, or its hold ran out)."""

    def __init__(self, task_id: str, held: list[str]):
        self.task_id = task_id
        listed = ", ".join(held) if held else "none"
        super().__init__(
            f"Task '{task_id}' is not held at this desk (held now: {listed}). Take one with "
            "next_task / desk.take(role); a task whose hold ran out went back to its queue "
            "and is delivered again after its ack wait.")


@dataclass
class HeldTask:
    """A task taken from its role's queue and not finished yet."""

    task: Task
    message: Message = field(repr=False)
    role: str
    taken_at: float  # time.monotonic()
    hold_until: float
    ack_wait: float
    max_deliver: int

    @property
    def deliveries(self) -> int:
        return self.message.info.num_delivered

    def summary(self) -> dict[str, Any]:
        return {"id": self.task.id, "role": self.role, "title": self.task.title,
                "details": self.task.details, "requested_by": self.task.requested_by,
                "delivery": self.deliveries, "max_deliver": self.max_deliver,
                "redelivered": self.deliveries > 1,
                "held_for_s": round(max(0.0, self.hold_until - time.monotonic()), 1)}


class TaskDesk(Service):
    """Take, hold and finish the tasks of any role of ``org`` (see the module docstring).

    ``worker`` names whoever works at the desk: it is the ``instance`` of each completion.
    ``hold`` (seconds, at most an hour) is how long a taken task is kept alive unless
    ``take`` says otherwise. A role whose consumer does not exist yet gets the one its
    agents would make (``ack_wait``, ``max_deliver`` as given).
    """

    def __init__(self, client: Client, *, org: str = "acme", worker: str = "desk",
                 subjects: Subjects | None = None, hold: float = 600.0,
                 ack_wait: float = 30.0, max_deliver: int = 3):
        self.client = client
        self.org = validate_token(org, "org")
        self.worker = worker
        self.subjects = subjects or Subjects()
        self.hold = _check_hold(hold)
        self.ack_wait, self.max_deliver = ack_wait, max_deliver
        self.held: dict[str, HeldTask] = {}
        self._bridge = client._bridge
        self._pulls: dict[str, tuple[PullConsumer, float, int]] = {}
        self._ledger: TaskLedger | None = None
        self._keeper: asyncio.Future | None = None

    async def _astart_service(self) -> None:
        self._ledger = await TaskLedger.adeclare(self.client, self.subjects)
        self._keeper = asyncio.ensure_future(self._keep_alive())

    async def _astop_service(self) -> None:
        # Held tasks are left as they are: unacked, they come back after their ack wait,
        # as they would if this process had died.
        if self._keeper is not None:
            self._keeper.cancel()
        for pull, _, _ in self._pulls.values():
            try:
                await pull.aclose()
            except Exception:
                pass
        self._pulls.clear()
        self.held.clear()

    # -- taking ---------------------------------------------------------------------------
    def take(self, role: str, *, wait: float = 5.0, hold: float | None = None) -> HeldTask | None:
        """The next task of ``role``, held; None if none arrives within ``wait`` seconds."""
        return self._bridge.run(self.atake(role, wait=wait, hold=hold), operation="take a task")

    async def atake(self, role: str, *, wait: float = 5.0,
                    hold: float | None = None) -> HeldTask | None:
        validate_token(role, "role")
        if role in ("*", ">"):
            raise ValueError(f"role {role!r}: take from one role's queue, such as 'cto'")
        if not 0 < wait <= 300:
            raise ValueError(f"wait={wait!r}: give 0 < wait <= 300 seconds")
        hold = self.hold if hold is None else _check_hold(hold)
        return await self._bridge.arun(self._take(role, wait, hold))

    async def _take(self, role: str, wait: float, hold: float) -> HeldTask | None:
        pull, ack_wait, max_deliver = await self._pull(role)
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            for msg in await pull.afetch(1, timeout=max(0.05, left)):
                task = await self._accept(msg)
                if task is not None:
                    now = time.monotonic()
                    held = HeldTask(task, msg, role, now, now + hold, ack_wait, max_deliver)
                    self.held[task.id] = held
                    return held
        return None

    async def _pull(self, role: str) -> tuple[PullConsumer, float, int]:
        if role not in self._pulls:
            try:
                info = await self.client.js.aconsumer_info(TASK_STREAM, role)
            except ConsumerNotFound:
                spec = task_consumer_spec(role, self.subjects, ack_wait=self.ack_wait,
                                          max_deliver=self.max_deliver)
                info = await self.client.js.adeclare_consumer(TASK_STREAM, spec)
            pull = await self.client.js.apull(TASK_STREAM, info)
            self._pulls[role] = (pull, float(info.config.ack_wait or self.ack_wait),
                                 int(info.config.max_deliver or self.max_deliver))
        return self._pulls[role]

    async def _accept(self, msg: Message) -> Task | None:
        """The task to hand out, or None when this delivery is settled here already."""
        try:
            task = decode_model(msg.data, Task, msg.subject)
        except MessageDecodeError as error:
            reason = f"not a valid Task: {error.reason}"
        else:
            reason = ledger_key_problem(task.org, task.id) or ""
            if not reason:
                assert self._ledger is not None
                if await self._ledger.aget(task.org, task.id) is not None:
                    msg.ack()  # done before (its worker died before the ack): never twice
                    return None
                return task
        await adead_letter_now(self.client, self.subjects, msg, reason)
        msg.term(reason[:200])
        return None

    async def _keep_alive(self) -> None:
        while True:
            now = time.monotonic()
            for task_id, held in list(self.held.items()):
                if now >= held.hold_until:
                    del self.held[task_id]  # let it go: redelivered after its ack wait
                else:
                    held.message.in_progress()
            waits = [h.ack_wait for h in self.held.values()] or [self.ack_wait]
            await asyncio.sleep(max(0.2, min(waits) / 3))

    # -- finishing ------------------------------------------------------------------------
    def complete(self, task_id: str, result: dict[str, Any]) -> tuple[TaskCompleted, bool]:
        """Record ``result`` as the task's effect and ack it. Returns the record and whether
        this call made it (False: the task was recorded before; that record stands)."""
        return self._bridge.run(self.acomplete(task_id, result), operation="complete a task")

    async def acomplete(self, task_id: str,
                        result: dict[str, Any]) -> tuple[TaskCompleted, bool]:
        return await self._bridge.arun(self._complete(task_id, result))

    async def _complete(self, task_id: str,
                        result: dict[str, Any]) -> tuple[TaskCompleted, bool]:
        held = self._held(task_id)
        task = held.task
        record = TaskCompleted(
            task_id=task.id, org=task.org, role=held.role, instance=self.worker,
            title=task.title, result=result, deliveries=held.deliveries,
            duration_ms=(time.monotonic() - held.taken_at) * 1e3,
            correlation_id=task.correlation_id or task.id)
        assert self._ledger is not None
        recorded = await self._ledger.arecord(record)
        held.message.ack()
        del self.held[task_id]
        if recorded:
            return record, True
        earlier = await self._ledger.aget(task.org, task.id) or {}
        return TaskCompleted.model_validate(earlier) if earlier else record, False

    def fail(self, task_id: str, error: str, *, retry: bool = True) -> str:
        """Give the task back with ``error``: to be retried later, or as a dead letter now.
        Returns what happens next, in words."""
        return self._bridge.run(self.afail(task_id, error, retry=retry), operation="fail a task")

    async def afail(self, task_id: str, error: str, *, retry: bool = True) -> str:
        return await self._bridge.arun(self._fail(task_id, error, retry))

    async def _fail(self, task_id: str, error: str, retry: bool) -> str:
        held = self._held(task_id)
        msg, n = held.message, held.deliveries
        text = f"{self.worker}: {error}"
        if not retry:
            await adead_letter_now(self.client, self.subjects, msg, text, kind="given_up")
            msg.term(text[:200])
            outcome = "dead-lettered now (given_up)"
        else:
            await aremember_failure(self.client, msg, text)
            if n < held.max_deliver:
                delay = retry_delay(n)
                msg.nak(delay=delay)
                outcome = (f"back in the queue: delivery {n + 1} of {held.max_deliver} "
                           f"in {delay:g} s")
            else:
                msg.nak()
                outcome = (f"that was delivery {n} of {held.max_deliver}: the dead-letter "
                           "office makes it a dead letter (max_deliveries)")
        del self.held[task_id]
        return outcome

    def _held(self, task_id: str) -> HeldTask:
        held = self.held.get(task_id)
        if held is None:
            raise NotHeld(task_id, list(self.held))
        return held

    def __repr__(self) -> str:
        return f"<TaskDesk {self.org} worker={self.worker!r} holding {len(self.held)}>"


def _check_hold(hold: float) -> float:
    if not 0 < hold <= MAX_HOLD:
        raise ValueError(f"hold={hold!r}: give 0 < hold <= {MAX_HOLD:g} seconds (how long a "
                         "taken task is kept from being delivered to another worker)")
    return float(hold)
