"""A role whose work a Synadia Agent Protocol agent does: agentlab as the protocol's caller.

    org = Organisation(lab, "acme", roles={**REFERENCE_ROLES,
                                           "analyst": remote_role("echo", owner="bob")})
    Agent(lab.connect("analyst"), "analyst", "acme", remote_role("echo")).start()

``remote_role(...)`` is a task handler: an agentlab Agent runs it for each task of its role,
so the task keeps everything an agent gives it (AGENT_TASKS, retries, the dead-letter
office, the ledger). It finds the remote agent with the client SDK's discovery
(``synadia-ai-agents``), prompts it with the task's title, and returns what it answered as
the task's result: the agent records it in the ledger, which announces it on
``tasks.completed``. The remote agent's status chunks (but its keep-alive acks) become
``ctx.progress`` notes to whoever delegated the task.

The protocol has no delivery guarantee of its own: a task redelivered after a crash
prompts the remote agent again. Each prompt carries ``prompt_id`` = the task id (an
envelope field the protocol lets through, §5.6), so a remote agentlab gateway
(:mod:`agentlab.protocol.synadia`) runs it once however often it is prompted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any, cast

from synadia_ai.agents import (
    Agent,
    Agents,
    AgentSubject,
    DiscoverFilter,
    Envelope,
    ResponseChunk,
    StatusChunk,
    StreamMessage,
)

from ..org.context import TaskContext
from ..org.models import Task
from ..org.roles import TransientFailure

if TYPE_CHECKING:
    from nats.aio.client import Client as NATSClient

__all__ = ["RemoteAgent", "RemoteAgentUnavailable", "remote_role"]

# What a task answers a remote agent's mid-stream question (§7): nobody is there to ask.
NO_ONE_TO_ASK = "No one can answer: this prompt is an agentlab task. Go on without an answer."


class RemoteAgentUnavailable(TransientFailure):
    """No protocol agent matching the role's filter answered discovery (a retry may find one)."""


class RemoteAgent:
    """A task handler that has a protocol agent do each task (see the module docstring).

    ``agent``, ``owner`` and ``session`` select the agent as the protocol's discovery
    filter does (``None`` matches anything). ``inactivity_timeout`` and ``max_wait`` bound
    each prompt's stream (§6.6); ``discover_wait`` bounds discovery. The discovered agent
    is remembered per connection and found again after a failed prompt.
    """

    def __init__(self, agent: str, owner: str | None = None, session: str | None = None, *,
                 inactivity_timeout: float = 60.0, max_wait: float = 600.0,
                 discover_wait: float = 2.0):
        # Hosts register their tokens through the SDK's escaping; compare like with like.
        tokens = AgentSubject.new(agent, owner or "any", session or "any")
        self.filter = DiscoverFilter(agent=tokens.agent,
                                     owner=tokens.owner if owner else None,
                                     session_name=tokens.session_name if session else None)
        self.inactivity_timeout, self.max_wait = inactivity_timeout, max_wait
        self.discover_wait = discover_wait
        # By connection; an entry lives as long as that connection's agent (closed with it).
        self._found: dict[NATSClient, tuple[Agents, Agent]] = {}
        self._discovering = asyncio.Lock()

    async def __call__(self, task: Task, ctx: TaskContext) -> dict[str, Any]:
        nc = ctx.agent.client.nc
        remote = await self._find(nc)
        envelope = Envelope.model_validate({"prompt": task.title, "prompt_id": task.id,
                                            "details": task.details})
        texts: list[str] = []
        # A long answer must not outlast the task's ack wait and be handed to another. (On
        # the loop, not ctx.keep_alive()'s thread: its join would block the loop.)
        beat = asyncio.ensure_future(_keep_alive(ctx))
        try:
            # An async generator (typed as an iterator): closed here, not by the GC.
            stream = cast("AsyncGenerator[StreamMessage, None]", remote.prompt(
                envelope, timeout=self.inactivity_timeout, max_wait_s=self.max_wait))
            async with contextlib.aclosing(stream):
                async for item in stream:
                    if isinstance(item, ResponseChunk):
                        texts.append(item.text)
                    elif isinstance(item, StatusChunk):
                        if item.status != "ack":
                            ctx.progress(item.status, remote=remote.prompt_subject)
                    else:
                        await item.reply(NO_ONE_TO_ASK)
        except Exception:
            await self._forget(nc)  # it may have gone: discover again next time
            raise
        finally:
            beat.cancel()
        return _result("".join(texts), remote)

    async def _find(self, nc: NATSClient) -> Agent:
        async with self._discovering:  # one discovery at a time, so none is overwritten
            for gone in [c for c in self._found if c.is_closed]:  # agents scaled away
                del self._found[gone]
            found = self._found.get(nc)
            if found is not None:
                return found[1]
            agents = Agents(nc=nc, stream_inactivity_timeout=self.inactivity_timeout,
                            prompt_max_wait_s=self.max_wait)
            matches = await agents.discover(filter=self.filter, max_wait=self.discover_wait)
            if not matches:
                await agents.close()
                raise RemoteAgentUnavailable(f"no protocol agent matches {self.filter}")
            self._found[nc] = (agents, matches[0])
            return matches[0]

    async def _forget(self, nc: NATSClient) -> None:
        """Drop what was found on ``nc``, closing the SDK client (its heartbeat tracker)."""
        found = self._found.pop(nc, None)
        if found is not None:
            with contextlib.suppress(Exception):
                await found[0].close()

    def __repr__(self) -> str:
        f = self.filter
        return f"<RemoteAgent {f.agent}/{f.owner or '*'}/{f.session_name or '*'}>"


async def _keep_alive(ctx: TaskContext) -> None:
    while not ctx.cancelled:
        await asyncio.sleep(ctx.agent.ack_wait / 3)
        ctx.in_progress()


def _result(text: str, remote: Agent) -> dict[str, Any]:
    """The task's result: the answer's text, its JSON object if it is one, and who gave it."""
    result: dict[str, Any] = {"text": text, "agent": remote.agent, "owner": remote.owner,
                              "session": remote.session_name,
                              "prompt_subject": remote.prompt_subject}
    with contextlib.suppress(ValueError):
        answer = json.loads(text)
        if isinstance(answer, dict):
            result["answer"] = answer
    return result


def remote_role(agent: str, owner: str | None = None, session: str | None = None,
                **options: Any) -> RemoteAgent:
    """A handler for a role whose tasks the protocol agent ``agent`` does (RemoteAgent)."""
    return RemoteAgent(agent, owner, session, **options)
