"""What a task handler gets besides the task: ways to report, extend, delegate, call tools
and audit.

    def cto(task, ctx):
        ctx.progress("reviewing the design")
        ctx.in_progress()                     # long work: keep the task from being redelivered
        with ctx.keep_alive():                # ... or keep it alive through one long call
            answer = call_the_model(task.title)
        found = ctx.call_tool("search", timeout=10, query=task.title)   # an async tool
        return {"decision": "ship it"}
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..core.received import Message
from ..wire.messages import AgentMessage
from .models import AgentAction, Task

if TYPE_CHECKING:
    from .agent import Agent


class TaskContext:
    def __init__(self, agent: Agent, task: Task, message: Message):
        self.agent = agent
        self.task = task
        self.message = message
        self._epoch = agent._epoch

    @property
    def cancelled(self) -> bool:
        """True once the agent was killed: stop working, nothing you do now will count.

        A killed agent's sync handler keeps running in its worker thread (Python cannot stop
        a thread); it should check this between steps. Reports made after the kill are
        dropped, as they would be if the process had really crashed.
        """
        return self.agent._epoch != self._epoch

    @property
    def deliveries(self) -> int:
        """1 on the first attempt, 2 on the first redelivery, ..."""
        return self.message.info.num_delivered

    @property
    def redelivered(self) -> bool:
        return self.deliveries > 1

    def progress(self, text: str, **data: Any) -> None:
        """Tell whoever asked for the task how it is going (to their inbox). Does not wait."""
        if self.cancelled:
            return
        note = AgentMessage(sender=self.agent.role, type="task.progress",
                            payload={"task_id": self.task.id, "text": text, **data},
                            correlation_id=self.task.correlation_id or self.task.id,
                            causation_id=self.task.id)
        self.agent.client.publish(self.agent.subjects.inbox(self.task.requested_by), note)
        self.agent.stats["progress"] += 1

    def in_progress(self) -> None:
        """Still working: restart the ack-wait clock so the task is not handed to another.

        Call it well within ``ack_wait`` (say every third of it) during long work.
        """
        if self.cancelled:
            return  # a crashed agent cannot keep its task: let it be redelivered
        self.message.in_progress()

    @contextlib.contextmanager
    def keep_alive(self, every: float | None = None) -> Iterator[None]:
        """Send ``in_progress()`` every ``every`` seconds (a third of ``ack_wait`` unless
        given) for as long as the block runs: for one long, blocking call, such as an LLM's,
        that cannot call ``in_progress()`` itself. A call that hangs for good still ends in a
        redelivery once the agent is killed or the process dies.
        """
        interval = every if every is not None else self.agent.ack_wait / 3
        if interval <= 0:
            raise ValueError(f"keep_alive(every={every!r}): the interval must be positive "
                             f"(ack_wait is {self.agent.ack_wait} s)")
        finished = threading.Event()

        def beat() -> None:
            while not finished.wait(interval) and not self.cancelled:
                self.in_progress()

        beater = threading.Thread(target=beat, name=f"keep-alive-{self.task.id}",
                                  daemon=True)
        beater.start()
        try:
            yield
        finally:
            finished.set()
            beater.join()

    def audit(self, action: str, **details: Any) -> None:
        """Record an ``agent.action`` event in the AGENT_EVENTS stream. Does not wait."""
        if self.cancelled:
            return
        event = AgentAction(role=self.agent.role, org=self.task.org, action=action,
                            details=details, task_id=self.task.id)
        self.agent.client.publish(self.agent.subjects.org_events(self.task.org), event)

    def delegate(self, role: str, title: str, details: dict[str, Any] | None = None) -> Task:
        """Hand part of this task to another role (from a sync handler)."""
        return self.agent.delegate(role, title, details, caused_by=self.task)

    async def adelegate(self, role: str, title: str,
                        details: dict[str, Any] | None = None) -> Task:
        return await self.agent.adelegate(role, title, details, caused_by=self.task)

    def call_tool(self, tool: str, /, *, timeout: float = 30.0, **arguments: Any) -> Any:
        """Call an async tool (``tools.execute.<tool>``, served by a ToolWorkerPool) and wait:
        its value, ToolError if it failed, ToolTimeout. The task is kept alive meanwhile."""
        return self.agent._bridge.run(self._acall_tool(tool, timeout, arguments),
                                      operation="call_tool")

    async def acall_tool(self, tool: str, /, *, timeout: float = 30.0, **arguments: Any) -> Any:
        return await self.agent._bridge.arun(self._acall_tool(tool, timeout, arguments))

    async def _acall_tool(self, tool: str, timeout: float, arguments: dict[str, Any]) -> Any:
        if self.cancelled:
            raise RuntimeError(f"task {self.task.id}: the agent was killed, so its tools "
                               "are not called any more")

        async def beat(every: float) -> None:
            # A tool may take longer than ack_wait: the task must not go to another agent.
            while True:
                await asyncio.sleep(every)
                try:
                    self.in_progress()
                except Exception:  # a closed connection: the redelivery will say so
                    return

        beater = asyncio.ensure_future(beat(self.agent.ack_wait / 3))
        try:
            return await self.agent.tool_client().acall(tool, timeout=timeout, **arguments)
        finally:
            beater.cancel()
